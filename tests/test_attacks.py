"""Attacks on ``spine-cds serve`` as shipped (several workers), each reproduced end to end.

Issue #14, finding 1: SSRF through a backslash, with the EHR's token.  The guard used to read the
host with ``urlsplit`` while requests/urllib3 end the host at ``\\``: a ``fhirServer`` of
``https://127.0.0.1:PORT\\@8.8.8.8/fhir`` passed the guard (8.8.8.8 is public) and the searches,
bearer token and all, went to 127.0.0.1.  The same trick beat the same-host check on ``next``
links.  Listeners on loopback count who connects: after the call returns, a connection that was
going to happen has happened, so a count of 0 is conclusive.
"""
from __future__ import annotations

import copy
import socket
import threading
import urllib.error

import pytest

from cds_service.record.fhir_client import unambiguous
from ports import free_port
from served import post, served  # noqa: F401 (served: a fixture the tests take by name)
from test_shutdown import SELECT, sample

TOKEN = "secret-ehr-token-for-the-fhir-server"


class Listener:
    """A TCP listener that records every connection and the first bytes each one sends."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.sock = socket.socket()
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    self.received.append(conn.recv(4096))
                except OSError:
                    self.received.append(b"")

    @classmethod
    def on(cls, host: str, port: int) -> "Listener":
        return cls(host, port)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener():
    made = []

    def make(host: str = "127.0.0.1") -> Listener:
        made.append(Listener(host))
        return made[-1]
    yield make
    for each in made:
        each.close()


def _without_prefetch(fhir_server: str) -> dict:
    body = sample()
    body.pop("prefetch")
    body["fhirServer"] = fhir_server
    body["fhirAuthorization"] = {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                                 "scope": "patient/*.read", "subject": "spine-cds"}
    return body


def _status(url: str, body: dict) -> tuple[int, dict]:
    try:
        status, _, answer = post(url, body)
        return status, answer
    except urllib.error.HTTPError as exc:
        import json
        return exc.code, json.load(exc)


def test_a_backslash_in_fhir_server_is_refused_and_nothing_is_contacted(served, listener):
    app = served(workers=2)
    app.booted(2)
    target = listener()
    status, answer = _status(app.url + SELECT, _without_prefetch(f"https://127.0.0.1:{target.port}\\@8.8.8.8/fhir"))
    assert status == 400, answer
    assert "backslash" in answer["issue"][0]["diagnostics"]
    assert target.received == [], "the service connected to the loopback host hidden behind the backslash"


def test_userinfo_in_fhir_server_is_refused(served, listener):
    app = served(workers=2)
    app.booted(2)
    target = listener()
    status, _ = _status(app.url + SELECT, _without_prefetch(f"https://user:pw@127.0.0.1:{target.port}/fhir"))
    assert status == 400 and target.received == []


def test_a_next_link_with_a_backslash_is_not_followed_with_the_token(served, listener):
    """The EHR's own FHIR server (allowed) hands over a partial Bundle whose next link reads as
    the same host to urlsplit but as another host to urllib3: the token must not go there."""
    ehr, other = listener(), listener("127.0.0.2")
    base = f"http://127.0.0.1:{ehr.port}/fhir"
    app = served(workers=2, SPINE_CDS_ALLOWED_FHIR_SERVERS=base)
    app.booted(2)
    body = _without_prefetch(base)
    body["prefetch"] = copy.deepcopy(sample()["prefetch"])
    body["prefetch"]["conditions"]["link"] = [
        {"relation": "next", "url": f"http://127.0.0.2:{other.port}\\@127.0.0.1:{ehr.port}/fhir/Condition?page=2"}]
    status, answer = _status(app.url + SELECT, body)
    assert status == 200, answer
    assert not any(TOKEN.encode() in seen for seen in other.received), "the token went to another host"
    assert other.received == []


def test_the_audit_record_names_no_host_for_an_ambiguous_url():
    from cds_service.store.audit import fhir_origin
    assert fhir_origin("https://127.0.0.1:18083\\@8.8.8.8/fhir") is None
    assert fhir_origin("https://user@fhir.example.org/r4") == "https://fhir.example.org"   # credentials dropped
    assert fhir_origin("https://fhir.example.org:8443/r4?x=@y") == "https://fhir.example.org:8443"


@pytest.mark.parametrize("url, plain", [
    ("https://fhir.example.org/r4", True),
    ("https://fhir.example.org:8443/r4/", True),
    ("https://[2001:db8::1]:8443/fhir", True),
    ("https://fhir.example.org/r4?_format=json&x=@y", True),
    ("https://127.0.0.1:18083\\@8.8.8.8/fhir", False),
    ("https://user:pw@fhir.example.org/", False),
    ("https://fhir.example.org@evil.example/", False),
    ("https://fhir.example.org\t.evil/", False),
    ("https://fhir.example.org:99999/", False),
    ("https://fhir.example.org:8443\\/r4", False),
])
def test_only_urls_both_parsers_read_alike_are_plain(url, plain):
    assert unambiguous(url) is plain


def test_a_patient_id_that_is_not_a_fhir_id_is_refused_before_any_read(served, listener):
    """Finding 9: ``"demo-ana "`` used to be queried raw but cached trimmed, so one call could
    poison another patient's cache entry.  Now the id must be a FHIR id, used as given."""
    ehr = listener()
    base = f"http://127.0.0.1:{ehr.port}/fhir"
    app = served(workers=2, SPINE_CDS_ALLOWED_FHIR_SERVERS=base)
    app.booted(2)
    for bad in ("demo-ana ", " demo-ana", "demo ana", "demo-ana/_history", "x" * 65):
        body = _without_prefetch(base)
        body["context"]["patientId"] = bad
        status, answer = _status(app.url + SELECT, body)
        assert status == 400 and "FHIR resource id" in answer["issue"][0]["diagnostics"], bad
    assert ehr.received == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_that_is_not_sent_as_json_is_refused(served, content_type):
    """Finding 12: a ``text/plain`` body was parsed as JSON — the kind of request a browser sends
    across origins without a CORS preflight.  Now 415, on the real server."""
    import json
    import urllib.request
    app = served(workers=2)
    app.booted(2)
    headers = {"Content-Type": content_type} if content_type else {}
    request = urllib.request.Request(app.url + SELECT, data=json.dumps(sample()).encode(), method="POST", headers=headers)
    if content_type is None:
        request.remove_header("Content-type")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 415
    assert "application/json" in json.load(refused.value)["issue"][0]["diagnostics"]


