"""Client authentication with real signed tokens and a real (local) JWKS server.

Keys are throwaway EC P-384 / RSA-2048 keys made per test session; the JWKS is served by a tiny
threaded ``http.server`` on 127.0.0.1 that counts the requests it receives, so the tests can
prove when we fetch keys — and, for untrusted issuers or foreign ``jku``s, that we do not.
The clock is injected, so expiry and cache tests never sleep.
"""
from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cds_service.protocol.audience import audiences
from cds_service.protocol.auth import ClientAuthenticator
from cds_service.protocol.jwks import FETCH_DEADLINE_S, READ_TIMEOUT_S, KeySets, fetch_jwks
from jwt_helpers import JwksServer, TricklingJwks, public_jwk
from cds_service.errors import AUTH_FAILED, CdsAuthError
from cds_service.runtime.settings import load_settings

ISS = "https://issuer.test"
SANDBOX_ISS = "https://sandbox.cds-hooks.org"
SANDBOX_KID = "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"
AUD = "https://cds.example.org/cds-services/spine-imaging"
T0 = 1_700_000_000.0


class Clock:
    """A settable clock: tests move ``now`` instead of sleeping."""

    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="session")
def ec_key():
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="session")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def server(ec_key, rsa_key):
    with JwksServer() as srv:
        srv.jwks = {"keys": [public_jwk(ec_key, "ec-1", "ES384"), public_jwk(rsa_key, "rsa-1", "RS384"),
                             public_jwk(ec_key, SANDBOX_KID, "ES384")]}
        yield srv


@pytest.fixture
def jwks_url(server):
    return server.url + "/jwks.json"


@pytest.fixture
def sandbox_jwks_url(server):
    return server.url + "/sandbox/.well-known/jwks.json"


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def make_auth(clock):
    """Build authenticators on the test's settable clock."""

    def make(issuers: dict, **extra):
        settings = load_settings({"SPINE_CDS_TRUSTED_ISSUERS": issuers, "SPINE_CDS_JWT_LEEWAY_S": "5",
                                  "SPINE_CDS_JWT_MAX_AGE_S": "3600", "SPINE_CDS_JWKS_CACHE_TTL_S": "3600",
                                  **extra})
        return ClientAuthenticator(settings, clock=clock)

    return make


@pytest.fixture
def auth(make_auth, jwks_url, sandbox_jwks_url):
    return make_auth({ISS: jwks_url, SANDBOX_ISS: sandbox_jwks_url})


MINTED: list[str] = []


@pytest.fixture(autouse=True)
def _no_token_in_logs(caplog):
    """Whatever a test does, no log line may contain a token it minted."""
    MINTED.clear()
    caplog.set_level(logging.DEBUG)
    yield
    text = caplog.text
    assert not any(token in text for token in MINTED)


@pytest.fixture
def mint(clock, ec_key, rsa_key):
    """Sign a token: ES384 with ec-1 by default; ``drop``/``claims``/``headers`` adjust it."""

    def make(alg="ES384", kid="ec-1", key=None, drop=(), headers=None, **claims):
        payload = {"iss": ISS, "aud": AUD, "iat": int(clock.now), "exp": int(clock.now) + 300,
                   "jti": uuid.uuid4().hex, **claims}
        for name in drop:
            payload.pop(name, None)
        key = key if key is not None else (ec_key if alg.startswith("ES") else rsa_key)
        headers = {"kid": kid, **(headers or {})} if kid is not None else headers
        token = jwt.encode(payload, key, algorithm=alg, headers=headers)
        MINTED.append(token)
        return token

    return make


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def reject(auth, token: str | None, audience: str = AUD, *, header: str | None = None) -> str:
    """Assert the token is refused; return the log reason, checked to not leak the token."""
    authorization = header if header is not None else (f"Bearer {token}" if token else None)
    with pytest.raises(CdsAuthError) as info:
        auth.verify(authorization, audience)
    exc = info.value
    assert exc.status == 401 and exc.message == AUTH_FAILED
    if token:
        assert token not in exc.reason and token not in str(exc)
        for part in token.split("."):
            assert len(part) < 8 or part not in exc.reason
    return exc.reason


