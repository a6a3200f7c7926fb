"""facts.py on loosely filled records (tests/tables/facts.json): statuses, dates, codings."""
from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest

from cds_service.engine.facts import extract_facts
from cds_service.model import PatientRecord, SpineOrder
from cds_service.engine.tagging import Tagger
from cds_service.engine.terminology import Terminology, normalise

TABLE = json.loads((Path(__file__).parent / "tables" / "facts.json").read_text())
CODES = {"vs-lbp": [("http://hl7.org/fhir/sid/icd-10-cm", "M54.50"), ("http://snomed.info/sct", "279039007")],
         "vs-pt": [("http://www.ama-assn.org/go/cpt", "97110")],
         "vs-nsaid": [("http://www.nlm.nih.gov/research/umls/rxnorm", "5640")],
         "vs-esr": [("http://loinc.org", "4537-7")]}


@pytest.fixture(scope="module")
def terminology():
    index = {}
    for vs, codes in CODES.items():
        for system, code in codes:
            index.setdefault(normalise(system, code), set()).add(vs)
    return Terminology({k: frozenset(v) for k, v in index.items()}, {})


@pytest.mark.parametrize("case", TABLE["cases"], ids=[c["name"] for c in TABLE["cases"]])
def test_facts(case, terminology, catalog):
    grouped = {}
    for resource in case["resources"]:
        grouped.setdefault(resource["resourceType"], []).append(resource)
    record = PatientRecord(patient={"resourceType": "Patient", "id": "p"}, resources={k: tuple(v) for k, v in grouped.items()})
    order = SpineOrder("ServiceRequest/o", {"resourceType": "ServiceRequest", "id": "o"}, catalog.by_cpt["72148"])
    facts = extract_facts(record, order, (), Tagger(terminology, catalog), date(2026, 11, 22))
    got = {item.ref: item for item in facts.items}
    assert set(got) == {e["ref"] for e in case["expect"]}
    for expected in case["expect"]:
        item = got[expected["ref"]]
        assert sorted(item.valuesets) == expected["valuesets"]
        for field in ("when", "end"):
            if field in expected:
                value = getattr(item, field)
                assert (value.isoformat() if value else None) == expected[field]
        for field in ("status", "value", "abnormal"):
            if field in expected:
                assert getattr(item, field) == expected[field]
        if "study" in expected:
            assert item.study.cpt == expected["study"]


def test_an_order_reason_has_no_date_of_its_own(terminology, catalog):
    """"New" means new: a reason on today's order is not dated today (a foot drop recorded two years
    ago would otherwise be new onset).  Without a matching problem its date is unknown."""
    order_resource = {"resourceType": "ServiceRequest", "id": "o",
                      "reasonCode": [{"coding": [{"system": "http://snomed.info/sct", "code": "279039007", "display": "Low back pain"}]}]}
    order = SpineOrder("ServiceRequest/o", order_resource, catalog.by_cpt["72148"])
    facts = extract_facts(PatientRecord(patient=None, resources={}), order, (), Tagger(terminology, catalog), date(2026, 11, 22))
    [item] = facts.items
    assert (item.ref, item.when, item.valuesets, item.study) == ("ServiceRequest/o", None, frozenset({"vs-lbp"}), None)
    assert "Low back pain" in item.display and facts.birth_date is None


def test_an_order_reason_takes_the_onset_of_the_matching_current_problem(terminology, catalog):
    reason = {"coding": [{"system": "http://snomed.info/sct", "code": "279039007"}]}
    order = SpineOrder("ServiceRequest/o", {"resourceType": "ServiceRequest", "id": "o", "reasonCode": [reason]},
                       catalog.by_cpt["72148"])
    problems = (
        {"resourceType": "Condition", "id": "old", "code": reason, "onsetDateTime": "2024-01-10",
         "clinicalStatus": {"coding": [{"code": "resolved"}]}},
        {"resourceType": "Condition", "id": "now", "code": reason, "onsetDateTime": "2026-10-01"},
        {"resourceType": "Condition", "id": "maybe", "code": reason, "onsetDateTime": "2026-11-20",
         "verificationStatus": {"coding": [{"code": "provisional"}]}},
    )
    facts = extract_facts(PatientRecord(patient=None, resources={"Condition": problems}), order, (),
                          Tagger(terminology, catalog), date(2026, 11, 22))
    item = next(i for i in facts.items if i.ref == "ServiceRequest/o")
    assert (item.when, item.dated_by) == (date(2026, 10, 1), "Condition/now")
    by_ref = {i.ref: i for i in facts.items}
    assert by_ref["Condition/old"].status == "inactive" and by_ref["Condition/maybe"].suspected


