"""State that must hold across the workers of ``spine-cds serve`` (issue #14, findings 7 and 11),
each reproduced against a real two-worker server.

Every call here opens a new connection (urllib, no keep-alive), so the kernel spreads calls over
both workers' SO_REUSEPORT sockets; a test that needs both workers to have answered keeps
calling until they have, and says so if they never did.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request

from fhir_stub import FhirStub, resources_in, without_prefetch
from served import post, served  # noqa: F401 (served: a fixture the tests take by name)
from test_shutdown import SELECT, sample

TOKEN = "ehr-token-finding-7"
MAX_CALLS = 40   # enough for two workers to both answer, by any reasonable spread


def test_a_repeated_order_select_reads_the_fhir_server_once_whichever_worker_answers(served):
    """Finding 7: the patient-data cache lived in each worker, so a repeated order-select made 0
    FHIR calls only when it landed on the worker that had read the record (4 of 6 went back to
    the FHIR server).  Now the default cache is on disk, shared by the host's workers."""
    body = sample()
    with FhirStub(token=TOKEN) as fhir:
        fhir.add(*resources_in(body["prefetch"]))
        app = served(workers=2, SPINE_CDS_ALLOWED_FHIR_SERVERS=fhir.url)
        app.booted(2)
        call = without_prefetch(body, fhir.url, TOKEN)
        pids, rounds = set(), []
        for n in range(MAX_CALLS):
            instance = f"00000000-0000-4000-8007-{n:012d}"
            status, _, answer = post(app.url + SELECT, call | {"hookInstance": instance})
            assert status == 200 and answer["cards"], answer
            pids.add(app.pid_of(instance))
            rounds.append(len(fhir.requests))
            if n >= 5 and len(pids) == 2:
                break
        assert len(pids) == 2, "every call landed on one worker: the test proves nothing"
        first_round = rounds[0]
        assert first_round > 0
        assert len(fhir.requests) == first_round, (
            f"{len(rounds)} order-selects made {len(fhir.requests)} FHIR requests, one round is {first_round}: "
            f"requests after each call {rounds}")


def _call(url: str, body: dict, token: str | None = None) -> tuple[int, dict | str]:
    """POST JSON (or GET when body is None); the status and the parsed answer, errors included."""
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read().decode()
            return response.status, json.loads(text) if "json" in response.headers["Content-Type"] else text
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def _up(url: str) -> bool:
    try:
        return _call(url + "/health", None)[0] == 200
    except OSError:
        return False


def _sign(select: dict, instance: str) -> dict:
    """The order-sign of the same (unchanged) order an order-select showed."""
    context = {k: v for k, v in select["context"].items() if k != "selections"}
    return {**select, "hook": "order-sign", "hookInstance": instance, "context": context}


def _as_user(body: dict, user: str, instance: str) -> dict:
    return {**body, "hookInstance": instance, "context": {**body["context"], "userId": user}}


SIGN = "/cds-services/spine-imaging-order-sign"


def test_another_users_order_select_never_hides_the_card_a_user_signs(served):
    """Finding 11: the "already shown" fingerprint ignored who was shown the card, so user B's
    order-select for the same order left user A's order-sign without its card."""
    app = served(workers=2)
    app.booted(2)
    select = sample()
    status, _ = _call(app.url + SELECT, _as_user(select, "Practitioner/user-b", "00000000-0000-4000-8011-000000000001"))
    assert status == 200
    status, signed = _call(app.url + SIGN, _as_user(_sign(select, "x"), "Practitioner/user-a",
                                                    "00000000-0000-4000-8011-000000000002"))
    assert status == 200 and len(signed["cards"]) == 1, "user B's order-select hid user A's card"
    # The same user signing what they were just shown is not nagged twice (the feature still works).
    _call(app.url + SELECT, _as_user(select, "Practitioner/user-a", "00000000-0000-4000-8011-000000000003"))
    status, again = _call(app.url + SIGN, _as_user(_sign(select, "x"), "Practitioner/user-a",
                                                   "00000000-0000-4000-8011-000000000004"))
    assert status == 200 and again["cards"] == []


def test_feedback_is_taken_only_for_cards_issued_to_the_caller(served, key, jwks, tmp_path):
    """Finding 11: feedback was stored for card uuids never issued (104 such rows in one run) and
    for other clients' cards, so any client could skew /report.  Now a card is bound to the
    issuer it was issued to; feedback for anything else is a 422 and stored nowhere."""
    import sqlite3
    import uuid
    from jwt_helpers import client_jwt
    ours, theirs = "https://ehr.example.org", "https://other-ehr.example.org"
    trusted = {ours: jwks.url + "/jwks.json", theirs: jwks.url + "/jwks.json"}
    app = served(workers=2, SPINE_CDS_AUTH="on", SPINE_CDS_TRUSTED_ISSUERS=json.dumps(trusted))
    app.wait_until("/health answers", lambda: _up(app.url))
    feedback_url = app.url + SELECT + "/feedback"
    status, answer = _call(app.url + SELECT, sample(), client_jwt(key, ours, app.url + SELECT))
    assert status == 200, answer
    card = answer["cards"][0]["uuid"]
    item = {"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-22T10:00:00Z",
            "overrideReason": {"userComment": "seen"}}

    status, refused = _call(feedback_url, {"feedback": [item | {"card": str(uuid.uuid4())}]},
                            client_jwt(key, ours, feedback_url))
    assert status == 422 and refused["resourceType"] == "OperationOutcome"
    assert "is not a card this service" in refused["issue"][0]["diagnostics"]
    status, foreign = _call(feedback_url, {"feedback": [item]}, client_jwt(key, theirs, feedback_url))
    assert status == 422, "another issuer's feedback was taken for our card"
    status, taken = _call(feedback_url, {"feedback": [item]}, client_jwt(key, ours, feedback_url))
    assert (status, taken) == (200, {"received": 1, "stored": 1})

    with sqlite3.connect(tmp_path / "served.sqlite3") as db:
        assert db.execute("SELECT card_uuid, issuer FROM feedback").fetchall() == [(card, ours)]
    status, page = _call(app.url + "/report", None, client_jwt(key, ours, app.url + "/report"))
    assert status == 200 and "no stored decision" not in page