# --- accepted tokens ---------------------------------------------------------------------------

def test_es384_accepted(auth, mint, server):
    claims = auth.verify(f"Bearer {mint()}", AUD)
    assert claims["iss"] == ISS and claims["aud"] == AUD
    assert server.requests == 1


def test_rs384_accepted(auth, mint):
    assert auth.verify(f"Bearer {mint(alg='RS384', kid='rsa-1')}", AUD)["iss"] == ISS


def test_aud_as_one_element_list_accepted(auth, mint):
    assert auth.verify(f"Bearer {mint(aud=[AUD])}", AUD)["aud"] == [AUD]


def test_aud_trailing_slash_tolerated_and_scheme_case_insensitive(auth, mint):
    assert auth.verify(f"bearer {mint(aud=AUD + '/')}", AUD)
    assert auth.verify(f"Bearer {mint()}", AUD + "/")


def test_typ_case_insensitive_and_optional(auth, mint):
    assert auth.verify(f"Bearer {mint(headers={'typ': 'jwt'})}", AUD)
    token = mint(headers={"typ": None})  # PyJWT drops a typ of None
    assert "typ" not in jwt.get_unverified_header(token)
    assert auth.verify(f"Bearer {token}", AUD)


def test_sandbox_shaped_token_accepted(auth, mint, clock, sandbox_jwks_url):
    """ES384, kid/jku as the public sandbox sends them, iat 0.5 s ahead, exp = iat + 300, tenant."""
    iat = clock.now + 0.5
    token = mint(kid=SANDBOX_KID, headers={"jku": sandbox_jwks_url}, iss=SANDBOX_ISS, iat=iat,
                 exp=iat + 300, tenant="2ddd6c3a-8e9a-44c6-a305-52111ad302a2")
    claims = auth.verify(f"Bearer {token}", AUD)
    assert claims["iss"] == SANDBOX_ISS and claims["tenant"]


def test_leeway_on_exp(auth, mint, clock):
    token = mint(exp=int(clock.now) - 2)
    assert auth.verify(f"Bearer {token}", AUD)


# --- malformed requests ------------------------------------------------------------------------

def test_missing_header(auth, server):
    assert reject(auth, None) == "no Authorization header"
    assert server.requests == 0


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "Token abc"])
def test_not_bearer(auth, header):
    assert "Bearer" in reject(auth, None, header=header)


@pytest.mark.parametrize("garbage", ["not.a.jwt", "abc", "a.b.c.d", "..", "eyJhbGciOiJFUzM4NCJ9.e30"])
def test_garbage_token(auth, garbage, server):
    reject(auth, garbage)
    assert server.requests == 0


# --- algorithm and header rules (checked before any key work) -----------------------------------

def test_alg_none_refused(auth, server, clock):
    payload = {"iss": ISS, "aud": AUD, "iat": clock.now, "exp": clock.now + 300, "jti": "n1"}
    for alg in ("none", "None", "NONE"):
        token = f"{_b64({'alg': alg, 'typ': 'JWT', 'kid': 'ec-1'})}.{_b64(payload)}."
        MINTED.append(token)
        assert reject(auth, token) == "alg is not ES384 or RS384"
    assert server.requests == 0


def test_hs256_refused(auth, mint, server):
    token = mint(alg="HS256", key=b"s3cret-" * 10)
    assert reject(auth, token) == "alg is not ES384 or RS384"
    assert server.requests == 0


@pytest.mark.parametrize("alg", ["ES256", "RS256", "PS384", "ES512"])
def test_other_asymmetric_algs_refused(auth, mint, server, alg):
    key = {"ES256": ec.generate_private_key(ec.SECP256R1()),
           "ES512": ec.generate_private_key(ec.SECP521R1())}.get(alg)
    assert reject(auth, mint(alg=alg, key=key)) == "alg is not ES384 or RS384"
    assert server.requests == 0


def test_header_alg_must_match_key(auth, mint, rsa_key):
    """An RS384 token naming the EC key's kid cannot be verified with it."""
    reject(auth, mint(alg="RS384", kid="ec-1", key=rsa_key))