def test_a_replayed_jwt_is_refused_by_every_worker(served, key, jwks):
    """Finding 2: the seen-jti cache lived in each process, so one token was accepted once per
    worker.  Now the store (shared by every worker) records each (iss, jti) atomically."""
    import json
    import urllib.request
    from jwt_helpers import client_jwt
    issuer = "https://ehr.example.org"
    app = served(workers=2, SPINE_CDS_AUTH="on", SPINE_CDS_TRUSTED_ISSUERS=json.dumps({issuer: jwks.url + "/jwks.json"}))
    app.wait_until("/health answers", lambda: _health(app.url) == 200)
    token = client_jwt(key, issuer, app.url + SELECT)
    statuses, workers = [], set()
    for n in range(60):   # keep-alive off: each call is a new connection; go on until both workers answered
        body = sample() | {"hookInstance": f"00000000-0000-4000-8000-{n:012d}"}
        request = urllib.request.Request(app.url + SELECT, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                statuses.append(response.status)
        except urllib.error.HTTPError as exc:
            statuses.append(exc.code)
        workers = {r["pid"] for r in app.records() if r.get("logger") == "cds_service.access" and r.get("status") in (200, 401)}
        if n >= 11 and len(workers) == 2:
            break
    assert statuses.count(200) == 1 and statuses.count(401) == len(statuses) - 1, statuses
    assert len(workers) == 2, "the calls should reach both workers for this test to mean anything"


def _health(url: str) -> int | None:
    import urllib.request
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as response:
            return response.status
    except OSError:
        return None


def test_health_reports_a_store_that_cannot_take_records(served, tmp_path):
    """Finding 12: /health said ok while every hook call failed on a full disk.  A full disk is
    made real here: the database sits on a tiny tmpfs filled to the brim (skipped without the
    privilege to mount one)."""
    import shutil
    mount = tiny_disk(tmp_path, "64m")
    try:
        app = served(workers=2, SPINE_CDS_DATABASE=str(mount / "spine-cds.sqlite3"))
        app.booted(2)
        assert _health(app.url) == 200
        with open(mount / "filler", "wb") as filler:   # take every byte the database could still use
            filler.write(b"\0" * shutil.disk_usage(mount).free)
        status, answer = _get_json(app.url + "/health")
        assert status == 503 and answer["status"] == "unavailable" and "free" in answer["store"]
    finally:
        unmount(mount)


def tiny_disk(tmp_path, size: str):
    """A real tmpfs of ``size`` mounted in ``tmp_path`` (skips without the privilege to mount)."""
    import os
    import subprocess
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    return mount


def unmount(mount) -> None:
    import subprocess
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _get_json(url: str) -> tuple[int, dict]:
    import json
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_a_second_server_on_a_taken_port_refuses_to_start(served, tmp_path):
    """Finding 13: SO_REUSEPORT let a second ``spine-cds serve`` (say, auth off) share the port of
    the first (auth on) and take every other call; a port held by another program was never
    reported.  Now both refuse to start, with one clear line."""
    import subprocess
    import sys
    first = served(workers=2, SPINE_CDS_AUTH="on")
    first.wait_until("/health answers", lambda: _health(first.url) == 200)
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen(1)
    try:
        for port in (first.port, other.getsockname()[1]):
            second = subprocess.run([sys.executable, "-m", "cds_service.tools.cli", "serve", "--port", str(port), "--workers", "1"],
                                    env={**__import__("os").environ, "SPINE_CDS_AUTH": "off",
                                         "SPINE_CDS_DATABASE": str(tmp_path / f"second-{port}.sqlite3")},
                                    capture_output=True, text=True, timeout=120)
            assert second.returncode == 2, second.stderr[-2000:]
            assert f"port {port} on 127.0.0.1 is already in use" in second.stderr
            assert "discovery at" not in second.stdout
        assert _health(first.url) == 200
    finally:
        other.close()


def test_codings_a_client_makes_up_cannot_grow_a_worker(registry):
    """Finding 6: the tagging memo and the code-normalisation cache were capped by entry count, so
    30 requests with 900 distinct long codings took a worker from 64 MB to 806 MB.  Now long
    codings are looked up but never memoised, and the memo has a budget in characters."""
    from cds_service.engine import tagging, terminology
    from cds_service.engine.tagging import Tagger
    tagger = Tagger(registry.terminology, registry.catalog, registry.regions)
    before = terminology._normalise.cache_info().currsize
    for n in range(3000):
        long_code = f"{n}-" + "x" * 4000
        assert tagger.tags({"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": long_code,
                                         "display": "y" * 4000}]}) is None
    assert tagger._memo == {} and tagger._chars == 0
    assert terminology._normalise.cache_info().currsize == before
    for n in range(60_000):   # many short made-up codes: memoised only within the character budget
        tagger.tags({"coding": [{"system": "urn:x", "code": f"{n:06d}" * 20, "display": "z" * 300}]})
    assert tagger._chars <= tagging.MEMO_CHARS and len(tagger._memo) < 60_000
    real = {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "M54.16"}]}
    assert "icd10-sct-lumbar-radiculopathy" in tagger.tags(real)[0]   # lookups still answer


