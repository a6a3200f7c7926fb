"""Logs of a full run hold no PHI, JWTs or access tokens.

Every bundled sample is sent through the service with a signed client JWT and a FHIR access
token, at DEBUG level, and the captured log text is scanned for the patients' identifiers,
names, birth dates and both tokens.
"""
from __future__ import annotations

import json
import logging
import uuid


from cds_service.tools.cli import SAMPLES
from jwt_helpers import client_jwt

ISSUER = "https://ehr.example.org"
ACCESS_TOKEN = "fhir-access-token-" + uuid.uuid4().hex


def sample_bodies() -> list[dict]:
    """Every bundled sample hook request (test_logs.py reuses these helpers)."""
    index = json.loads((SAMPLES / "index.json").read_text())
    return [json.loads((SAMPLES / s["file"]).read_text()) for s in index["samples"]]


def patient_secrets(patient: dict) -> set[str]:
    """What would identify the patient in a log: id, birth date, names (longer than 3 letters)."""
    found = {patient["id"], patient.get("birthDate", "")}
    for name in patient.get("name", []):
        found |= set(name.get("given", [])) | {name.get("family", "")}
    return {s for s in found if s and len(s) > 3}


def post_signed(client, key, body: dict, access_token: str) -> tuple[str, str]:
    """Send ``body`` with a FHIR access token and a fresh client JWT; (the JWT, the path)."""
    body["fhirAuthorization"] = {"access_token": access_token, "token_type": "Bearer", "expires_in": 300,
                                 "scope": "patient/*.read", "subject": "spine-cds"}
    service = "spine-imaging-order-sign" if body["hook"] == "order-sign" else "spine-imaging-order-select"
    path = f"/cds-services/{service}"
    token = client_jwt(key, ISSUER, f"http://localhost{path}")
    assert client.post(path, json=body, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    return token, path


def test_a_full_run_logs_no_phi_or_tokens(make_app, caplog, key, jwks):
    app = make_app(SPINE_CDS_AUTH="on", SPINE_CDS_LOG_LEVEL="DEBUG",
                   SPINE_CDS_TRUSTED_ISSUERS=json.dumps({ISSUER: jwks.url + "/jwks.json"}))
    client, secrets, tokens = app.test_client(), set(), {ACCESS_TOKEN}
    caplog.set_level(logging.DEBUG)
    for body in sample_bodies():
        secrets |= patient_secrets(body["prefetch"]["patient"])
        token, path = post_signed(client, key, body, ACCESS_TOKEN)
        tokens.add(token)
    client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})  # a replay: logged as 401
    text = caplog.text
    assert "hook=order-select" in text and "authentication failed" in text  # the run did log
    leaked = [s for s in secrets | tokens if s in text]
    assert not leaked, f"found in logs: {leaked}"
    assert "eyJ" not in text  # no JWT of any kind
