"""Structured logs: JSON lines (or text), a request id per call, access lines, and no PHI or tokens.

The service's handler writes to the current ``sys.stderr``, so ``capsys`` captures exactly the
lines an operator's log shipper would read.
"""
from __future__ import annotations

import json
import logging
import uuid

import pytest

from cds_service.tools.cli import SAMPLES
from cds_service.errors import CdsConfigError
from cds_service.runtime.logs import HANDLER_NAME, make_handler
from fhir_stub import FhirStub
from test_log_hygiene import ISSUER, patient_secrets, post_signed, sample_bodies

SELECT = "/cds-services/spine-imaging-order-select"


def sample(name: str = "radiculopathy-conservative-care-failed.json") -> dict:
    return json.loads((SAMPLES / name).read_text())


def json_lines(text: str) -> list[dict]:
    """Every line must be one JSON object (a log shipper reads them one by one)."""
    return [json.loads(line) for line in text.splitlines()]


def test_a_hook_call_logs_json_lines_tagged_with_its_hook_instance(make_app, capsys):
    client = make_app(SPINE_CDS_LOG_FORMAT="json").test_client()
    capsys.readouterr()
    body = sample()
    response = client.post(SELECT, json=body)
    assert response.status_code == 200
    assert response.headers["X-Request-Id"] == body["hookInstance"]
    records = json_lines(capsys.readouterr().err)
    assert records, "the call logged nothing"
    for record in records:
        assert {"timestamp", "level", "logger", "message", "pid"} <= set(record)
        assert record["timestamp"].endswith("Z") and record["logger"].startswith("cds_service")
        assert record["request_id"] == body["hookInstance"]
    [access] = [r for r in records if r["logger"] == "cds_service.access"]
    assert access["level"] == "INFO"
    assert (access["method"], access["route"], access["status"]) == ("POST", "/cds-services/<service_id>", 200)
    assert access["service"] == "spine-imaging-order-select"
    assert isinstance(access["latency_ms"], float) and access["latency_ms"] >= 0


def test_other_requests_get_a_generated_id_echoed_in_the_header(make_app, capsys):
    client = make_app().test_client()
    capsys.readouterr()
    ids = [client.get("/cds-services").headers["X-Request-Id"] for _ in range(2)]
    records = json_lines(capsys.readouterr().err)
    assert len(set(ids)) == 2 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert [r["request_id"] for r in records if r["logger"] == "cds_service.access"] == ids


def test_a_hook_instance_unfit_for_a_header_is_not_echoed(make_app, capsys):
    client = make_app().test_client()
    body = sample() | {"hookInstance": "d1577c69\r\nX-Injected: yes"}
    response = client.post(SELECT, json=body)
    assert response.status_code == 200 and "X-Injected" not in response.headers
    assert len(response.headers["X-Request-Id"]) == 32
    assert "X-Injected" not in capsys.readouterr().err.replace("\\r\\nX-Injected", "")


def test_access_lines_name_the_route_never_the_query_string(make_app, capsys):
    client = make_app().test_client()
    capsys.readouterr()
    client.get("/cds-services?patient=Margaret-Okafor")
    client.get("/questionnaires/nia-lumbar-spine-mri/Margaret-Okafor")
    err = capsys.readouterr().err
    assert "Margaret" not in err
    routes = [(r["route"], r["status"]) for r in json_lines(err) if r["logger"] == "cds_service.access"]
    assert routes == [("/cds-services", 200), ("/questionnaires/<guideline_id>/<rule_id>", 404)]


def test_probes_are_logged_at_debug_only(make_app, capsys):
    client = make_app(SPINE_CDS_LOG_LEVEL="INFO").test_client()
    capsys.readouterr()
    client.get("/health")
    client.get("/metrics")
    assert capsys.readouterr().err == ""
    client = make_app(SPINE_CDS_LOG_LEVEL="DEBUG").test_client()
    capsys.readouterr()
    client.get("/health")
    assert [r["route"] for r in json_lines(capsys.readouterr().err) if r["logger"] == "cds_service.access"] == ["/health"]


def test_text_format_is_one_readable_line_with_the_same_fields(make_app, capsys):
    client = make_app(SPINE_CDS_LOG_FORMAT="text").test_client()
    capsys.readouterr()
    body = sample()
    client.post(SELECT, json=body)
    lines = capsys.readouterr().err.splitlines()
    [access] = [line for line in lines if " cds_service.access " in line]
    assert f"[{body['hookInstance']}] POST /cds-services/<service_id> 200" in access
    assert "route=/cds-services/<service_id>" in access and "status=200" in access
    assert not access.startswith("{")


