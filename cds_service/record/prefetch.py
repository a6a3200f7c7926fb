"""The prefetch templates we advertise, and how we read what a CDS client sent for them.

CDS Hooks 2.0 lets a client satisfy zero, some or all templates.  Per key it may send the data
(a resource or a searchset Bundle, possibly only its first page), ``null`` (there is no data),
an OperationOutcome (it tried and failed) or nothing at all (it will not, or could not, fetch
it).  :func:`normalise_prefetch` turns each of those into one :class:`Prefetched` value so the
gatherer needs no special cases, and junk never crashes a hook call.

Tokens are the 2.0 root-level primitive ones only (``{{context.patientId}}``); the FHIRPath
tokens of the 3.0 ballot are silently skipped by the CDS Hooks sandbox.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

_PATIENT = "{{context.patientId}}"

PREFETCH: dict[str, str] = {
    "patient": f"Patient/{_PATIENT}",
    "coverage": f"Coverage?patient={_PATIENT}&status=active&_include=Coverage:payor",
    "conditions": f"Condition?patient={_PATIENT}",
    "observations": f"Observation?patient={_PATIENT}&_sort=-date",
    "procedures": f"Procedure?patient={_PATIENT}",
    "imagingStudies": f"ImagingStudy?patient={_PATIENT}",
    "medicationRequests": f"MedicationRequest?patient={_PATIENT}",
    "medicationStatements": f"MedicationStatement?patient={_PATIENT}",
    "devices": f"Device?patient={_PATIENT}",
    "diagnosticReports": f"DiagnosticReport?patient={_PATIENT}",
    "serviceRequests": f"ServiceRequest?patient={_PATIENT}&_sort=-authored&_count=50",
    "questionnaireResponses": f"QuestionnaireResponse?patient={_PATIENT}&status=completed,amended",
    "documentReferences": f"DocumentReference?patient={_PATIENT}&status=current&_sort=-date&_count=100",
    "userRole": "PractitionerRole/{{userPractitionerRoleId}}",
}
"""Prefetch key -> FHIR query template, exactly as sent in discovery."""

REQUIRED_KEYS: frozenset[str] = frozenset(
    {"patient", "conditions", "procedures", "medicationRequests", "observations", "imagingStudies"}
)
"""Keys without which no decision can be made: 412 when neither prefetched nor fetchable."""

KEY_TYPES: dict[str, tuple[str, ...]] = {
    "patient": ("Patient",),
    "coverage": ("Coverage", "Organization"),
    "conditions": ("Condition",),
    "observations": ("Observation",),
    "procedures": ("Procedure",),
    "imagingStudies": ("ImagingStudy",),
    "medicationRequests": ("MedicationRequest",),
    "medicationStatements": ("MedicationStatement",),   # medications the patient reports taking
    "devices": ("Device",),                             # implanted devices: MRI safety
    "diagnosticReports": ("DiagnosticReport",),
    "serviceRequests": ("ServiceRequest",),
    "questionnaireResponses": ("QuestionnaireResponse",),  # attestations (questionnaires.py); optional
    "documentReferences": ("DocumentReference",),          # clinical notes (engine/narrative); optional
    "userRole": ("PractitionerRole",),                     # who orders: a surgeon's planning exception
}
"""The resource types each key yields, so a failed key's facts can be marked unknown."""

NOT_A_DATA_GAP: frozenset[str] = frozenset({"questionnaireResponses", "medicationStatements", "devices", "userRole",
                                            "documentReferences"})
"""Optional keys whose failure a card need not mention: without attestations, ``documented``
criteria are unknown, which the documentation checklist already says (most EHRs will not send
this key at first; a gap line on every card would be noise).  Medication statements and devices
are read when an EHR has them; many FHIR servers do not offer these searches, and the same facts
usually also sit on the problem list (Z95.0 pacemaker) and in prescriptions.  Notes only ever add
evidence (text makes a criterion met, never not-met): without them the card lists
"clinical notes" as not read instead."""

PREFETCH_ONLY: frozenset[str] = frozenset({"userRole"})
"""Keys read only when the EHR sends them, never searched for on the FHIR server: the EHR knows
its user's role (``{{userPractitionerRoleId}}`` has no value when the user is a Practitioner)."""

FETCHED_KEYS: tuple[str, ...] = tuple(k for k in PREFETCH if k not in PREFETCH_ONLY)
"""The keys the service searches for itself when they are not prefetched."""

FIRST_PAGE_ONLY: frozenset[str] = frozenset({"serviceRequests", "documentReferences"})
"""Keys that ask for the newest N on purpose: a ``next`` link there does not mean partial."""

_TOKEN = re.compile(r"\{\{\s*([A-Za-z][\w.]*)\s*\}\}")
_USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}


@dataclass(frozen=True)
class Prefetched:
    """What one prefetch value amounts to.

    ``state`` is ``ok`` (complete data), ``null`` (the client says there is none), ``partial``
    (the first page(s) of a paged Bundle; ``next_url`` says where the rest is) or ``failed``
    (an OperationOutcome or junk: fetch it ourselves or treat its facts as unknown).
    """

    state: Literal["ok", "null", "partial", "failed"]
    resources: tuple[dict, ...] = ()
    next_url: str | None = None


def normalise_prefetch(value: Any) -> Prefetched:
    """Read one prefetch value (resource, Bundle, null, OperationOutcome or junk)."""
    if value is None:
        return Prefetched("null")
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        return Prefetched("failed")
    rtype = value["resourceType"]
    if rtype == "OperationOutcome":
        return Prefetched("failed")
    if rtype != "Bundle":
        return Prefetched("ok", (value,))
    entries = value.get("entry", [])
    if not isinstance(entries, list):
        return Prefetched("failed")
    resources = tuple(bundle_resources(entries))
    next_url = next_link(value)
    return Prefetched("partial" if next_url else "ok", resources, next_url)


def bundle_resources(entries: list) -> list[dict]:
    """The resources of Bundle entries, minus search outcomes and OperationOutcomes.

    Entries normally wrap the resource in ``resource``; some clients put the resource itself in
    the entry (CDS Hooks sandbox issue #45), so both shapes are accepted.
    """
    resources = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        search = entry.get("search")
        if isinstance(search, dict) and search.get("mode") == "outcome":
            continue
        resource = entry.get("resource", entry)
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            continue
        if resource["resourceType"] != "OperationOutcome":
            resources.append(resource)
    return resources


def next_link(bundle: dict) -> str | None:
    """The Bundle's ``next`` page URL, if it has one."""
    links = bundle.get("link")
    if not isinstance(links, list):
        return None
    for link in links:
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            return url if isinstance(url, str) and url else None
    return None


def fill_template(template: str, context: dict[str, Any]) -> str | None:
    """Replace ``{{context.x}}`` and ``{{userXxxId}}`` tokens; ``None`` if one has no value.

    Values are URL-quoted so an id can never add query parameters of its own.
    """
    missing = False

    def value_of(match: re.Match) -> str:
        nonlocal missing
        value = _token_value(match.group(1), context)
        if value is None:
            missing = True
            return ""
        return quote(value, safe="")

    filled = _TOKEN.sub(value_of, template)
    return None if missing else filled


def _token_value(token: str, context: dict[str, Any]) -> str | None:
    """The value of one token: a root-level primitive context field or a user id."""
    if token.startswith("context."):
        value = context.get(token.removeprefix("context."))
        if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
            return None
        return str(value)
    if token in _USER_TOKENS:
        rtype, _, rid = str(context.get("userId") or "").partition("/")
        return rid if rtype == _USER_TOKENS[token] and rid else None
    return None
