"""Turn a patient's raw FHIR JSON into the normalised facts the criteria evaluate.

Pure: the record and ``today`` come in, :class:`Facts` go out.  Raw dicts are read directly —
validating thousands of prefetched resources with pydantic would cost far more than the whole
decision — and every field is treated as optional: what is absent is unknown.  Statuses are
filtered here (refuted, entered-in-error, not-done, cancelled resources say nothing about the
patient), dates are normalised (record_dates.py: onset, abatement, prescription ends), and each
item is tagged with the value sets its codes belong to and the spine regions they name.

Where a chart keeps a fact: a problem list entry (Condition), an exam finding or a coded answer
(Observation code, value or component), a report's coded conclusion
(DiagnosticReport.conclusionCode), an implanted device (Device.type), the order's own reason
(dated by the matching Condition's onset, never by the order), procedures, prescriptions and
prior imaging (by CPT, or by DICOM modality and the words of its description).
"""
from __future__ import annotations

from collections.abc import Iterator
from datetime import date

from cds_service.engine.attestation import attestation_items
from cds_service.engine.fhir_dates import first_date, parse_date, period_end
from cds_service.engine.record_dates import condition_abated, condition_onset, is_history, medication_end
from cds_service.engine.tagging import EMPTY, Tagger, codings_of
from cds_service.model import ClinicalItem, Facts, PatientRecord, SpineOrder, Study

IGNORED_STATUSES = frozenset({"entered-in-error", "refuted", "not-done", "cancelled", "revoked", "draft"})
SUSPECTED = frozenset({"provisional", "differential"})
ABNORMAL_FLAGS = frozenset({"H", "HH", "L", "LL", "A", "AA", "HU", "LU", "POS", "DET", "W"})
NORMAL_FLAGS = frozenset({"N", "NEG", "ND"})
DEVICE_GONE = frozenset({"inactive", "entered-in-error"})


def extract_facts(record: PatientRecord, order: SpineOrder, other_orders: tuple[SpineOrder, ...],
                  tagger: Tagger, today: date, notes: tuple[ClinicalItem, ...] = ()) -> Facts:
    """Build :class:`Facts` for deciding ``order`` as of ``today``; ``notes`` are the items read
    in the record's narrative (engine/narrative), the same for every order of the call."""
    birth = parse_date(record.patient.get("birthDate")) if isinstance(record.patient, dict) else None
    reader = _Reader(record, tagger, birth, today)
    draft_refs = {order.reference, *(o.reference for o in other_orders)}
    items = []
    for extractor in reader.extractors():
        items.extend(i for i in extractor() if i.ref not in draft_refs)
    reasons = reader.order_reasons(order, [i for i in items if i.resource_type == "Condition"])
    return Facts(today=today, birth_date=birth, items=(*reasons, *items, *notes), order=order,
                 other_orders=tuple(other_orders))


def _text_of(concept: object, fallback: str) -> str:
    if isinstance(concept, dict):
        if isinstance(concept.get("text"), str) and concept["text"]:
            return concept["text"]
        for coding in codings_of(concept):
            if isinstance(coding.get("display"), str) and coding["display"]:
                return coding["display"]
    return fallback


def _text_value(value: object) -> str | None:
    """``value`` if it is a string; anything else (lists, numbers, null) is unknown."""
    return value if isinstance(value, str) else None


def _status_code(value: object) -> str | None:
    """A status that is either a code or a CodeableConcept, as its code."""
    if isinstance(value, str):
        return value
    codings = codings_of(value)
    return _text_value(codings[0].get("code")) if codings else None


def _usable(resource: dict) -> bool:
    """A resource with an id whose status does not void it."""
    return isinstance(resource.get("id"), str) and _text_value(resource.get("status")) not in IGNORED_STATUSES


def as_list(value: object) -> list:
    """A FHIR array as sent, or nothing: a hostile or sloppy client sends objects, numbers, null."""
    return value if isinstance(value, list) else []


