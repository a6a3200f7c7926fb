"""Turn a patient's raw FHIR JSON into the normalised facts the criteria evaluate.

Pure: the record and ``today`` come in, :class:`Facts` go out.  Raw dicts are read directly —
validating thousands of prefetched resources with pydantic would cost far more than the whole
decision — and every field is treated as optional: what is absent is unknown.  Statuses are
filtered here (refuted, entered-in-error, not-done, cancelled resources say nothing about the
patient), dates are normalised, and each item is tagged with the value sets its codes belong to.
"""
from __future__ import annotations

from collections.abc import Iterator
from datetime import date

from cds_service.engine.fhir_dates import first_date, parse_date, period_end
from cds_service.model import ClinicalItem, Facts, PatientRecord, SpineOrder, Study
from cds_service.engine.attestation import ATTESTED, CANONICAL_BASE, DENIED
from cds_service.engine.tagging import Tagger, codings_of

IGNORED_STATUSES = frozenset({"entered-in-error", "refuted", "not-done", "cancelled", "revoked", "draft"})
INACTIVE_CLINICAL = frozenset({"inactive", "remission", "resolved"})
ABNORMAL_FLAGS = frozenset({"H", "HH", "L", "LL", "A", "AA", "HU", "LU", "POS", "DET", "W"})
NORMAL_FLAGS = frozenset({"N", "NEG", "ND"})