def _call(url: str, token: str, n: int, timeout: float = 30) -> int:
    """One hook call with ``token``; its status (each call a new connection, any worker)."""
    import json
    import urllib.request
    body = sample() | {"hookInstance": f"00000000-0000-4000-8000-{n:012d}"}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_trickling_jwks_host_does_not_freeze_authentication(served, key):
    """Finding 4: one trusted JWKS host sending a byte a second plus forged tokens with unknown
    kids blocked valid calls for minutes (the per-URL lock was held during a download bounded
    only per socket read).  Here both workers are refreshing from a host that would trickle for
    two minutes while calls whose key is cached keep answering, and every download ends within
    its bound.  Without the fix the valid calls time out (10 s, against tens of milliseconds)."""
    import time
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt_helpers import TricklingJwks, client_jwt, public_jwk
    from cds_service.protocol.jwks import FETCH_DEADLINE_S, READ_TIMEOUT_S
    issuer = "https://ehr.example.org"
    host = TricklingJwks({"keys": [public_jwk(key, "k1", "ES384")]}, seconds=120)
    try:
        import json
        app = served(workers=2, SPINE_CDS_AUTH="on", SPINE_CDS_TRUSTED_ISSUERS=json.dumps({issuer: host.url}),
                     SPINE_CDS_JWKS_REFRESH_INTERVAL_S="1")   # the attacker's best case: a refresh whenever allowed
        app.wait_until("/health answers", lambda: _health(app.url) == 200)
        url = app.url + SELECT
        n = 0
        while len({r["pid"] for r in app.records() if r.get("logger") == "cds_service.access" and r.get("status") == 200}) < 2:
            n += 1
            assert n < 60, "the calls never reached both workers"
            assert _call(url, client_jwt(key, issuer, url), n) == 200   # both workers cache the key
        host.trickle()
        forger = ec.generate_private_key(ec.SECP384R1())
        forged: list[int] = []

        def forge() -> None:   # until both workers are downloading (refreshes are rate-limited)
            ends = time.monotonic() + 60
            while len(host.connections) < 2 and time.monotonic() < ends:
                forged.append(_call(url, client_jwt(forger, issuer, url, kid="forged"), 1000 + len(forged)))
                time.sleep(0.2)

        threads = [threading.Thread(target=forge) for _ in range(3)]
        for t in threads:
            t.start()
        app.wait_until("both workers refresh from the trickling host", lambda: len(host.connections) >= 2)
        answered_while_fetching = 0
        for m in range(6):
            assert _call(url, client_jwt(key, issuer, url), 2000 + m, timeout=10) == 200
            answered_while_fetching += host.open_now() > 0
        for t in threads:
            t.join(60)
        assert answered_while_fetching, "no valid call overlapped a download: the test proved nothing"
        assert forged and set(forged) == {401}
        app.wait_until("every download ended", lambda: host.open_now() == 0)
        bound = FETCH_DEADLINE_S + READ_TIMEOUT_S
        assert all(closed - opened < 3 * bound for opened, closed in host.connections), host.connections
    finally:
        host.close()