class _Reader:
    """Per-resource-type extraction; each method yields ClinicalItems.

    Every method asks the tagger first: on a long chart most resources name nothing a criterion
    reads, and for those one memoised lookup is all the work done."""

    def __init__(self, record: PatientRecord, tagger: Tagger, birth: date | None, today: date):
        self.record, self.tags, self.birth, self.today = record, tagger.tags, birth, today
        self.catalog = tagger.catalog
        self._index: dict[str, dict] | None = None

    def extractors(self):
        return (self.conditions, self.observations, self.procedures, self.medications, self.devices,
                self.imaging_studies, self.reports, self.service_requests, self.attestations, self.roles)

    def _tagged(self, rtype: str, field: str, other: str | None = None) -> Iterator[tuple[dict, tuple]]:
        """(resource, tags) of the usable resources of ``rtype`` whose ``field`` (or ``other``)
        names something."""
        tags = self.tags
        for resource in self.record.of_type(rtype):
            if isinstance(resource, dict):
                found = tags(resource.get(field), resource.get(other)) if other else tags(resource.get(field))
                if found is not None and (found[0] or found[1]) and _usable(resource):
                    yield resource, found   # a code that only names a region is no fact of its own

    @staticmethod
    def _make(resource: dict, tags: tuple, concept: object, **fields) -> ClinicalItem:
        ref = f"{resource['resourceType']}/{resource['id']}"
        fields.setdefault("regions", tags[2])
        fields.setdefault("study", tags[1])
        return ClinicalItem(ref=ref, resource_type=resource["resourceType"], valuesets=tags[0],
                            display=_text_of(concept, ref), **fields)

    def _reason_regions(self, resource: dict) -> frozenset[str]:
        """Regions named by what a procedure or prescription was for (reasonCode/reasonReference)."""
        if "reasonCode" not in resource and "reasonReference" not in resource:
            return EMPTY
        found = self.tags(resource.get("reasonCode"))
        regions = found[2] if found else EMPTY
        for reference in as_list(resource.get("reasonReference")):
            target = self._resolve(reference.get("reference")) if isinstance(reference, dict) else None
            if isinstance(target, dict) and (tags := self.tags(target.get("code"))):
                regions = regions | tags[2]
        return regions

    def _resolve(self, reference: object) -> dict | None:
        """``Condition/123`` → the resource, through an index built on first use (a reason
        reference per therapy visit would otherwise scan the record each time)."""
        if not isinstance(reference, str):
            return None
        if self._index is None:
            self._index = {f"{r.get('resourceType')}/{r.get('id')}": r for rtype in ("Condition", "Observation")
                           for r in self.record.of_type(rtype) if isinstance(r, dict)}
        return self._index.get(reference)

    def order_reasons(self, order: SpineOrder, conditions: list[ClinicalItem]) -> Iterator[ClinicalItem]:
        """The order's reasonCode as a finding.  An order reason has no date of its own: it takes
        the onset of the matching problem on the list (the most recent current one); without
        one its date is unknown, so "new" and duration criteria stay unknown, never met."""
        reasons = order.resource.get("reasonCode")
        tags = self.tags(reasons)
        if not tags or not isinstance(order.resource.get("id"), str):
            return
        item = self._make(order.resource, tags, reasons[0] if isinstance(reasons, list) else reasons,
                          when=None, status="active")
        text = f"reason for this order ({item.display})" if item.display != item.ref else "reason for this order"
        matches = [c for c in conditions if c.valuesets & item.valuesets and c.when is not None and not c.suspected]
        current = [c for c in matches if c.status == "active"] or matches
        dated = max(current, key=lambda c: c.when, default=None)
        yield item._replace(study=None, display=text, when=dated.when if dated else None,
                            dated_by=dated.ref if dated else None)

    def conditions(self) -> Iterator[ClinicalItem]:
        for res, tags in self._tagged("Condition", "code"):
            verification = _status_code(res.get("verificationStatus"))
            if verification in IGNORED_STATUSES or not tags[0]:
                continue
            onset, dated_by = condition_onset(res, self.birth)
            abated = condition_abated(res, self.birth, self.today)
            history = is_history(_status_code(res.get("clinicalStatus")), abated)
            yield self._make(res, tags, res.get("code"), when=onset, end=abated, dated_by=dated_by,
                             status="inactive" if history else "active", suspected=verification in SUSPECTED)

    def observations(self) -> Iterator[ClinicalItem]:
        for res in self.record.of_type("Observation"):
            if not isinstance(res, dict):
                continue
            components = res.get("component")
            parts = [c.get(k) for c in components if isinstance(c, dict) for k in ("code", "valueCodeableConcept")] \
                if isinstance(components, list) else ()
            tags = self.tags(res.get("code"), res.get("valueCodeableConcept"), *parts)
            if tags is None or not tags[0] or not _usable(res) or res.get("valueBoolean") is False:
                continue  # False: the finding was looked for and is absent
            quantity = res.get("valueQuantity") if isinstance(res.get("valueQuantity"), dict) else {}
            value = quantity.get("value") if isinstance(quantity.get("value"), (int, float)) else None
            yield self._make(res, tags, res.get("code"),
                             when=first_date(res, "effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued"),
                             status="completed", value=value,
                             unit=_text_value(quantity.get("code")) or _text_value(quantity.get("unit")),
                             abnormal=_abnormal(res, value))

    def procedures(self) -> Iterator[ClinicalItem]:
        for res, tags in self._tagged("Procedure", "code"):
            if _text_value(res.get("status")) in (None, "completed", "in-progress", "stopped", "unknown"):
                yield self._make(res, tags, res.get("code"), when=first_date(res, "performedDateTime", "performedPeriod"),
                                 end=period_end(res, "performedPeriod"), status="completed",
                                 regions=tags[2] | self._reason_regions(res))

    def medications(self) -> Iterator[ClinicalItem]:
        for rtype in ("MedicationRequest", "MedicationStatement"):
            for res in self.record.of_type(rtype):
                if not isinstance(res, dict):
                    continue
                concept = res.get("medicationCodeableConcept")
                if not isinstance(concept, dict) and isinstance(res.get("medicationReference"), dict):
                    medication = self.record.resolve(str(res["medicationReference"].get("reference", "")))
                    concept = medication.get("code") if isinstance(medication, dict) else None
                tags = self.tags(concept)
                if tags is None or not _usable(res):
                    continue
                start = first_date(res, "authoredOn", "effectiveDateTime", "effectivePeriod", "dateAsserted")
                yield self._make(res, tags, concept, when=start, end=medication_end(res, start),
                                 status="active" if _text_value(res.get("status")) in (None, "active") else "completed",
                                 regions=tags[2] | self._reason_regions(res))

    def devices(self) -> Iterator[ClinicalItem]:
        """Implanted devices (Device.type): an MRI contraindication is often only here."""
        for res, tags in self._tagged("Device", "type"):
            if _status_code(res.get("status")) not in DEVICE_GONE:
                yield self._make(res, tags, res.get("type"), status="active")

    def roles(self) -> Iterator[ClinicalItem]:
        """The ordering clinician's PractitionerRole (prefetch ``userRole``): their specialty."""
        for res, tags in self._tagged("PractitionerRole", "specialty", "code"):
            if res.get("active") is not False:
                yield self._make(res, tags, as_list(res.get("specialty"))[0] if as_list(res.get("specialty")) else None,
                                 status="active")

    def imaging_studies(self) -> Iterator[ClinicalItem]:
        for res in self.record.of_type("ImagingStudy"):
            if not isinstance(res, dict) or not _usable(res):
                continue
            codes = res.get("procedureCode")
            tags = self.tags(codes, res.get("reasonCode"))
            study = tags[1] if tags else None
            if study is None:
                study = self._study_without_cpt(res, codes)
            if tags or study:
                tags = tags or (EMPTY, None, EMPTY)
                yield self._make(res, tags, codes[0] if isinstance(codes, list) and codes else None,
                                 when=first_date(res, "started"), status="completed", study=study)

    def _study_without_cpt(self, res: dict, codes: object) -> Study | None:
        series = [s for s in as_list(res.get("series")) if isinstance(s, dict)]
        modalities = [c.get("code") for c in as_list(res.get("modality")) + [s.get("modality") for s in series]
                      if isinstance(c, dict) and isinstance(c.get("code"), str)]
        texts = [res.get("description"), *(s.get("description") for s in series),
                 *(c.get("display") for s in series for c in [s.get("bodySite")] if isinstance(c, dict)),
                 *(_text_of(c, "") for c in as_list(codes))]
        return self.catalog.study_from_words(modalities, texts)

    def reports(self) -> Iterator[ClinicalItem]:
        """A report is two facts: the study it reports (its code) and what it found
        (conclusionCode: instability on a flexion/extension film is a finding like any other)."""
        for res in self.record.of_type("DiagnosticReport"):
            if not isinstance(res, dict) or not _usable(res):
                continue
            when = first_date(res, "effectiveDateTime", "effectivePeriod", "issued")
            code = res.get("code")
            tags = self.tags(code)
            study = tags[1] if tags else None
            if study is None and isinstance(code, dict):
                study = self.catalog.study_from_words((), [_text_of(code, "")])
            if tags or study:
                yield self._make(res, tags or (EMPTY, None, EMPTY), code, when=when, status="completed", study=study)
            if found := self.tags(res.get("conclusionCode")):
                conclusion = as_list(res.get("conclusionCode"))
                yield self._make(res, found, conclusion[0] if conclusion else None, when=when,
                                 status="completed", study=None)

    def service_requests(self) -> Iterator[ClinicalItem]:
        """Earlier orders: completed ones count as done, active ones as requested (NIA's
        "requested at the same time or sequentially")."""
        for res, tags in self._tagged("ServiceRequest", "code"):
            if res.get("status") in ("active", "completed", "on-hold"):
                yield self._make(res, tags, res.get("code"),
                                 when=first_date(res, "occurrenceDateTime", "occurrencePeriod", "authoredOn"),
                                 status="completed" if res["status"] == "completed" else "active")

    def attestations(self) -> Iterator[ClinicalItem]:
        """The clinician's yes/no answers to our Questionnaires (attestation.py reads them)."""
        for res in self.record.of_type("QuestionnaireResponse"):
            if isinstance(res, dict) and _usable(res):
                yield from attestation_items(res)


def _abnormal(resource: dict, value: float | None) -> bool | None:
    flags = {c.get("code") for c in codings_of(resource.get("interpretation")) if isinstance(c.get("code"), str)}
    if flags & ABNORMAL_FLAGS:
        return True
    if flags & NORMAL_FLAGS:
        return False
    if value is None:
        return None
    ranges = resource.get("referenceRange")
    for ref_range in ranges if isinstance(ranges, list) else []:
        if not isinstance(ref_range, dict):
            continue
        low = (ref_range.get("low") or {}).get("value") if isinstance(ref_range.get("low"), dict) else None
        high = (ref_range.get("high") or {}).get("value") if isinstance(ref_range.get("high"), dict) else None
        if isinstance(low, (int, float)) and value < low or isinstance(high, (int, float)) and value > high:
            return True
        if isinstance(low, (int, float)) or isinstance(high, (int, float)):
            return False
    return None