def extract_facts(record: PatientRecord, order: SpineOrder, other_orders: tuple[SpineOrder, ...],
                  tagger: Tagger, today: date) -> Facts:
    """Build :class:`Facts` for deciding ``order`` as of ``today``."""
    reader = _Reader(record, tagger)
    draft_refs = {order.reference, *(o.reference for o in other_orders)}
    items = [*reader.order_reasons(order, today)]
    for extractor in reader.extractors():
        items.extend(i for i in extractor() if i.ref not in draft_refs)
    birth = parse_date(record.patient.get("birthDate")) if isinstance(record.patient, dict) else None
    return Facts(today=today, birth_date=birth, items=tuple(items), order=order,
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


class _Reader:
    """Per-resource-type extraction; each method yields ClinicalItems.

    Every method asks the tagger first: on a long chart most resources name nothing a criterion
    reads, and for those one memoised lookup is all the work done."""

    def __init__(self, record: PatientRecord, tagger: Tagger):
        self.record, self.tags = record, tagger.tags

    def extractors(self):
        return (self.conditions, self.observations, self.procedures, self.medications,
                self.imaging_studies, self.reports, self.service_requests, self.attestations)

    def _tagged(self, rtype: str, field: str, other: str | None = None) -> Iterator[tuple[dict, tuple[frozenset[str], Study | None]]]:
        """(resource, tags) of the usable resources of ``rtype`` whose ``field`` (or ``other``)
        names something."""
        tags = self.tags
        for resource in self.record.of_type(rtype):
            if isinstance(resource, dict):
                found = tags(resource.get(field), resource.get(other)) if other else tags(resource.get(field))
                if found is not None and _usable(resource):
                    yield resource, found

    @staticmethod
    def _make(resource: dict, tags: tuple[frozenset[str], Study | None], concept: object, **fields) -> ClinicalItem:
        ref = f"{resource['resourceType']}/{resource['id']}"
        return ClinicalItem(ref=ref, resource_type=resource["resourceType"], valuesets=tags[0],
                            display=_text_of(concept, ref), study=tags[1], **fields)

    def order_reasons(self, order: SpineOrder, today: date) -> Iterator[ClinicalItem]:
        reasons = order.resource.get("reasonCode")
        tags = self.tags(reasons)
        if tags and isinstance(order.resource.get("id"), str):
            item = self._make(order.resource, tags, reasons[0] if isinstance(reasons, list) else reasons,
                              when=today, status="active")
            yield item._replace(study=None, display=f"reason for this order ({item.display})" if item.display != item.ref else "reason for this order")

    def conditions(self) -> Iterator[ClinicalItem]:
        for res, tags in self._tagged("Condition", "code"):
            if _status_code(res.get("verificationStatus")) in IGNORED_STATUSES:
                continue
            clinical = _status_code(res.get("clinicalStatus"))
            yield self._make(res, tags, res.get("code"),
                             when=first_date(res, "onsetDateTime", "onsetPeriod", "recordedDate"),
                             end=parse_date(res.get("abatementDateTime")),
                             status="inactive" if clinical in INACTIVE_CLINICAL else "active")

    def observations(self) -> Iterator[ClinicalItem]:
        for res, tags in self._tagged("Observation", "code", "valueCodeableConcept"):
            if res.get("valueBoolean") is False:
                continue  # the finding was looked for and is absent
            quantity = res.get("valueQuantity") if isinstance(res.get("valueQuantity"), dict) else {}
            value = quantity.get("value") if isinstance(quantity.get("value"), (int, float)) else None
            yield self._make(res, tags, res.get("code"),
                             when=first_date(res, "effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued"),
                             status="completed", value=value,
                             unit=_text_value(quantity.get("unit")) or _text_value(quantity.get("code")),
                             abnormal=_abnormal(res, value))

    def procedures(self) -> Iterator[ClinicalItem]:
        for res, tags in self._tagged("Procedure", "code"):
            if _text_value(res.get("status")) in (None, "completed", "in-progress", "stopped", "unknown"):
                yield self._make(res, tags, res.get("code"), when=first_date(res, "performedDateTime", "performedPeriod"),
                                 end=period_end(res, "performedPeriod"), status="completed")

    def medications(self) -> Iterator[ClinicalItem]:
        for rtype in ("MedicationRequest", "MedicationStatement"):
            for res in self.record.of_type(rtype):
                if not isinstance(res, dict):
                    continue
                concept = res.get("medicationCodeableConcept")
                if not isinstance(concept, dict) and isinstance(res.get("medicationReference"), dict):
                    medication = self.record.resolve(str(res["medicationReference"].get("reference", "")))
                    concept = medication.get("code") if medication else None
                tags = self.tags(concept)
                if tags is not None and _usable(res):
                    yield self._make(res, tags, concept,
                                     when=first_date(res, "authoredOn", "effectiveDateTime", "effectivePeriod", "dateAsserted"),
                                     status="active" if _text_value(res.get("status")) in (None, "active") else "completed")

    def imaging_studies(self) -> Iterator[ClinicalItem]:
        for res, tags in self._tagged("ImagingStudy", "procedureCode", "reasonCode"):
            codes = res.get("procedureCode")
            yield self._make(res, tags, codes[0] if isinstance(codes, list) and codes else None,
                             when=first_date(res, "started"), status="completed")

    def reports(self) -> Iterator[ClinicalItem]:
        for res, tags in self._tagged("DiagnosticReport", "code", "conclusionCode"):
            yield self._make(res, tags, res.get("code"),
                             when=first_date(res, "effectiveDateTime", "effectivePeriod", "issued"), status="completed")

    def service_requests(self) -> Iterator[ClinicalItem]:
        """Earlier orders: completed ones count as done, active ones as requested (NIA's
        "requested at the same time or sequentially")."""
        for res, tags in self._tagged("ServiceRequest", "code"):
            if res.get("status") in ("active", "completed", "on-hold"):
                yield self._make(res, tags, res.get("code"),
                                 when=first_date(res, "occurrenceDateTime", "occurrencePeriod", "authoredOn"),
                                 status="completed" if res["status"] == "completed" else "active")

    def attestations(self) -> Iterator[ClinicalItem]:
        """Boolean answers of completed QuestionnaireResponses to our own Questionnaires: one item
        per answer, tagged ``attestation:<linkId>`` (yes) or ``attestation-denied:<linkId>`` (no)
        and dated when the response was authored.  Other questionnaires say nothing we can read."""
        for res in self.record.of_type("QuestionnaireResponse"):
            if not isinstance(res, dict) or not _usable(res):
                continue
            canonical = _text_value(res.get("questionnaire"))
            if res.get("status") not in ("completed", "amended") or not (canonical or "").startswith(CANONICAL_BASE):
                continue
            ref, when = f"QuestionnaireResponse/{res['id']}", first_date(res, "authored")
            for link, text, answer in _boolean_answers(res.get("item")):
                yield ClinicalItem(ref=ref, resource_type="QuestionnaireResponse",
                                   valuesets=frozenset({(ATTESTED if answer else DENIED) + link}),
                                   display=f"{'attested' if answer else 'attested not so'}: {text or link}",
                                   when=when, status="completed")


def _boolean_answers(items: object) -> Iterator[tuple[str, str | None, bool]]:
    """(linkId, text, valueBoolean) of every boolean answer, nested items and answers included."""
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        answers = item.get("answer") if isinstance(item.get("answer"), list) else []
        link = _text_value(item.get("linkId"))
        for answer in answers:
            if isinstance(answer, dict) and isinstance(answer.get("valueBoolean"), bool) and link:
                yield link, _text_value(item.get("text")), answer["valueBoolean"]
            if isinstance(answer, dict):
                yield from _boolean_answers(answer.get("item"))
        yield from _boolean_answers(item.get("item"))


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