def test_typ_other_than_jwt_refused(auth, mint):
    assert reject(auth, mint(headers={"typ": "at+jwt"})) == "typ is not JWT"


def test_kid_missing_refused(auth, mint, server):
    token = mint(kid=None)
    assert reject(auth, token) == "kid missing"
    assert server.requests == 0


# --- claims ------------------------------------------------------------------------------------

def test_wrong_aud_refused(auth, mint):
    assert "aud" in reject(auth, mint(aud="https://cds.example.org/cds-services"))
    assert "aud" in reject(auth, mint(aud=[]))
    assert "aud" in reject(auth, mint(), AUD + "/feedback")


def test_expired_refused(auth, mint, clock):
    token = mint()
    clock.now += 300 + 6
    assert reject(auth, token) == "token expired"


def test_iat_in_future_beyond_leeway_refused(auth, mint, clock):
    assert reject(auth, mint(iat=clock.now + 60)) == "token issued in the future"


def test_iat_too_old_refused(auth, mint, clock):
    assert reject(auth, mint(iat=clock.now - 3601, exp=clock.now + 300)) == "token too old (iat)"


@pytest.mark.parametrize("claim", ["iss", "aud", "exp", "iat", "jti"])
def test_required_claim_missing(auth, mint, claim):
    reject(auth, mint(drop=[claim]))


@pytest.mark.parametrize("claims", [{"exp": "soon"}, {"iat": True}, {"jti": ""}, {"aud": 5},
                                    {"aud": [AUD, 5]}, {"exp": float("nan")}, {"iat": float("nan")},
                                    {"exp": float("inf")}, {"nbf": T0 + 60}])
def test_claim_of_wrong_type_or_value_refused(auth, mint, claims):
    reject(auth, mint(**claims))


def test_replayed_jti_refused(auth, mint):
    token = mint()
    auth.verify(f"Bearer {token}", AUD)
    assert reject(auth, token) == "jti replayed"
    assert reject(auth, mint(jti=jwt.decode(token, options={"verify_signature": False})["jti"])) == "jti replayed"


def test_replay_refused_under_concurrency(auth, mint):
    token = mint()
    auth.verify(f"Bearer {mint()}", AUD)  # warm the key cache
    results = []

    def call():
        try:
            auth.verify(f"Bearer {token}", AUD)
            results.append("ok")
        except CdsAuthError as exc:
            results.append(exc.reason)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 1 and results.count("jti replayed") == 7


def test_same_jti_from_another_issuer_is_not_a_replay(auth, mint):
    auth.verify(f"Bearer {mint(jti='same')}", AUD)
    assert auth.verify(f"Bearer {mint(jti='same', iss=SANDBOX_ISS)}", AUD)


# --- trust: issuers, jku, keys -----------------------------------------------------------------

def test_untrusted_iss_refused_without_fetch(auth, mint, server):
    assert reject(auth, mint(iss="https://evil.test")) == "iss missing or not trusted"
    assert reject(auth, mint(iss="https://evil.test", headers={"jku": server.url + "/jwks.json"}))
    assert server.requests == 0


def test_foreign_jku_is_ignored_never_fetched(auth, mint, server, ec_key):
    """Finding 14: the configured JWKS URL decides; a token's other jku is never fetched.  A token
    signed with a trusted key is accepted whatever jku it names; one signed with the attacker's
    key (published at its jku) is refused, and the attacker's host is never contacted."""
    attacker = ec.generate_private_key(ec.SECP384R1())
    with socket.socket() as evil:
        evil.bind(("127.0.0.1", 0))
        evil.listen(8)
        evil.setblocking(False)
        evil_url = f"http://127.0.0.1:{evil.getsockname()[1]}/evil.json"
        for jku in (evil_url, server.url + "/evil/jwks.json", server.url + "/jwks.json/"):
            assert auth.verify(f"Bearer {mint(headers={'jku': jku})}", AUD)["iss"] == ISS
            assert reject(auth, mint(headers={"jku": jku}, key=attacker)).startswith("token rejected")
        with pytest.raises(BlockingIOError):
            evil.accept()  # nobody connected
    assert server.requests == 1   # the configured URL, once


