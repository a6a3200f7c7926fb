"""The docker compose demo in process: every packaged patient loaded, then decided from the server.

Why: in compose the service gets no prefetch — it reads each record from HAPI, where the loader
put it under new ids, and docker/hook_request.py builds the request the README tells users to
send.  No Docker engine runs here, so the same steps run against the HAPI-like stub: load every
bundle of cds_service/samples/patients with the real loader, build each request with the real
script, and check the service reaches the decision the bundle's tags promise.
"""
from __future__ import annotations

import io
import json
import runpy

import pytest
from hapi_stub import FakeTime, HapiLikeStub

from cds_service.tools.loader import PATIENTS_DIR, load_patients

TAG = "https://spine-cds.example.org/fhir/CodeSystem/synthetic-patient-"
SERVICES = {"order-select": "spine-imaging-order-select", "order-sign": "spine-imaging-order-sign"}
hook_request = runpy.run_path(str(PATIENTS_DIR.parents[2] / "docker" / "hook_request.py"))

pytestmark = pytest.mark.skipif(not PATIENTS_DIR.is_dir(), reason="cds_service/samples/patients/ not added yet")


def tags(bundle: dict) -> dict[str, str]:
    return {t["system"].removeprefix(TAG): t["code"] for t in bundle.get("meta", {}).get("tag", [])
            if t["system"].startswith(TAG) and t["system"] != TAG + "feature"}


@pytest.fixture(scope="module")
def loaded():
    """One stub for the module, with every packaged bundle loaded by the real loader."""
    fake = FakeTime()
    with HapiLikeStub() as stub:
        results = load_patients(stub.url, PATIENTS_DIR, out=io.StringIO(), clock=fake.clock, sleep=fake.sleep)
        yield stub, results


def test_every_bundle_loads_once_with_its_patient_id(loaded):
    stub, results = loaded
    assert len(results) == len(list(PATIENTS_DIR.glob("*.json")))
    assert all(r.patient and not r.skipped for r in results)
    assert len({r.patient for r in results}) == len(results) == len(stub.resources["Patient"])


@pytest.mark.parametrize("path", sorted(PATIENTS_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_the_service_decides_a_loaded_patient_as_tagged(loaded, make_app, path):
    stub, _ = loaded
    expected = tags(json.loads(path.read_text()))
    hook = expected.get("hook", "order-select")
    request = hook_request["build"](stub.url, stub.url, path.stem, hook)
    assert "prefetch" not in request and request["context"]["patientId"]
    client = make_app(SPINE_CDS_ALLOWED_FHIR_SERVERS=stub.url).test_client()
    response = client.post(f"/cds-services/{SERVICES[hook]}", json=request)
    assert response.status_code == 200, response.get_json()
    cards = response.get_json()["cards"]
    assert [c["extension"]["spine-cds.decision"]["outcome"] for c in cards] == [expected["expected-outcome"]]
    decision = cards[0]["extension"]["spine-cds.decision"]
    assert decision["program"] == expected["program"]
    if "expected-indication" in expected:
        assert decision["indication"] == expected["expected-indication"]


def test_the_script_says_what_to_check_when_the_patient_is_not_there(loaded, capsys):
    stub, _ = loaded
    assert hook_request["main"](["no-such-patient", "--lookup", stub.url]) == 1
    assert "No Patient with MRN no-such-patient" in capsys.readouterr().err
    assert hook_request["main"](["x", "--lookup", "http://127.0.0.1:9/fhir"]) == 1
    assert "is HAPI up and loaded?" in capsys.readouterr().err
