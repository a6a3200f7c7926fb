"""The synthetic patients (cds_service/samples/patients/) are valid, loadable FHIR R4 and decide
to what their tags say, so the demo, the README and the FHIR-server tests never drift.

Each Bundle goes through the real Flask app with a prefetch built from it (no server needed);
tests/test_fhir_server_e2e.py sends the same Bundles through Medplum's FHIR engine instead.
"""
from __future__ import annotations

import json
import re
import uuid
import warnings
from datetime import date

import pytest
from fhir.resources.R4B.bundle import Bundle
from cds_service.tools.patients import PATIENTS, as_prefetch, describe, hook_request, load_bundle, local_ids, patient_files
from medplum import ROOT, decisions

with warnings.catch_warnings():  # simple-icd-10-cm 1.5 loads its data with a deprecated importlib call
    warnings.simplefilter("ignore", DeprecationWarning)
    import simple_icd_10_cm as icd10

FILES = patient_files()
ICD, SCT = "http://hl7.org/fhir/sid/icd-10-cm", "http://snomed.info/sct"
KNOWN_SYSTEMS = {ICD, SCT, "http://www.ama-assn.org/go/cpt", "http://loinc.org", "http://unitsofmeasure.org",
                 "http://www.nlm.nih.gov/research/umls/rxnorm", "http://dicom.nema.org/resources/ontology/DCM",
                 "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
                 "http://example.org/fhir/sid/payer", "https://spine-cds.example.org/fhir/sid/synthetic-mrn"}
TODAY = "2026-11-22"


def stem(path) -> str:
    return path.stem


def all_values(value, key: str):
    """Every value of ``key`` anywhere inside ``value``."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k == key:
                yield v
            yield from all_values(v, key)
    elif isinstance(value, list):
        for item in value:
            yield from all_values(item, key)


def resources(bundle: dict, rtype: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def test_there_are_patients_and_the_folder_holds_only_bundles():
    assert len(FILES) >= 10
    for path in FILES:
        assert load_bundle(path)["resourceType"] == "Bundle", f"{path.name}: only transaction Bundles belong here"


@pytest.mark.parametrize("path", FILES, ids=stem)
def test_bundle_is_a_valid_r4_transaction_with_server_assigned_ids(path):
    bundle = load_bundle(path)
    Bundle.model_validate(bundle)  # FHIR R4 (R4B models): raises on any invalid element
    assert bundle["type"] == "transaction"
    full_urls = {e["fullUrl"] for e in bundle["entry"]}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        assert uuid.UUID(entry["fullUrl"].removeprefix("urn:uuid:")) and entry["fullUrl"].startswith("urn:uuid:")
        assert entry["request"] == {"method": "POST", "url": resource["resourceType"]}, "ids are the server's to assign"
        assert "id" not in resource
        assert {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HTEST",
                "display": "test health data"} in resource["meta"]["security"]
    references = set(all_values(bundle, "reference"))
    assert references <= full_urls, f"references that point outside the Bundle: {references - full_urls}"
    [patient] = resources(bundle, "Patient")
    [order] = [r for r in resources(bundle, "ServiceRequest") if r["status"] == "draft"]
    assert order["subject"]["reference"] == next(e["fullUrl"] for e in bundle["entry"] if e["resource"] is patient)


@pytest.mark.parametrize("path", FILES, ids=stem)
def test_codes_are_standard_and_real_and_dates_are_not_in_the_future(path):
    bundle = load_bundle(path)
    systems = {s for s in all_values(bundle["entry"], "system") if not s.startswith("http://terminology.hl7.org/")}
    assert systems <= KNOWN_SYSTEMS, f"unexpected code systems: {systems - KNOWN_SYSTEMS}"
    for coding in (coding for codings in all_values(bundle["entry"], "coding") for coding in codings):
        if coding["system"] == ICD:
            assert icd10.is_valid_item(coding["code"]) and icd10.is_leaf(coding["code"]), \
                f"{coding['code']} is not a billable ICD-10-CM code"
        if coding["system"] == SCT:
            assert re.fullmatch(r"\d{6,18}", coding["code"]), coding
    for key in ("onsetDateTime", "recordedDate", "performedDateTime", "authoredOn", "effectiveDateTime", "issued",
                "started", "birthDate"):
        for value in all_values(bundle["entry"], key):
            assert date.fromisoformat(value[:10]) <= date.fromisoformat(TODAY), f"{key} {value} is after {TODAY}"


@pytest.mark.parametrize("path", FILES, ids=stem)
def test_bundle_decides_to_its_stated_outcome(path, make_app):
    bundle = load_bundle(path)
    about = describe(bundle)
    client = make_app(SPINE_CDS_REPEAT_WINDOW_S="0").test_client()
    request = hook_request(bundle, local_ids(bundle), prefetch=as_prefetch(bundle))
    response = client.post(f"/cds-services/spine-imaging-{about['hook']}", json=request)
    assert response.status_code == 200, response.get_json()
    [decision] = decisions(response.get_json())
    assert decision["outcome"] == about["expect"]["outcome"], f"{about['title']}: {response.get_json()['cards'][0]}"
    assert (decision["program"], decision["routedBy"]) == (about["program"], "payer")
    assert decision["indication"] == about["expect"].get("indication", decision["indication"])
    if "alternative" in about["expect"]:
        assert decision["alternative"] == about["expect"]["alternative"]


def test_the_set_covers_every_program_outcome_and_coding_style():
    about = {path.name: describe(load_bundle(path)) for path in FILES}
    programs = set(json.loads((ROOT / "mappings" / "programs.json").read_text())["programs"])
    assert {a["program"] for a in about.values() if a["expect"]["outcome"] == "approve"} == programs
    assert {"approve", "documentation", "alternative"} <= {a["expect"]["outcome"] for a in about.values()}
    assert {"order-select", "order-sign"} <= {a["hook"] for a in about.values()}
    for name, a in about.items():
        bundle = load_bundle(PATIENTS / name)
        problem_systems = {c["system"] for r in resources(bundle, "Condition") for c in r["code"]["coding"]}
        orgs = [i["value"] for r in resources(bundle, "Organization") for i in r["identifier"]]
        assert orgs == [a["program"]] and len(resources(bundle, "Coverage")) == 1, name
        if "snomed-only-problems" in a["features"]:
            assert problem_systems == {SCT}, name
        if "icd10-only-problems" in a["features"]:
            assert problem_systems == {ICD}, name
        if "many-observations" in a["features"]:
            assert len(resources(bundle, "Observation")) > 50, name
        if "prior-imaging" in a["features"]:
            assert resources(bundle, "ImagingStudy") and resources(bundle, "DiagnosticReport"), name
    features = {f for a in about.values() for f in a["features"]}
    assert {"snomed-only-problems", "icd10-only-problems", "many-observations", "prior-imaging",
            "x-ray-first", "mri-contraindicated", "cancer-history", "red-flags", "conservative-care"} <= features