def test_a_self_hosted_sandbox_key_set_is_used_whatever_jku_the_token_names(served, key, jwks, listener):
    """Finding 14: the real sandbox always sends ``jku: https://sandbox.cds-hooks.org/...``; an
    operator who maps that issuer to a local copy of its keys got 401 on every call.  Now the
    configured URL decides and the token's jku is never fetched (here it names a listener that
    counts connections).  At start each configured JWKS is fetched once and one line per issuer
    says whether it is usable."""
    import json
    import time
    import uuid
    import jwt
    sandbox, broken = "https://sandbox.cds-hooks.org", "https://ehr.example.org"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    elsewhere = listener()
    app = served(workers=2, SPINE_CDS_AUTH="on", SPINE_CDS_TRUSTED_ISSUERS=json.dumps(
        {sandbox: jwks.url + "/jwks.json", broken: f"http://127.0.0.1:{closed_port}/jwks.json"}))
    app.wait_until("/health answers", lambda: _health(app.url) == 200)
    checks = [r for r in app.records() if r.get("event") == "jwks-check"]
    assert len(checks) == 2, checks
    by_issuer = {next(i for i in (sandbox, broken) if i in r["message"]): r for r in checks}
    assert "is usable (1 signing key(s))" in by_issuer[sandbox]["message"]
    assert "NOT usable" in by_issuer[broken]["message"] and by_issuer[broken]["level"] == "WARNING"
    assert sum(f"127.0.0.1:{closed_port}" in r["message"] for r in app.records()) == 1   # one line per issuer
    url = app.url + SELECT
    now = int(time.time())
    token = jwt.encode({"iss": sandbox, "aud": url, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}, key,
                       algorithm="ES384", headers={"kid": "k1", "jku": f"http://127.0.0.1:{elsewhere.port}/.well-known/jwks.json"})
    assert _call(url, token, 1) == 200
    assert elsewhere.received == [], "the token's jku was fetched"