TODAY = date(2026, 11, 22)
LBP = {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "M54.50"}]}


def _items(terminology, catalog, resources, birth="1970-06-01"):
    grouped = {}
    for resource in resources:
        grouped.setdefault(resource["resourceType"], []).append(resource)
    record = PatientRecord(patient={"resourceType": "Patient", "id": "p", "birthDate": birth},
                           resources={k: tuple(v) for k, v in grouped.items()})
    order = SpineOrder("ServiceRequest/o", {"resourceType": "ServiceRequest", "id": "o"}, catalog.by_cpt["72148"])
    return {i.ref: i for i in extract_facts(record, order, (), Tagger(terminology, catalog), TODAY).items}


@pytest.mark.parametrize("fields, when, dated_by", [
    ({"onsetDateTime": "2026-09-03T10:00:00-05:00"}, date(2026, 9, 3), "onset"),
    ({"onsetPeriod": {"start": "2026-08"}}, date(2026, 8, 1), "onset"),               # a partial date: its first day
    ({"onsetAge": {"value": 56, "unit": "years", "system": "http://unitsofmeasure.org", "code": "a"}},
     date(1970, 6, 1) + timedelta(days=56 * 365), "age at onset"),
    ({"onsetString": "since the autumn", "recordedDate": "2026-10-02"}, date(2026, 10, 2), "recorded"),
    ({"onsetString": "a while ago"}, None, None),                                          # unreadable: unknown
    ({"onsetDateTime": "not a date"}, None, None),
])
def test_a_problem_is_dated_by_its_onset(terminology, catalog, fields, when, dated_by):
    [item] = _items(terminology, catalog, [{"resourceType": "Condition", "id": "c", "code": LBP, **fields}]).values()
    assert (item.when, item.dated_by) == (when, dated_by)


@pytest.mark.parametrize("fields, status", [
    ({"clinicalStatus": {"coding": [{"code": "resolved"}]}}, "inactive"),
    ({"abatementDateTime": "2026-10-01"}, "inactive"),
    ({"abatementDateTime": "2027-01-01"}, "active"),                    # a future abatement is not history yet
    ({"abatementAge": {"value": 50, "code": "a"}}, "inactive"),
    ({"clinicalStatus": None}, "active"),
])
def test_a_resolved_problem_is_history(terminology, catalog, fields, status):
    [item] = _items(terminology, catalog, [{"resourceType": "Condition", "id": "c", "code": LBP,
                                            "onsetDateTime": "2020-01-01", **fields}]).values()
    assert item.status == status


def test_where_else_a_chart_keeps_a_finding(terminology, catalog):
    """A report's coded conclusion, an observation component or value, and a device are findings."""
    items = _items(terminology, catalog, [
        {"resourceType": "DiagnosticReport", "id": "r", "status": "final", "effectiveDateTime": "2026-11-01",
         "code": {"text": "XR lumbar spine flexion and extension"}, "conclusionCode": [LBP]},
        {"resourceType": "Observation", "id": "o", "status": "final", "effectiveDateTime": "2026-11-02",
         "code": {"text": "Exam"}, "component": [{"code": {"text": "finding"}, "valueCodeableConcept": LBP}]},
        {"resourceType": "Device", "id": "d", "status": "active", "type": LBP},
        {"resourceType": "Device", "id": "gone", "status": "inactive", "type": LBP},
    ])
    assert {"DiagnosticReport/r", "Observation/o", "Device/d"} <= set(items) and "Device/gone" not in items
    assert all("vs-lbp" in items[ref].valuesets for ref in ("DiagnosticReport/r", "Observation/o", "Device/d"))


