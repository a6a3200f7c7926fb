"""facts.py on loosely filled records (tests/tables/facts.json): statuses, dates, codings."""
from __future__ import annotations

import json
from datetime import date
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


def test_order_reasons_become_findings_dated_today(terminology, catalog):
    order_resource = {"resourceType": "ServiceRequest", "id": "o",
                      "reasonCode": [{"coding": [{"system": "http://snomed.info/sct", "code": "279039007", "display": "Low back pain"}]}]}
    order = SpineOrder("ServiceRequest/o", order_resource, catalog.by_cpt["72148"])
    facts = extract_facts(PatientRecord(patient=None, resources={}), order, (), Tagger(terminology, catalog), date(2026, 11, 22))
    [item] = facts.items
    assert (item.ref, item.when, item.valuesets, item.study) == ("ServiceRequest/o", date(2026, 11, 22), frozenset({"vs-lbp"}), None)
    assert "Low back pain" in item.display and facts.birth_date is None
