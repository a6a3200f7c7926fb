"""``spine-cds load-patients``: wait for a FHIR server, POST the patient transaction Bundles.

Why these tests: the compose demo depends on the loader finding a slow-starting HAPI, loading
every bundle once and saying which Patient id each got; a loader that gives up too early, waits
forever, loads twice or hides a refusal would leave the demo silently empty.  The server is
tests/hapi_stub.py's (``FhirStub`` plus HAPI's ``/metadata`` and transactions).  The last test
runs one patient through the compose flow in process: load it, then decide an order with no
prefetch, the service reading the record from the server.
"""
from __future__ import annotations

import copy
import io
import json
import shutil
from pathlib import Path

import pytest
from fhir_stub import _outcome
from hapi_stub import FakeTime, HapiLikeStub

from cds_service.tools.cli import main
from cds_service.tools.loader import PATIENTS_DIR, LoadError, load_patients, read_bundles
from ports import free_port

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "tests" / "fixtures" / "patients" / "ana-lumbar-radiculopathy.json"
SAMPLE = ROOT / "cds_service" / "samples" / "radiculopathy-conservative-care-failed.json"


@pytest.fixture
def folder(tmp_path) -> Path:
    target = tmp_path / "patients"
    target.mkdir()
    shutil.copy(BUNDLE, target / BUNDLE.name)
    return target


def run(url: str, folder: Path, **kwargs) -> tuple[list, list[str]]:
    out, fake = io.StringIO(), FakeTime()
    options = {"wait_s": 30.0, "interval_s": 2.0, "clock": fake.clock, "sleep": fake.sleep} | kwargs
    results = load_patients(url, folder, out=out, **options)
    return results, out.getvalue().splitlines()


def test_posts_each_bundle_as_a_transaction_and_reports_the_patient_id(folder):
    with HapiLikeStub() as stub:
        [result], lines = run(stub.url, folder)
        [(path, content_type, body)] = stub.posts
    assert path == "/" and content_type == "application/fhir+json"
    assert json.loads(body) == json.loads(BUNDLE.read_text())  # sent as written
    assert dict(result.created) == {"Patient": 1, "Organization": 1, "Coverage": 1, "Condition": 1,
                                    "Procedure": 6, "MedicationRequest": 1}
    patient_id = [p["id"] for p in stub.resources["Patient"]][0]
    assert result.patient == f"Patient/{patient_id}" and not result.skipped
    assert lines[0].startswith(f"FHIR server ready at {stub.url} (attempt 1")
    assert lines[1] == (f"{BUNDLE.name}: created 11 (Condition 1, Coverage 1, MedicationRequest 1, Organization 1, "
                        f"Patient 1, Procedure 6) -> patientId {patient_id}")
    assert lines[-1] == f"loaded 1 bundle(s) into {stub.url}; 0 already there"


def test_waits_for_the_server_with_one_progress_line_per_attempt(folder):
    with HapiLikeStub(not_ready=3) as stub:
        results, lines = run(stub.url + "/", folder, interval_s=5.0)
        assert stub.metadata_calls == 4 and len(stub.posts) == 1
    waiting = [line for line in lines if line.startswith("waiting for the FHIR server")]
    assert len(waiting) == 3
    assert waiting[0] == f"waiting for the FHIR server at {stub.url}/metadata: attempt 1, 0 of 30 s (HTTP 503)"
    assert waiting[2].startswith(f"waiting for the FHIR server at {stub.url}/metadata: attempt 3, 10 of 30 s")
    assert lines[3] == f"FHIR server ready at {stub.url} (attempt 4, 15 s)"
    assert results[0].created["Patient"] == 1


def test_the_wait_is_bounded_and_says_what_to_check(folder):
    fake = FakeTime()
    url = f"http://127.0.0.1:{free_port()}/fhir"
    with pytest.raises(LoadError) as error:
        load_patients(url, folder, wait_s=20.0, interval_s=3.0, out=io.StringIO(), clock=fake.clock, sleep=fake.sleep)
    assert fake.sleeps == [3.0] * 6 and fake.now <= 20.0
    message = str(error.value)
    assert f"{url}/metadata was not ready after 18 s and 7 attempt(s)" in message
    assert "connection refused" in message and "--wait" in message and "docker compose logs hapi" in message


def test_a_server_of_another_fhir_version_fails_at_once(folder):
    with HapiLikeStub(fhir_version="5.0.0") as stub:
        with pytest.raises(LoadError, match=r"speaks FHIR 5\.0\.0, not R4 .*hapi\.fhir\.fhir_version=R4"):
            run(stub.url, folder)
        assert stub.metadata_calls == 1 and stub.posts == []


def test_running_again_skips_bundles_whose_patient_is_already_there(folder):
    with HapiLikeStub() as stub:
        [first], _ = run(stub.url, folder)
        [second], lines = run(stub.url, folder)
        assert len(stub.posts) == 1 and len(stub.resources["Patient"]) == 1
    assert second.skipped and second.patient == first.patient
    patient_id = first.patient.split("/")[1]
    assert lines[1].startswith(f"{BUNDLE.name}: already on the server -> patientId {patient_id}; skipped")
    assert lines[-1].endswith("0 bundle(s) into " + stub.url + "; 1 already there")