def test_jku_equal_to_trusted_url_accepted(auth, mint, jwks_url):
    assert auth.verify(f"Bearer {mint(headers={'jku': jwks_url})}", AUD)


def test_unknown_kid_refreshes_once_then_refused(auth, mint, server, clock):
    auth.verify(f"Bearer {mint()}", AUD)
    assert server.requests == 1
    clock.now += 11
    assert reject(auth, mint(kid="unknown")) == "kid not in the issuer's JWKS"
    assert server.requests == 2
    for _ in range(5):  # a flood of unknown kids does not hammer the JWKS host
        reject(auth, mint(kid="unknown"))
    assert server.requests == 2


def test_unknown_kid_on_cold_cache_fetches_once(auth, mint, server):
    reject(auth, mint(kid="unknown"))
    assert server.requests == 1


def test_key_rotation(auth, mint, server, clock):
    auth.verify(f"Bearer {mint()}", AUD)
    new_key = ec.generate_private_key(ec.SECP384R1())
    server.jwks = {"keys": [public_jwk(new_key, "ec-2", "ES384")]}
    clock.now += 11
    assert auth.verify(f"Bearer {mint(kid='ec-2', key=new_key)}", AUD)
    assert server.requests == 2
    assert reject(auth, mint()) == "kid not in the issuer's JWKS"  # the withdrawn key is gone
    assert server.requests == 2


def test_jwks_cache_expires(auth, mint, server, clock):
    auth.verify(f"Bearer {mint()}", AUD)
    clock.now += 100
    auth.verify(f"Bearer {mint()}", AUD)
    assert server.requests == 1
    clock.now += 3600
    auth.verify(f"Bearer {mint()}", AUD)
    assert server.requests == 2


def test_jwks_server_down_is_an_auth_error(make_auth, mint):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    auth = make_auth({ISS: f"http://127.0.0.1:{port}/jwks.json"})
    assert reject(auth, mint()) == "the issuer's JWKS is unavailable"


def test_jwks_server_error_is_rate_limited(auth, mint, server, clock):
    server.status = 503
    for _ in range(3):
        assert reject(auth, mint()) == "the issuer's JWKS is unavailable"
    assert server.requests == 1
    server.status = 200
    clock.now += 11
    assert auth.verify(f"Bearer {mint()}", AUD)
    assert server.requests == 2


def test_refresh_interval_is_a_setting(make_auth, mint, server, clock, jwks_url):
    auth = make_auth({ISS: jwks_url}, SPINE_CDS_JWKS_REFRESH_INTERVAL_S="60")
    auth.verify(f"Bearer {mint()}", AUD)
    clock.now += 11
    reject(auth, mint(kid="unknown"))
    assert server.requests == 1
    clock.now += 50
    reject(auth, mint(kid="unknown"))
    assert server.requests == 2


@pytest.mark.parametrize("headers_too", [False, True])
def test_a_trickling_jwks_host_is_cut_at_the_bound(ec_key, headers_too):
    """Finding 4: the timeout applied to each socket read, so a host sending a byte a second held
    the fetch (and the lock) for as long as it liked.  Now the whole download has a wall-clock
    bound, also when the status line and headers trickle.  The trickle would last 60 s."""
    host = TricklingJwks({"keys": [public_jwk(ec_key, "ec-1", "ES384")]}, seconds=60)
    host.trickle(headers_too=headers_too)
    try:
        assert fetch_jwks(host.url) is None
        for _ in range(50):
            if host.connections and host.connections[0][1] is not None:
                break
            threading.Event().wait(0.1)
        opened, closed = host.connections[0]
        assert closed is not None and closed - opened < 3 * (FETCH_DEADLINE_S + READ_TIMEOUT_S), (opened, closed)
    finally:
        host.close()


