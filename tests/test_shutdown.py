"""The served process, for real: ``spine-cds serve`` (gunicorn, two workers) in a subprocess.

* /metrics merges the workers: every scrape, whichever worker answers it, counts every call.
* SIGTERM drains: a hook call in flight (its FHIR read takes 1 s) still gets its 200 with cards,
  each worker then closes its app, the port is closed and the process exits 0.
* Every stderr line is JSON, gunicorn's own included.

No timed asserts: the waits below are upper bounds on something that must happen.
"""
from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cds_service.tools import server
from cds_service.tools.cli import SAMPLES
from fhir_stub import FhirStub
from served import PATIENCE_S, post, served  # noqa: F401 (served: a fixture the tests take by name)

SELECT = "/cds-services/spine-imaging-order-select"


def sample() -> dict:
    return json.loads((SAMPLES / "radiculopathy-conservative-care-failed.json").read_text())


def scrape(url: str) -> tuple[str, dict[tuple, float]]:
    """(request id of the scrape, {(name, sorted labels): value})."""
    with urllib.request.urlopen(url + "/metrics", timeout=PATIENCE_S) as response:
        rid, text = response.headers["X-Request-Id"], response.read().decode()
    return rid, {(s.name, tuple(sorted(s.labels.items()))): s.value
                 for family in text_string_to_metric_families(text) for s in family.samples}


HOOK_OK = ("spine_cds_http_requests_total",
           (("endpoint", "/cds-services/<service_id>"), ("method", "POST"), ("status", "200")))


def test_metrics_merge_every_worker(served):
    app = served(workers=2, SPINE_CDS_LOG_LEVEL="DEBUG")  # DEBUG: /metrics scrapes get access lines too
    app.booted(workers=2)
    callers: set[int] = set()
    calls = 0
    while len(callers) < 2:  # until both workers have answered hook calls
        assert calls < 200, "one worker answered every call; cannot test the merge"
        body = sample() | {"hookInstance": str(uuid.uuid4())}
        status, _, answer = post(app.url + SELECT, body)
        assert status == 200 and answer["cards"]
        calls += 1
        callers.add(app.pid_of(body["hookInstance"]))
    scrapers: set[int] = set()
    scrapes = 0
    while len(scrapers) < 2:  # until both workers have answered scrapes
        assert scrapes < 200, "one worker answered every scrape; cannot test the merge"
        rid, samples = scrape(app.url)
        scrapes += 1
        scrapers.add(app.pid_of(rid))
        assert samples[HOOK_OK] == calls, f"a scrape by worker {app.pid_of(rid)} missed calls another worker answered"
        decisions = sum(v for (name, _), v in samples.items() if name == "spine_cds_decisions_total")
        assert decisions == calls  # the sample has one spine order
    assert app.stop() == 0