def test_aud_does_not_follow_the_host_header(served, key, jwks):
    """Finding 5: with SPINE_CDS_PUBLIC_BASE_URL unset, aud was checked against the request URL,
    which the client's Host header makes: a token for ``http://other-cds.example/...`` sent with
    ``Host: other-cds.example`` was accepted, and X-Forwarded-* were trusted from any local peer.
    Now aud must name the server's own address (or a configured URL): 401, with a body that says
    what to do; the same call with a token for this server's address is accepted."""
    import json
    import urllib.request
    from jwt_helpers import client_jwt
    from cds_service.errors import AUTH_FAILED
    issuer = "https://ehr.example.org"
    app = served(workers=2, SPINE_CDS_AUTH="on", SPINE_CDS_TRUSTED_ISSUERS=json.dumps({issuer: jwks.url + "/jwks.json"}))
    app.wait_until("/health answers", lambda: _health(app.url) == 200)

    def call(aud: str, headers: dict, n: int) -> tuple[int, dict]:
        body = sample() | {"hookInstance": f"00000000-0000-4000-8000-{n:012d}"}
        request = urllib.request.Request(app.url + SELECT, data=json.dumps(body).encode(), method="POST", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {client_jwt(key, issuer, aud)}", **headers})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    other = "http://other-cds.example" + SELECT
    for n in range(4):   # several calls: both workers
        status, answer = call(other, {"Host": "other-cds.example"}, n)
        assert status == 401, answer
        assert answer["issue"][0]["diagnostics"] == AUTH_FAILED and "SPINE_CDS_PUBLIC_BASE_URL" in AUTH_FAILED
        status, _ = call("https://other-cds.example" + SELECT, {"Host": "other-cds.example", "X-Forwarded-Proto": "https",
                                                                "X-Forwarded-Host": "other-cds.example"}, 10 + n)
        assert status == 401
        assert call(app.url + SELECT, {"Host": "other-cds.example"}, 20 + n)[0] == 200
        assert call(f"http://localhost:{app.port}" + SELECT, {}, 30 + n)[0] == 200
    assert any("aud does not name" in r["message"] for r in app.records())


class Silent:
    """A FHIR server that accepts connections and never answers (every search runs to its timeout)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._hold, daemon=True).start()

    def _hold(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        for conn in self.held:
            conn.close()
        self.sock.close()


def test_the_deadline_counts_from_the_calls_arrival(served):
    """Finding 10: SPINE_CDS_DEADLINE_S counted from the start of data gathering, so a call that
    waited for a worker answered after 10.5 s.  Here one worker (two threads) gets six calls at
    once whose FHIR server never answers: each holds a thread for the whole deadline, so four
    wait.  Each answer must respect the deadline measured from arrival: a 200 whose record was
    gathered by arrival + deadline (the server's own log; a generous 1.5x for a busy machine),
    or a 503 with Retry-After when the wait alone used the deadline up.  Without the fix all six
    answer 200, the last about three deadlines after it arrived."""
    import json
    import re
    import urllib.request
    deadline = 1.5
    fhir = Silent()
    try:
        base = f"http://127.0.0.1:{fhir.port}/fhir"
        app = served(workers=1, SPINE_CDS_DEADLINE_S=str(deadline), SPINE_CDS_ALLOWED_FHIR_SERVERS=base)
        app.booted(1)
        answers: dict[int, tuple[int, dict, dict]] = {}

        def call(n: int) -> None:
            body = _without_prefetch(base) | {"hookInstance": f"00000000-0000-4000-8000-{n:012d}"}
            request = urllib.request.Request(app.url + SELECT, data=json.dumps(body).encode(), method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    answers[n] = (response.status, dict(response.headers), json.load(response))
            except urllib.error.HTTPError as exc:
                answers[n] = (exc.code, dict(exc.headers), json.load(exc))

        threads = [threading.Thread(target=call, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        statuses = sorted(status for status, _, _ in answers.values())
        assert len(answers) == 6 and set(statuses) <= {200, 503}, statuses
        shed = [(headers, body) for status, headers, body in answers.values() if status == 503]
        assert shed, f"no call was shed although four waited a whole deadline: {statuses}"
        for headers, body in shed:
            assert headers.get("Retry-After", "").isdigit(), headers
            assert "SPINE_CDS_DEADLINE_S" in body["issue"][0]["diagnostics"]
        after_arrival = [float(m.group(1)) for r in app.records()
                         if (m := re.search(r"\((\d+) ms after the call arrived\)", r["message"]))]
        assert len(after_arrival) == statuses.count(200)
        assert all(ms <= 1.5 * deadline * 1000 for ms in after_arrival), after_arrival
    finally:
        fhir.close()


def test_dns_rebinding_cannot_move_the_searches_after_the_check(make_app, monkeypatch):
    """Finding 8: the SSRF guard resolved the host, then requests resolved it again.  A name
    server answering a public address first and a loopback one next sent the searches, bearer
    token and all, to the loopback service.  Here the resolver answers 127.0.0.2 (which this
    test's guard counts as public) once, then 127.0.0.1: everything must go to 127.0.0.2, with
    the host name kept for TLS (its ClientHello names it), and nothing to 127.0.0.1.  In-process:
    the resolver is replaced with monkeypatch (no real DNS server needed)."""
    from cds_service.record import fhir_client
    name = "fhir.rebind.test"
    checked = Listener("127.0.0.2")
    try:
        rebound = Listener.on("127.0.0.1", checked.port)
    except OSError:
        checked.close()
        pytest.skip("the port is taken on 127.0.0.1")
    answers: list[str] = []
    real = socket.getaddrinfo

    def rebinding(host, port, *args, **kwargs):
        if host != name:
            return real(host, port, *args, **kwargs)
        answers.append("127.0.0.2" if not answers else "127.0.0.1")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[-1], port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setattr(fhir_client, "is_public_address", lambda address: address == "127.0.0.2")
    try:
        client = make_app(SPINE_CDS_FHIR_TIMEOUT_S="1").test_client()
        response = client.post(SELECT, json=_without_prefetch(f"https://{name}:{checked.port}/fhir"))
        assert response.status_code == 200, response.get_json()
        assert answers[:1] == ["127.0.0.2"]
        assert checked.received and any(name.encode() in hello for hello in checked.received)
        assert rebound.received == [], "a search went to the address of a second DNS answer"
    finally:
        checked.close()
        rebound.close()


def test_starting_on_a_full_disk_names_the_full_disk(tmp_path):
    """Finding 12: starting on a full disk blamed the database file ("cannot read … as a
    spine-cds database (database or disk is full); … move this one away").  Now one line names
    the disk and its free space and says what to do; exit 2.  The disk is a real, filled tmpfs
    (skipped without the privilege to mount one; the next test injects ENOSPC instead)."""
    import os
    import subprocess
    import sys
    mount = tiny_disk(tmp_path, "1m")
    try:
        with open(mount / "filler", "wb") as filler:
            try:
                filler.write(b"\0" * (2 << 20))
            except OSError:
                pass   # full
        for env in ({"SPINE_CDS_DATA_DIR": str(mount / "data")}, {"SPINE_CDS_DATABASE": str(mount / "db.sqlite3")}):
            started = subprocess.run([sys.executable, "-m", "cds_service.tools.cli", "serve", "--port", str(free_port()),
                                      "--workers", "1"], env={**os.environ, "SPINE_CDS_AUTH": "off", **env},
                                     capture_output=True, text=True, timeout=120)
            lines = [line for line in started.stderr.splitlines() if line.startswith("spine-cds:")]
            assert started.returncode == 2 and len(lines) == 1, started.stderr[-2000:]
            folder = mount / "data" if "SPINE_CDS_DATA_DIR" in env else mount
            assert lines[0].startswith(f"spine-cds: cannot start: no space left on the disk of {folder} (0.0 MiB free)")
            assert "Free some space" in lines[0] and "as a spine-cds database" not in lines[0]
    finally:
        unmount(mount)


def test_no_space_while_creating_the_store_is_reported_as_such(tmp_path, monkeypatch):
    """The same, without root: the kernel's ENOSPC injected where the store creates its file."""
    import errno
    import os
    from cds_service.errors import CdsNoSpace
    from cds_service.store import sqlite
    from cds_service.store.database import Store
    real_open = os.open

    def full(path, flags, mode=0o777, **kwargs):
        if flags & os.O_CREAT:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(sqlite.os, "open", full)
    with pytest.raises(CdsNoSpace) as refused:
        Store(str(tmp_path / "data" / "spine-cds.sqlite3"))
    assert f"no space left on the disk of {tmp_path / 'data'}" in refused.value.message
    assert "MiB free" in refused.value.message and refused.value.label == "cannot start"