class SlowClients:
    """Connections that send a request one header line every 2 s and never finish it (slow loris);
    every other one sends its headers whole and then trickles its body a byte every 2 s.  Each
    comes back on a new connection when the server hangs up, until :meth:`stop`."""

    def __init__(self, port: int, count: int):
        import threading
        self.port, self.stop_sending = port, threading.Event()
        self.connected = threading.Semaphore(0)
        self.threads = [threading.Thread(target=self._trickle, args=(n % 2 == 0,), daemon=True) for n in range(count)]
        for thread in self.threads:
            thread.start()

    def _trickle(self, headers: bool) -> None:
        """Trickle on one connection; when the server hangs up (a request not whole in time is
        dropped), come back on a new one, as an attacker would."""
        import socket
        first = True
        while not self.stop_sending.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
                    head = f"POST {SELECT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    sock.sendall(head.encode() if headers else (head + "Content-Length: 100000\r\n\r\n").encode())
                    if first:
                        self.connected.release()
                        first = False
                    n = 0
                    while not self.stop_sending.wait(2):
                        sock.sendall(f"X-Slow-{n}: y\r\n".encode() if headers else b" ")
                        n += 1
            except OSError:
                self.stop_sending.wait(0.1)   # hung up on, or refused for a moment: again

    def wait_connected(self) -> None:
        for _ in self.threads:
            assert self.connected.acquire(timeout=60), "the slow clients could not connect"

    def stop(self) -> None:
        self.stop_sending.set()
        for thread in self.threads:
            thread.join(timeout=10)


def test_slow_clients_do_not_keep_the_service_from_answering(served):
    """Finding 3: 40 connections sending one header line every 2 s held every thread of every
    gthread worker, and /health and every hook call went unanswered for as long as they lasted.
    Now each worker's event loop reads requests whole before a thread takes one, so what
    arrives whole is answered meanwhile."""
    app = served(workers=2)
    app.booted(2)
    slow = SlowClients(app.port, 40)
    try:
        slow.wait_connected()
        import time
        time.sleep(3)   # the slow clients have sent more than their first bytes: they are being read
        for n in range(6):   # new connections, spread over both workers, for several seconds
            time.sleep(1)
            with urllib.request.urlopen(app.url + "/health", timeout=30) as response:
                assert response.status == 200
            status, _, answer = post_with_timeout(app.url + SELECT, sample() | {"hookInstance": f"00000000-0000-4000-8003-{n:012d}"})
            assert status == 200 and answer["cards"], answer
    finally:
        slow.stop()


def post_with_timeout(url: str, body: dict, timeout: float = 30) -> tuple[int, dict, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, dict(response.headers), json.load(response)


def test_a_request_is_whole_only_when_its_head_and_announced_body_have_arrived():
    from cds_service.tools.buffered_worker import MAX_BUFFERED_BYTES, request_complete
    head = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
    assert not request_complete(b"GET / HTTP/1.1\r\nHost: h\r\n")
    assert request_complete(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert not request_complete(head + b"Content-Length: 5\r\n\r\nabc")
    assert request_complete(head + b"content-length:5\r\n\r\nabcde")
    assert not request_complete(head + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    assert request_complete(head + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert request_complete(b"GET /" + b"x" * (MAX_BUFFERED_BYTES + 1))   # too long to wait for: the parser refuses it


def test_a_thread_reads_the_buffered_request_first_then_the_socket():
    import socket
    from cds_service.tools.buffered_worker import PrefixedSocket
    ours, theirs = socket.socketpair()
    with ours, theirs:
        wrapped = PrefixedSocket(ours)
        wrapped.prefix += b"GET / HTTP/1.1\r\n"
        theirs.sendall(b"Host: h\r\n\r\n")
        assert wrapped.recv(4) == b"GET " and wrapped.recv(100) == b"/ HTTP/1.1\r\n"
        assert wrapped.recv(100) == b"Host: h\r\n\r\n" and wrapped.fileno() == ours.fileno()


def test_a_client_that_waits_for_100_continue_gets_it_and_its_answer(served):
    """curl (and many HTTP clients) send ``Expect: 100-continue`` with a body over 1 KiB and hold
    the body back until the server says go: a worker waiting for the whole request must say it."""
    import socket
    app = served(workers=2)
    app.booted(2)
    body = json.dumps(sample()).encode()
    with socket.create_connection(("127.0.0.1", app.port), timeout=20) as sock:
        sock.sendall(f"POST {SELECT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n".encode())
        assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue"), "no 100 Continue: the client would wait"
        sock.sendall(body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert b"HTTP/1.1 200" in answer and b'"cards"' in answer