def test_keep_alive_connections_are_spread_over_the_workers(served):
    """SO_REUSEPORT (server.py): each worker listens on its own socket and the kernel hashes every
    new connection to one of them (all 16 on one worker: odds of 2 in 2**16).  With one shared
    socket, keep-alive connections opened at once (as a load balancer or wrk opens them) all went
    to one worker, which then did every call while the other core idled: this test failed 4 runs
    in 4 with reuse_port off."""
    import http.client
    app = served(workers=2)
    app.booted(workers=2)
    connections = [http.client.HTTPConnection("127.0.0.1", app.port, timeout=PATIENCE_S) for _ in range(16)]
    callers = set()
    try:
        for conn in connections:
            conn.connect()
        for _ in range(2):
            for conn in connections:  # the same 16 connections, kept alive
                body = sample() | {"hookInstance": str(uuid.uuid4())}
                conn.request("POST", SELECT, body=json.dumps(body), headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                assert response.status == 200 and response.getheader("Connection") != "close"
                response.read()
                callers.add(app.pid_of(body["hookInstance"]))
    finally:
        for conn in connections:
            conn.close()
    assert len(callers) == 2
    assert app.stop() == 0


def test_sigterm_lets_the_call_in_flight_finish_then_closes_and_exits_0(served):
    body = sample()
    conditions = [e["resource"] for e in body["prefetch"].pop("conditions")["entry"]]
    with FhirStub(token="t0ken") as fhir:
        fhir.add(*conditions)
        fhir.delay = 1.0  # the call is in flight for at least this long
        body |= {"fhirServer": fhir.url, "fhirAuthorization": {
            "access_token": "t0ken", "token_type": "Bearer", "expires_in": 300, "scope": "patient/*.read",
            "subject": "spine-cds"}}
        app = served(workers=2, SPINE_CDS_ALLOWED_FHIR_SERVERS=fhir.url)
        app.booted(workers=2)
        outcome: dict = {}

        def call() -> None:
            try:
                outcome["answer"] = post(app.url + SELECT, copy.deepcopy(body))
            except OSError as exc:  # what a cut connection looks like to the EHR
                outcome["error"] = exc

        caller = threading.Thread(target=call)
        caller.start()
        app.wait_until("the hook call reached the FHIR server", lambda: fhir.requests)
        app.proc.send_signal(signal.SIGTERM)
        caller.join(timeout=PATIENCE_S)
        exit_code = app.stop()
    assert "answer" in outcome, f"the call in flight was cut short: {outcome.get('error')!r}"
    assert exit_code == 0
    status, headers, answer = outcome["answer"]
    assert status == 200 and headers["X-Request-Id"] == body["hookInstance"]
    [card] = answer["cards"]
    assert card["extension"]["spine-cds.decision"]["order"] == "ServiceRequest/sr-ana"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", app.port), timeout=5).close()

    records = app.records()  # every line is JSON (records() raises otherwise), gunicorn's too
    assert any(r["logger"] == "gunicorn.error" and r["message"].startswith("Handling signal: term") for r in records)
    exits = [r for r in records if r.get("event") == "worker-exit"]
    assert len(exits) == 2, "each worker closes its app"
    served_by = app.pid_of(body["hookInstance"])
    order = [(r["pid"], r["logger"]) for r in records]
    assert order.index((served_by, "cds_service.access")) < order.index((served_by, "cds_service.tools.server")), \
        "the worker closed its app before the call in flight was answered"


def test_metrics_folder_is_made_emptied_and_removed(tmp_path, monkeypatch):
    monkeypatch.setenv(server.MULTIPROC_ENV, "placeholder")
    monkeypatch.delenv(server.MULTIPROC_ENV)           # restored to unset afterwards
    made = Path(server.prepare_metrics_dir())
    assert made.is_dir() and os.environ[server.MULTIPROC_ENV] == str(made)
    assert server.prepare_metrics_dir() == str(made)   # on_starting after run(): the same folder
    server.remove_metrics_dirs()
    assert not made.exists()

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = made.parent / f"spine-cds-metrics-{ended.stdout.strip()}-killed"  # a server SIGKILLed earlier
    running = made.parent / f"spine-cds-metrics-{os.getpid()}-running"         # a server still running
    orphan.mkdir()
    running.mkdir()
    try:
        monkeypatch.delenv(server.MULTIPROC_ENV)
        server.prepare_metrics_dir()
        server.remove_metrics_dirs()
        assert not orphan.exists() and running.is_dir()
    finally:
        running.rmdir()

    operators = tmp_path / "prometheus"
    operators.mkdir()
    (operators / "counter_4242.db").write_bytes(b"stale counts of an earlier run")
    (operators / "notes.txt").write_text("not ours")
    monkeypatch.setenv(server.MULTIPROC_ENV, str(operators))
    assert server.prepare_metrics_dir() == str(operators)
    assert sorted(p.name for p in operators.iterdir()) == ["notes.txt"]
    server.remove_metrics_dirs()
    assert operators.is_dir()  # an operator's folder is kept


def test_worker_exit_closes_the_app(make_app):
    app = make_app()
    closed = []
    state = app.extensions["spine_cds"]
    original = state.store.close
    state.store.close = lambda: (closed.append(True), original())  # frozen dataclass, mutable store
    server.worker_exit(None, type("Worker", (), {"wsgi": app, "pid": os.getpid()})())
    assert closed == [True]
    server.worker_exit(None, type("Worker", (), {"pid": os.getpid()})())  # app never loaded: nothing to do
