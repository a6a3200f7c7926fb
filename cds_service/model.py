"""Plain, frozen data types passed between the edges and the pure core.

The core (facts → evaluation → decision → cards) sees only these types and raw FHIR JSON
dicts, never Flask, ``requests`` or the clock, so it can be tested from JSON case tables.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from typing import Any, NamedTuple

CPT = "http://www.ama-assn.org/go/cpt"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
NUCC = "http://nucc.org/provider-taxonomy"   # clinician specialties (PractitionerRole.specialty)
NARRATIVE = "Narrative"   # ClinicalItem.resource_type of a mention read in text (engine/narrative)
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")   # the FHIR R4 id datatype


class Caller(NamedTuple):
    """Who made a call: the verified JWT issuer ("" when SPINE_CDS_AUTH=off) and the user the
    token names (its ``fhirUser`` claim), if any.  Records that act on later calls — "already
    shown" fingerprints, the cards feedback may refer to — are bound to it, so one client (or
    user) never changes what another sees or reports."""

    issuer: str
    user: str | None = None


@dataclass(frozen=True)
class HookRequest:
    """A validated CDS Hooks call (order-select or order-sign)."""

    hook: str
    hook_instance: str
    context: dict[str, Any]
    patient_id: str
    user_id: str | None
    draft_orders: tuple[dict, ...]          # every resource of context.draftOrders
    selections: tuple[str, ...]             # "Type/id" of the orders in scope
    fhir_server: str | None = None
    access_token: str | None = None
    prefetch: dict[str, Any] = field(default_factory=dict)
    extension: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PatientRecord:
    """The patient's FHIR data for one call, as raw JSON resources grouped by type.

    ``sources`` says, per prefetch key, where the data came from: ``prefetch``, ``fhir``,
    ``cache``, ``null`` (the client said there is none) or ``failed`` (could not be read; the
    facts from it are unknown, never assumed absent).
    """

    patient: dict | None
    resources: dict[str, tuple[dict, ...]]  # resourceType -> resources
    sources: dict[str, str] = field(default_factory=dict)

    def of_type(self, resource_type: str) -> tuple[dict, ...]:
        return self.resources.get(resource_type, ())

    def resolve(self, reference: str) -> dict | None:
        """Find a contained-in-record resource by ``Type/id``."""
        rtype, _, rid = reference.partition("/")
        for resource in self.of_type(rtype):
            if resource.get("id") == rid:
                return resource
        return None


@dataclass(frozen=True)
class Study:
    """One imaging study we know by CPT code (mappings/studies.json)."""

    cpt: str
    display: str
    modality: str        # CT, MR, XR, US, NM
    region: str          # cervical, thoracic, lumbar, spine, ...
    contrast: str        # without, with, without-and-with, none


@dataclass(frozen=True)
class SpineOrder:
    """A draft spine CT/MRI ServiceRequest recognised by its CPT code."""

    reference: str       # "ServiceRequest/<id>"
    resource: dict
    study: Study


class ClinicalItem(NamedTuple):
    """One coded statement from the record, normalised for evaluation.

    ``valuesets`` holds the ids of every value set any of its codes belongs to, so criteria
    test membership with a set lookup.  ``when`` is the clinically relevant date (onset,
    performed, effective, authored); ``None`` means the record gave none.  A named tuple, not a
    dataclass: a long chart makes hundreds per call, and a tuple is the cheapest immutable record.
    """

    ref: str
    resource_type: str
    valuesets: frozenset[str]
    display: str
    when: date | None = None
    end: date | None = None
    status: str = "unknown"             # active | inactive | completed | unknown
    value: float | None = None
    unit: str | None = None
    abnormal: bool | None = None        # interpretation or reference range says so
    study: Study | None = None          # for imaging items: what was imaged
    regions: frozenset[str] = frozenset()   # spine regions its codes (or its reason) name; empty = any
    suspected: bool = False             # a provisional or differential diagnosis, not a confirmed one
    dated_by: str | None = None         # where ``when`` came from when that matters: "recorded" (no onset
                                        # on record), "note", or the Condition that dates an order's reason
    quote: str | None = None            # read in text: the sentence quoted (``ref`` has a #char= range)


@dataclass(frozen=True)
class Facts:
    """Everything the criteria may look at, for one patient and one order."""

    today: date
    birth_date: date | None
    items: tuple[ClinicalItem, ...]
    order: SpineOrder
    other_orders: tuple[SpineOrder, ...] = ()
    by_valueset: dict[str, tuple[ClinicalItem, ...]] = field(init=False, compare=False, repr=False)
    present: frozenset[str] = field(init=False, compare=False, repr=False)
    """The value-set tags that have items: a compiled criterion whose tags are all absent has the
    same result on every record (evaluation.py), so it is computed once."""
    memo: dict = field(init=False, compare=False, repr=False)
    """Criterion results already computed on these facts, keyed by the compiled node.

    A result depends only on the node and the facts, and the same definitions are referenced by
    many indications (and the same facts are evaluated against every program when comparing),
    so evaluating each node once per Facts is the cheapest correct evaluation."""

    def __post_init__(self):
        """Index the items by value set once, so each criterion looks up instead of scanning."""
        index: dict[str, list[ClinicalItem]] = {}
        for item in self.items:
            for valueset in item.valuesets:
                index.setdefault(valueset, []).append(item)
        object.__setattr__(self, "by_valueset", {k: tuple(v) for k, v in index.items()})
        object.__setattr__(self, "present", frozenset(index))
        object.__setattr__(self, "memo", {})

    def with_valuesets(self, valuesets) -> list[ClinicalItem]:
        """Items in any of ``valuesets``, once each, in record order."""
        lists = [found for vs in valuesets if (found := self.by_valueset.get(vs))]
        if len(lists) <= 1:
            return list(lists[0]) if lists else []
        position = self.position
        return sorted({id(i): i for items in lists for i in items}.values(), key=lambda i: position[id(i)])

    @cached_property
    def position(self) -> dict[int, int]:
        """Index of each item in ``items`` by its id (built on first use)."""
        return {id(item): n for n, item in enumerate(self.items)}


class Status(str, enum.Enum):
    MET = "met"
    NOT_MET = "not-met"
    UNKNOWN = "unknown"


class Result(NamedTuple):
    """The outcome of one criterion node, with its evidence and what is missing.  A named tuple:
    a decision builds hundreds of them, and a tuple is the cheapest immutable record."""

    status: Status
    label: str
    evidence: tuple[str, ...] = ()
    met_on: date | None = None          # unknown only because time has not passed yet
    detail: str | None = None           # one line of clinician-facing explanation
    children: tuple["Result", ...] = ()
    combinator: str | None = None       # all | any | not (for composite nodes)
