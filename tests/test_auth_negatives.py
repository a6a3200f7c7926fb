"""Digest checks 9-17 (CDS Hooks 2.0 client JWTs) end to end: every negative is a bare 401 over HTTP
and never makes the service reach out to a URL the token names.

test_auth.py proves each rule on ClientAuthenticator with an injected clock.  Here the same
negatives go through the Flask app with the real clock, and every URL an attacker could put in a
token (``jku``) points at a listener that counts the connections it receives, or at a host name
whose DNS lookup is recorded, so "no outbound fetch" is observed rather than assumed.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
import uuid
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cds_service import close_app
from cds_service import create_app
from cds_service.errors import AUTH_FAILED
from jwt_helpers import JwksServer, public_jwk

ISSUER = "https://ehr.example.org"
SELECT = "/cds-services/spine-imaging-order-select"
AUD = f"http://localhost{SELECT}"
BODY = json.loads((Path(__file__).resolve().parent.parent / "cds_service" / "samples"
                   / "radiculopathy-conservative-care-failed.json").read_text())


@pytest.fixture(scope="module")
def jwks(key):
    with JwksServer() as server:
        server.jwks = {"keys": [public_jwk(key, "k1", "ES384")]}
        yield server


@pytest.fixture(scope="module")
def evil():
    """A listener standing in for an attacker's JWKS host; :func:`connections` counts who called."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.setblocking(False)
        yield listener


def connections(listener: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


@pytest.fixture(scope="module")
def client(jwks):
    app = create_app({"SPINE_CDS_DATABASE": ":memory:", "SPINE_CDS_AUTH": "on", "SPINE_CDS_TODAY": "2026-11-22",
                      "SPINE_CDS_TRUSTED_ISSUERS": json.dumps({ISSUER: jwks.url + "/jwks.json"})})
    yield app.test_client()
    close_app(app)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(drop=(), **claims) -> dict:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUD, "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex, **claims}
    return {k: v for k, v in payload.items() if k not in drop}


def _unsigned(header: dict, claims: dict, secret: bytes | None = None) -> str:
    """A token built by hand (PyJWT refuses to make these): HS256 over ``secret``, else no signature."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = _b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()) if secret else ""
    return f"{signing_input}.{signature}"


def tokens(key, evil_url: str) -> dict:
    """Digest check -> a token that must be refused (built lazily: each gets a fresh jti and clock)."""
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    sign = lambda claims, **headers: jwt.encode(claims, key, algorithm="ES384", headers={"kid": "k1", **headers})  # noqa: E731
    return {
        "10 alg none": lambda: _unsigned({"alg": "none", "typ": "JWT", "kid": "k1"}, _claims()),
        "10 HS256 with a shared secret": lambda: _unsigned({"alg": "HS256", "kid": "k1"}, _claims(), b"secret" * 8),
        "10 HS256 keyed with the issuer's public key (alg confusion)": lambda: _unsigned({"alg": "HS256", "kid": "k1"}, _claims(), public_pem),
        "11 aud of another endpoint": lambda: sign(_claims(aud="http://localhost/cds-services")),
        "12 expired": lambda: sign(_claims(iat=int(time.time()) - 900, exp=int(time.time()) - 600)),
        **{f"12 no {claim}": (lambda claim=claim: sign(_claims(drop=(claim,)))) for claim in ("iss", "aud", "exp", "iat", "jti")},
        "12 no alg in the header": lambda: _unsigned({"typ": "JWT", "kid": "k1"}, _claims(), b"x"),
        "12 alg of another type": lambda: _unsigned({"alg": ["ES384"], "kid": "k1"}, _claims()),
        "12 no kid": lambda: jwt.encode(_claims(), key, algorithm="ES384"),
        "12 typ not JWT": lambda: sign(_claims(), typ="at+jwt"),
        "14 untrusted iss with its own jku": lambda: sign(_claims(iss="https://evil.example"), jku=evil_url),
        # A foreign jku is ignored (finding 14): the attacker's key it would publish never counts.
        "14 trusted iss, foreign jku, the attacker's key": lambda: jwt.encode(
            _claims(), ATTACKER, algorithm="ES384", headers={"kid": "k1", "jku": evil_url}),
        "14 trusted iss, jku on a host name, the attacker's key": lambda: jwt.encode(
            _claims(), ATTACKER, algorithm="ES384", headers={"kid": "k1", "jku": "https://evil.example/jwks.json"}),
        "15 unknown kid": lambda: jwt.encode(_claims(), key, algorithm="ES384", headers={"kid": "unknown"}),
        "signed by another key": lambda: jwt.encode(_claims(), ec.generate_private_key(ec.SECP384R1()), algorithm="ES384",
                                                    headers={"kid": "k1"}),
    }


ATTACKER = ec.generate_private_key(ec.SECP384R1())
CASES = sorted(tokens(ec.generate_private_key(ec.SECP384R1()), "http://x"))


@pytest.fixture
def looked_up(monkeypatch):
    """Host names the service tries to resolve during the test."""
    hosts: list[str] = []
    guarded = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: (hosts.append(host), guarded(host, *a, **k))[1])
    return hosts


def assert_bare_401(response) -> None:
    """Check 9: a 401 that says nothing about why."""
    assert response.status_code == 401, response.get_json()
    assert response.get_json() == {"resourceType": "OperationOutcome",
                                   "issue": [{"severity": "error", "code": "login", "diagnostics": AUTH_FAILED}]}


def test_9_no_token_is_a_bare_401(client):
    assert_bare_401(client.post(SELECT, json=BODY))


@pytest.mark.parametrize("case", CASES)
def test_refused_with_a_bare_401_and_no_call_to_a_url_the_token_names(client, key, jwks, evil, looked_up, case):
    evil_url = f"http://127.0.0.1:{evil.getsockname()[1]}/jwks.json"
    token = tokens(key, evil_url)[case]()
    fetched_before = jwks.requests
    assert_bare_401(client.post(SELECT, json=BODY, headers={"Authorization": f"Bearer {token}"}))
    assert connections(evil) == 0
    assert "evil.example" not in looked_up
    assert jwks.requests - fetched_before <= 1  # at most one refresh, from the trusted URL only


def test_13_replayed_jti_is_refused_after_one_success(client, key):
    token = jwt.encode(_claims(), key, algorithm="ES384", headers={"kid": "k1"})
    assert client.post(SELECT, json=BODY, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert_bare_401(client.post(SELECT, json=BODY, headers={"Authorization": f"Bearer {token}"}))


def test_14_a_foreign_jku_is_ignored_never_fetched(client, key, evil, looked_up):
    """The configured JWKS decides: a token signed by the trusted key is accepted whatever jku it
    names, and that jku is never contacted (the sandbox always names its public one)."""
    for jku in (f"http://127.0.0.1:{evil.getsockname()[1]}/jwks.json", "https://evil.example/jwks.json"):
        token = jwt.encode(_claims(), key, algorithm="ES384", headers={"kid": "k1", "jku": jku})
        assert client.post(SELECT, json=BODY, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert connections(evil) == 0 and "evil.example" not in looked_up


@pytest.mark.parametrize("aud", [AUD, [AUD]])
def test_11_a_valid_token_with_aud_as_string_or_list_is_accepted_so_the_refusals_mean_something(client, key, aud):
    token = jwt.encode(_claims(aud=aud), key, algorithm="ES384", headers={"kid": "k1", "typ": "JWT"})
    assert client.post(SELECT, json=BODY, headers={"Authorization": f"Bearer {token}"}).status_code == 200