def test_a_prescription_runs_as_long_as_its_supply(terminology, catalog):
    nsaid = {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "5640"}]}
    items = _items(terminology, catalog, [
        {"resourceType": "MedicationRequest", "id": "supply", "status": "completed", "authoredOn": "2026-09-01",
         "medicationCodeableConcept": nsaid,
         "dispenseRequest": {"expectedSupplyDuration": {"value": 30, "code": "d"}, "numberOfRepeatsAllowed": 1}},
        {"resourceType": "MedicationRequest", "id": "valid", "status": "active", "authoredOn": "2026-09-01",
         "medicationCodeableConcept": nsaid, "dispenseRequest": {"validityPeriod": {"end": "2026-10-15"}}},
        {"resourceType": "MedicationStatement", "id": "taking", "status": "active", "medicationCodeableConcept": nsaid,
         "effectivePeriod": {"start": "2026-08-01"}},
        {"resourceType": "MedicationRequest", "id": "bad", "status": "active", "authoredOn": "2026-09",
         "medicationCodeableConcept": nsaid, "dispenseRequest": {"expectedSupplyDuration": {"value": 3, "code": "fortnight"}}},
    ])
    assert items["MedicationRequest/supply"].end == date(2026, 10, 31)
    assert items["MedicationRequest/valid"].end == date(2026, 10, 15)
    assert (items["MedicationStatement/taking"].when, items["MedicationStatement/taking"].end) == (date(2026, 8, 1), None)
    assert (items["MedicationRequest/bad"].when, items["MedicationRequest/bad"].end) == (date(2026, 9, 1), None)


def test_prior_imaging_without_a_cpt_code(terminology, catalog):
    items = _items(terminology, catalog, [
        {"resourceType": "ImagingStudy", "id": "i", "status": "available", "started": "2026-10-01",
         "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "DX"}],
         "description": "XR LUMBAR SPINE 2-3 VIEWS"},
        {"resourceType": "DiagnosticReport", "id": "r", "status": "final", "effectiveDateTime": "2026-10-05",
         "code": {"coding": [{"system": "http://loinc.org", "code": "0000-0", "display": "MR Lumbar spine WO contrast"}]}},
        {"resourceType": "ImagingStudy", "id": "chest", "status": "available", "started": "2026-10-01",
         "modality": [{"code": "CT"}], "description": "CT chest"},
    ])
    assert (items["ImagingStudy/i"].study.modality, items["ImagingStudy/i"].study.region) == ("XR", "lumbar")
    assert (items["DiagnosticReport/r"].study.modality, items["DiagnosticReport/r"].study.region) == ("MR", "lumbar")
    assert "ImagingStudy/chest" not in items


def test_a_duration_beyond_a_century_is_unknown_not_a_crash():
    """Found by the fuzz tests: a MedicationRequest supplying 10^9 days (or an infinite number,
    which the standard library's JSON parser reads) moved its end date off the calendar."""
    from datetime import date
    from cds_service.engine.record_dates import duration_days, medication_end
    assert duration_days({"value": 30, "code": "d"}) == 30 and duration_days({"value": 101, "code": "a"}) is None
    for huge in (1e9, float("inf"), float("nan")):
        request = {"resourceType": "MedicationRequest",
                   "dispenseRequest": {"expectedSupplyDuration": {"value": huge, "code": "d"}, "numberOfRepeatsAllowed": 12}}
        assert medication_end(request, date(2026, 11, 1)) is None
    request["dispenseRequest"]["expectedSupplyDuration"] = {"value": 36_000, "code": "d"}
    assert medication_end(request, date(2026, 11, 1)) is not None   # 13 fills of nearly a century: still a date
    assert medication_end(request, date(9999, 12, 1)) is None        # a start at the calendar's end
