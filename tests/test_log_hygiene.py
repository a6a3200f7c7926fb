"""Logs of a full run hold no PHI, JWTs or access tokens.

Every bundled sample is sent through the service with a signed client JWT and a FHIR access
token, at DEBUG level, and the captured log text is scanned for the patients' identifiers,
names, birth dates and both tokens.
"""
from __future__ import annotations

import json
import logging
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from cds_service.cli import SAMPLES
from jwt_helpers import JwksServer, public_jwk

ISSUER = "https://ehr.example.org"
ACCESS_TOKEN = "fhir-access-token-" + uuid.uuid4().hex


def _samples():
    index = json.loads((SAMPLES / "index.json").read_text())
    return [json.loads((SAMPLES / s["file"]).read_text()) for s in index["samples"]]


def _secrets_of(body: dict) -> set[str]:
    patient = body["prefetch"]["patient"]
    found = {patient["id"], patient["birthDate"]}
    for name in patient.get("name", []):
        found |= set(name.get("given", [])) | {name.get("family", "")}
    return {s for s in found if s and len(s) > 3}


def test_a_full_run_logs_no_phi_or_tokens(make_app, caplog):
    key = ec.generate_private_key(ec.SECP384R1())
    with JwksServer() as server:
        server.jwks = {"keys": [public_jwk(key, "k1", "ES384")]}
        app = make_app(SPINE_CDS_AUTH="on", SPINE_CDS_LOG_LEVEL="DEBUG",
                       SPINE_CDS_TRUSTED_ISSUERS=json.dumps({ISSUER: server.url + "/jwks.json"}))
        client, secrets, tokens = app.test_client(), set(), {ACCESS_TOKEN}
        caplog.set_level(logging.DEBUG)
        for body in _samples():
            body["fhirAuthorization"] = {"access_token": ACCESS_TOKEN, "token_type": "Bearer", "expires_in": 300,
                                         "scope": "patient/*.read", "subject": "spine-cds"}
            service = "spine-imaging-order-sign" if body["hook"] == "order-sign" else "spine-imaging-order-select"
            path = f"/cds-services/{service}"
            now = int(time.time())
            token = jwt.encode({"iss": ISSUER, "aud": f"http://localhost{path}", "iat": now, "exp": now + 300,
                                "jti": str(uuid.uuid4())}, key, algorithm="ES384", headers={"kid": "k1"})
            tokens.add(token)
            secrets |= _secrets_of(body)
            assert client.post(path, json=body, headers={"Authorization": f"Bearer {token}"}).status_code == 200
        client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})  # a replay: logged as 401
    text = caplog.text
    assert "hook=order-select" in text and "authentication failed" in text  # the run did log
    leaked = [s for s in secrets | tokens if s in text]
    assert not leaked, f"found in logs: {leaked}"
    assert "eyJ" not in text  # no JWT of any kind