def test_a_cached_key_never_waits_for_a_refresh(clock):
    """Finding 4: the per-URL lock was held during a fetch, also for calls whose key was cached.
    Now a refresh in flight never makes another call wait, and starts no second fetch."""
    started, release, fetched = threading.Event(), threading.Event(), []
    keys = {"k": {"kid": "k", "kty": "EC"}}

    def fetch(url):
        fetched.append(url)
        if len(fetched) > 1:
            started.set()
            release.wait(30)
        return keys

    sets = KeySets({"u"}, ttl=3600, refresh_interval=10, clock=clock, fetch=fetch)
    assert sets.get("u") == keys
    clock.now += 11
    refresher = threading.Thread(target=sets.get, args=("u",), kwargs={"unknown_kid": True})
    refresher.start()
    try:
        assert started.wait(5)
        answers = []
        clock.now += 11   # past the rate limit too: only the lock in flight could hold us
        reader = threading.Thread(target=lambda: answers.extend(
            [sets.get("u"), sets.get("u", unknown_kid=True), sets.get("u", unknown_kid=True)]))
        reader.start()
        reader.join(5)
        assert not reader.is_alive(), "a call whose key is cached waited for the refresh"
        assert answers == [keys, keys, keys] and len(fetched) == 2
    finally:
        release.set()
        refresher.join(5)


def test_jwks_that_is_not_a_key_set(auth, mint, server):
    server.jwks = {"keys": "nope"}
    assert reject(auth, mint()) == "the issuer's JWKS is unavailable"


def test_symmetric_key_in_jwks_is_ignored(auth, mint, server):
    server.jwks = {"keys": [{"kty": "oct", "kid": "ec-1", "k": _b64({"x": 1})}]}
    assert reject(auth, mint()) == "kid not in the issuer's JWKS"


def test_tampered_signature_refused(auth, mint):
    head, body, sig = mint().split(".")
    other = mint(aud="https://other.example")
    token = f"{head}.{other.split('.')[1]}.{sig}"
    MINTED.append(token)
    assert reject(auth, token).startswith("token rejected")


# --- audiences (finding 5) ----------------------------------------------------------------------

class _Sock:
    def __init__(self, local):
        self.local = local

    def getsockname(self):
        return self.local


def test_aud_is_checked_against_the_servers_own_address_never_the_host_header():
    environ = {"gunicorn.socket": _Sock(("127.0.0.1", 8080)), "HTTP_HOST": "other-cds.example",
               "SERVER_NAME": "other-cds.example", "SERVER_PORT": "80", "wsgi.url_scheme": "https"}
    found = audiences(environ, "/cds-services/x", "", ())
    assert "http://127.0.0.1:8080/cds-services/x" in found and "http://localhost:8080/cds-services/x" in found
    assert not any("other-cds.example" in url or url.startswith("https") for url in found)


def test_a_configured_public_url_is_the_only_audience():
    environ = {"gunicorn.socket": _Sock(("10.0.0.5", 8000))}
    assert audiences(environ, "/cds-services/x", "https://cds.example.org/spine/", ()) == (
        "https://cds.example.org/spine/cds-services/x",)


def test_forwarding_headers_count_only_from_a_trusted_proxy():
    environ = {"gunicorn.socket": _Sock(("10.0.0.5", 8000)), "REMOTE_ADDR": "10.0.0.9",
               "HTTP_X_FORWARDED_HOST": "cds.example.org", "HTTP_X_FORWARDED_PROTO": "https"}
    assert "https://cds.example.org/x" not in audiences(environ, "/x", "", ())
    assert "https://cds.example.org/x" not in audiences(environ, "/x", "", ("10.0.1.0/24",))
    assert "https://cds.example.org/x" in audiences(environ, "/x", "", ("10.0.0.0/24",))
    environ["HTTP_X_FORWARDED_HOST"] = "evil.example/@x"
    assert not any("evil" in url for url in audiences(environ, "/x", "", ("10.0.0.9",)))


def test_without_gunicorn_the_configured_server_name_counts():
    environ = {"SERVER_NAME": "localhost", "SERVER_PORT": "80", "wsgi.url_scheme": "http"}
    assert audiences(environ, "/x", "", ()) == ("http://localhost/x", "http://localhost:80/x")
