"""One audit record per hook call (CRD found-37): what it holds, what it must never hold."""
from __future__ import annotations

import copy
import json
import re

import pytest

from cds_service.store.audit import failed_call_record, fhir_origin, references, user_type
from cds_service.tools.cli import SAMPLES

SELECT, SIGN = "/cds-services/spine-imaging-order-select", "/cds-services/spine-imaging-order-sign"
TOKEN = "eyJhbGciOi.secret-access-token.sig"


def sample(name: str) -> dict:
    return json.loads((SAMPLES / f"{name}.json").read_text())


def store_of(app):
    return app.extensions["spine_cds"].store


def phi_of(body: dict) -> list[str]:
    """What identifies the patient in a request: the patient id and names as JSON values, the
    Patient reference, the birth date, the access token.  (Other resources' ids are references,
    which the audit may keep, even when an EHR builds them from the patient id.)"""
    patient = body["prefetch"]["patient"]
    names = [n for name in patient.get("name", []) for n in [name.get("family"), *name.get("given", [])] if n]
    return [*(json.dumps(v) for v in [body["context"]["patientId"], *names]), f"Patient/{patient['id']}",
            patient["birthDate"], TOKEN]


def test_a_decided_call_records_orders_rules_evidence_and_cards_without_phi(app, client):
    body = sample("radiculopathy-conservative-care-failed")
    body["fhirAuthorization"] = {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                                 "scope": "user/*.read", "subject": "cds"}
    response = client.post(SELECT, json=body)
    assert response.status_code == 200
    [card] = response.get_json()["cards"]
    decision = card["extension"]["spine-cds.decision"]
    [record] = store_of(app).audit_records()
    assert {k: record[k] for k in ("service", "hook", "hookInstance", "fhirServer", "userType", "status", "result")} == {
        "service": "spine-imaging-order-select", "hook": "order-select", "hookInstance": body["hookInstance"],
        "fhirServer": "https://ehr.example.org", "userType": "Practitioner", "status": 200, "result": "decided"}
    assert record["cards"] == [card["uuid"]]
    [order] = record["orders"]
    assert (order["order"], order["program"], order["guideline"], order["outcome"], order["indication"], order["card"]) == (
        decision["order"], decision["program"], decision["guideline"], "approve", decision["indication"], card["uuid"])
    assert order["criteriaMet"] == [decision["indication"]]
    assert order["evidence"] and order["evidence"] == [e for e in decision["evidence"] if e != "Patient"]
    assert all(re.fullmatch(r"[A-Z][A-Za-z]+/[A-Za-z0-9\-.]+", ref) for ref in order["evidence"])
    assert record["latencyMs"] >= 0 and record["time"].endswith("+00:00")
    text = json.dumps(store_of(app).audit_records())
    assert [s for s in phi_of(body) if s in text] == []


def test_a_call_without_a_spine_order_is_audited_too(app, client):
    body = sample("brain-mri-not-ours")
    assert client.post(SELECT, json=body).get_json() == {"cards": []}
    [record] = store_of(app).audit_records(hook_instance=body["hookInstance"])
    assert (record["status"], record["result"], record["orders"], record["cards"]) == (200, "no-spine-order", [], [])


def test_a_repeat_left_out_at_order_sign_is_audited_as_decided_but_not_shown(app, client):
    select = sample("radiculopathy-conservative-care-failed")
    client.post(SELECT, json=select)
    sign = copy.deepcopy(select)
    sign.update(hook="order-sign", hookInstance="sign-" + select["hookInstance"])
    sign["context"].pop("selections")
    assert client.post(SIGN, json=sign).get_json()["cards"] == []
    [record] = store_of(app).audit_records(hook_instance=sign["hookInstance"])
    [order] = record["orders"]
    assert (order["outcome"], order["card"], record["cards"], record["systemActions"]) == ("approve", None, [], 1)


@pytest.mark.parametrize("payload, hook_instance, status, code", [
    (b'{"hook": "order-select", "hookInstance": "hi-bad", "context": "x"}', "hi-bad", 400, "invalid"),
    (b"not json at all", None, 400, "invalid"),
    (b'{"hook": "order-select", "hookInstance": "<script>", "context": {"patientId": "p-secret"}}', None, 400, "invalid"),
], ids=["invalid-context", "not-json", "hostile-instance"])
def test_a_call_failing_after_authentication_is_audited_with_status_and_code_only(app, client, payload, hook_instance,
                                                                                   status, code):
    response = client.post(SELECT, data=payload, content_type="application/json")
    assert response.status_code == status
    [record] = store_of(app).audit_records()
    assert (record["hookInstance"], record["status"], record["result"], record["error"]) == (hook_instance, status,
                                                                                           "error", code)
    assert response.get_json()["issue"][0]["diagnostics"] not in json.dumps(record)
    assert "p-secret" not in json.dumps(record)


def test_a_call_refused_by_authentication_leaves_no_record(make_app):
    app = make_app(SPINE_CDS_AUTH="on")
    assert app.test_client().post(SELECT, json=sample("radiculopathy-conservative-care-failed")).status_code == 401
    assert store_of(app).count_audit() == 0


def test_failed_call_record_keeps_only_well_formed_identifiers():
    body = {"hook": "order-select", "hookInstance": "a" * 300, "fhirServer": "javascript:alert(1)",
            "context": {"userId": "Practitioner/123", "patientId": "p-1"}}
    record = failed_call_record(audit_id="x", at="t", service_id="svc", body=body, status=400, code="invalid",
                                latency_ms=1.234)
    assert (record["hookInstance"], record["fhirServer"], record["userType"], record["latencyMs"]) == (
        None, None, "Practitioner", 1.2)
    assert failed_call_record(audit_id="x", at="t", service_id="svc", body=[1], status=413, code="processing",
                              latency_ms=0)["hook"] is None


@pytest.mark.parametrize("url, origin", [
    ("https://ehr.example.org/fhir/r4/tenant-1", "https://ehr.example.org"),
    ("http://10.0.0.5:8080/fhir", "http://10.0.0.5:8080"),
    ("https://user:pw@ehr.example.org/fhir?patient=123", "https://ehr.example.org"),
    ("https://ehr.example.org:notaport/fhir", None),
    ("ftp://ehr.example.org", None),
    (None, None),
])
def test_fhir_server_is_kept_as_its_origin_only(url, origin):
    assert fhir_origin(url) == origin


@pytest.mark.parametrize("user_id, kind", [("Practitioner/123", "Practitioner"), ("PractitionerRole/a", "PractitionerRole"),
                                           ("123", None), ("<b>/1", None), (None, None)])
def test_user_is_kept_as_its_resource_type_only(user_id, kind):
    assert user_type(user_id) == kind


def test_references_keep_type_and_id_but_drop_the_patient_and_anything_else():
    assert references(["Condition/c1", "Patient", "Patient/p1", "Condition/c1", "free text", "Procedure/p.2",
                       "Observation/" + "x" * 65]) == ["Condition/c1", "Procedure/p.2"]