def test_one_handler_however_many_apps_and_caplog_still_sees_everything(make_app, caplog, capsys):
    for log_format in ("text", "json", "json"):
        make_app(SPINE_CDS_LOG_FORMAT=log_format)
    logger = logging.getLogger("cds_service")
    assert [h.get_name() for h in logger.handlers].count(HANDLER_NAME) == 1
    assert logger.propagate  # an embedding app's (and pytest's) root handlers still get our records
    client = make_app().test_client()
    capsys.readouterr()
    client.get("/cds-services")
    assert len(json_lines(capsys.readouterr().err)) == 1  # printed once, not once per app created
    assert any(r.name == "cds_service.access" for r in caplog.records)


def test_an_unknown_log_level_is_a_configuration_error(make_app):
    with pytest.raises(CdsConfigError, match="SPINE_CDS_LOG_LEVEL='LOUD' is invalid: use one of DEBUG"):
        make_app(SPINE_CDS_LOG_LEVEL="LOUD")


def test_an_unexpected_error_logs_its_type_and_stack_but_not_its_message(make_app, capsys):
    app = make_app()
    quoted = ("Margaret", "Okafor", "1961-03-14")  # what a bug's message can quote

    def broken():
        raise ValueError(" ".join(quoted))

    app.add_url_rule("/broken", "broken", broken)
    capsys.readouterr()
    response = app.test_client().get("/broken")
    assert response.status_code == 500
    err = capsys.readouterr().err
    assert "Margaret" not in err and "1961" not in err
    [error] = [r for r in json_lines(err) if r["level"] == "ERROR"]
    assert error["error"]["type"] == "ValueError" and "in broken" in error["error"]["stack"]
    assert error["request_id"] == response.headers["X-Request-Id"]


# --- no PHI, JWTs or access tokens in the JSON lines of a full signed run -------------------------

FETCHED = ("patient", "conditions", "coverage")  # read from the FHIR server instead of prefetch


def _resources(prefetched) -> list[dict]:
    if not isinstance(prefetched, dict):
        return []
    if prefetched.get("resourceType") == "Bundle":
        return [e["resource"] for e in prefetched.get("entry", []) if "resource" in e]
    return [prefetched]


def test_json_logs_of_a_signed_run_with_fhir_reads_hold_no_phi_or_tokens(make_app, capsys, key, jwks):
    access_token = "fhir-access-token-" + uuid.uuid4().hex
    secrets, tokens = set(), {access_token}
    with FhirStub(token=access_token) as fhir:
        app = make_app(SPINE_CDS_AUTH="on", SPINE_CDS_LOG_LEVEL="DEBUG", SPINE_CDS_LOG_FORMAT="json",
                       SPINE_CDS_ALLOWED_FHIR_SERVERS=fhir.url,
                       SPINE_CDS_TRUSTED_ISSUERS=json.dumps({ISSUER: jwks.url + "/jwks.json"}))
        client = app.test_client()
        capsys.readouterr()
        for body in sample_bodies():
            for key_name in FETCHED:
                fhir.add(*_resources(body["prefetch"].pop(key_name, None)))
            body["fhirServer"] = fhir.url
            token, path = post_signed(client, key, body, access_token)
            tokens.add(token)
        client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})  # a replay: 401
        assert any(p.startswith("/Patient/") for p in fhir.requests)  # PHI did travel over FHIR
    for patients in fhir.resources.get("Patient", []):
        secrets |= patient_secrets(patients)
    err = capsys.readouterr().err
    records = json_lines(err)
    assert {"cds_service.access", "cds_service.record.patient_record", "cds_service.protocol.error_handlers"} <= {r["logger"] for r in records}
    assert any(r.get("status") == 401 for r in records)
    leaked = [s for s in secrets | tokens if s in err]
    assert not leaked, f"found in logs: {leaked}"
    assert "eyJ" not in err  # no JWT of any kind


def test_a_line_that_cannot_be_written_is_reported_without_its_arguments(capsys):
    class Unprintable:
        def __str__(self):
            raise RuntimeError("no text")

        def __repr__(self):
            return "Patient Margaret Okafor"

    logger = logging.getLogger("cds_service.tests.unprintable")
    logger.propagate = False  # only the service's handler, not pytest's (which re-raises)
    handler = make_handler("json")
    logger.addHandler(handler)
    try:
        logger.warning("record %s", Unprintable())
    finally:
        logger.removeHandler(handler)
    err = capsys.readouterr().err
    assert "could not be written (RuntimeError)" in err and "Margaret" not in err