def test_a_bundle_without_patient_identifier_is_posted_every_time(folder):
    bundle = json.loads(BUNDLE.read_text())
    del bundle["entry"][0]["resource"]["identifier"]
    (folder / BUNDLE.name).write_text(json.dumps(bundle))
    with HapiLikeStub() as stub:
        run(stub.url, folder)
        run(stub.url, folder)
        assert len(stub.posts) == 2


def test_a_refused_transaction_exits_1_with_the_servers_message(folder, capsys):
    with HapiLikeStub() as stub:
        stub.refusal = (422, _outcome("HAPI-0541: Invalid resource reference"))
        status = main(["load-patients", "--fhir-base", stub.url, "--dir", str(folder), "--wait", "5"])
    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith(f"spine-cds load-patients: POST {stub.url} for {BUNDLE.name}: the server answered HTTP 422: "
                          "HAPI-0541: Invalid resource reference. Fix the bundle")
    assert "run the loader again" in err


def test_a_slow_transaction_times_out_with_advice(folder):
    with HapiLikeStub() as stub:
        stub.post_delay = 5.0
        with pytest.raises(LoadError, match=r"no answer within 0 s; retry, or allow longer with --timeout"):
            run(stub.url, folder, timeout_s=0.2)


def test_the_cli_loads_and_exits_0(folder, capsys):
    with HapiLikeStub() as stub:
        assert main(["load-patients", "--fhir-base", stub.url, "--dir", str(folder), "--interval", "0.1"]) == 0
    out = capsys.readouterr().out
    assert f"{BUNDLE.name}: created 11" in out and "loaded 1 bundle(s)" in out


def _write(folder: Path, name: str, content: object) -> None:
    (folder / name).write_text(content if isinstance(content, str) else json.dumps(content))


BAD_BUNDLES = [
    ("not JSON", "{", r"broken\.json is not readable JSON"),
    ("searchset", {"resourceType": "Bundle", "type": "searchset", "entry": []},
     r"broken\.json is not a FHIR transaction Bundle: type is 'searchset', not 'transaction'"),
    ("no request", {"resourceType": "Bundle", "type": "transaction",
                    "entry": [{"resource": {"resourceType": "Patient"}}]},
     r"entry\[0\] has no request\.method and request\.url; fix or remove the file"),
    ("a Patient", {"resourceType": "Patient"}, r"resourceType is not Bundle"),
]


@pytest.mark.parametrize("content, pattern", [b[1:] for b in BAD_BUNDLES], ids=[b[0] for b in BAD_BUNDLES])
def test_a_bad_bundle_fails_before_any_request(folder, content, pattern):
    _write(folder, "broken.json", content)
    with HapiLikeStub() as stub:
        with pytest.raises(LoadError, match=pattern):
            run(stub.url, folder)
        assert stub.requests == [] and stub.posts == []


def test_an_empty_or_missing_folder_and_a_bad_url_are_refused(tmp_path, folder):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LoadError, match=r"No \*\.json files in .*pass --dir"):
        read_bundles(tmp_path / "empty")
    with pytest.raises(LoadError, match=r"is not a folder; pass --dir"):
        read_bundles(tmp_path / "missing")
    with pytest.raises(LoadError, match=r"--fhir-base must be an absolute http\(s\) FHIR base URL"):
        run("hapi:8080/fhir", folder)


def test_packaged_patient_bundles_are_transactions():
    if not PATIENTS_DIR.is_dir():
        pytest.skip("cds_service/samples/patients/ is not in this checkout yet")
    bundles = read_bundles(PATIENTS_DIR)
    assert bundles and all(b["type"] == "transaction" for _, b in bundles)


def test_the_service_reads_a_loaded_patient_from_the_fhir_server(folder, make_app):
    """The compose flow in process: load, then an order-select call with no prefetch."""
    with HapiLikeStub() as stub:
        [result], _ = run(stub.url, folder)
        patient_id = result.patient.split("/")[1]
        request = hook_request_for(patient_id, stub.url)
        client = make_app(SPINE_CDS_ALLOWED_FHIR_SERVERS=stub.url).test_client()
        response = client.post("/cds-services/spine-imaging-order-select", json=request)
        searched = list(stub.requests)
    assert response.status_code == 200, response.get_json()
    [card] = response.get_json()["cards"]
    decision = card["extension"]["spine-cds.decision"]
    assert decision["outcome"] == "approve" and decision["program"] == "nia" and decision["routedBy"] == "payer"
    procedure_ids = {f"Procedure/{p['id']}" for p in stub.resources["Procedure"]}
    assert procedure_ids <= set(decision["evidence"])
    assert f"/Patient/{patient_id}" in searched
    assert any(p.startswith(f"/Condition?patient={patient_id}") for p in searched)


def hook_request_for(patient_id: str, fhir_server: str) -> dict:
    """The radiculopathy sample's order-select request, pointed at a loaded patient, no prefetch."""
    request = copy.deepcopy(json.loads(SAMPLE.read_text()))
    del request["prefetch"]
    request["fhirServer"] = fhir_server
    request["context"]["patientId"] = patient_id
    for entry in request["context"]["draftOrders"]["entry"]:
        entry["resource"]["subject"] = {"reference": f"Patient/{patient_id}"}
    return request
