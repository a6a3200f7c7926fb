"""Issue #6: no acknowledged record is lost when the service is killed with SIGKILL mid-load.

The real service (``spine-cds serve``: gunicorn, two worker processes, four threads each) runs in
its own process group on a SQLite WAL file, then on PostgreSQL.  Client threads post feedback
and order-select calls as fast as they are answered and note every item acknowledged with
HTTP 200.  Once enough are acknowledged, the whole process group gets SIGKILL — no shutdown
hook, no flush, requests still in flight.  The database is then opened again and every
acknowledged feedback item, card decision and audit record must be in it.  Nothing here is timed:
the test waits for counts, and the deadlines only turn a hang into a failure.

The other half of the contract is checked too: when the store cannot commit (another process
holds the write lock past the busy timeout), the call is answered 503 and nothing is acknowledged.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests

from cds_service.store import sqlite as store_sqlite
from cds_service.tools.cli import SAMPLES
from cds_service.store.database import Store
from pg_server import free_port, pg_server  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parent.parent
SELECT = "/cds-services/spine-imaging-order-select"
FEEDBACK_THREADS, HOOK_THREADS = 4, 2
ENOUGH_FEEDBACK, ENOUGH_CALLS = 150, 20    # acknowledged before the kill
DEADLINE_S = 120                           # a hang fails the test instead of blocking the suite


class Load:
    """Client threads posting until the server dies; what was acknowledged, by kind."""

    def __init__(self, base: str):
        self.base = base
        self.feedback: list[str] = []                  # card ids whose feedback was acknowledged
        self.calls: list[tuple[str, list[str]]] = []   # (hookInstance, card uuids) acknowledged
        self.refused: list[int] = []                   # non-200 answers before the kill
        self.lock = threading.Condition()
        self.hook = json.loads((SAMPLES / "radiculopathy-conservative-care-failed.json").read_text())
        self.hook.pop("fhirServer")  # complete prefetch: the service must not try to reach an EHR
        self.threads = [threading.Thread(target=self._run, args=(self._post_feedback,)) for _ in range(FEEDBACK_THREADS)]
        self.threads += [threading.Thread(target=self._run, args=(self._post_hook,)) for _ in range(HOOK_THREADS)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=DEADLINE_S)
        assert not any(t.is_alive() for t in self.threads), "a client thread did not stop after the kill"

    def wait_for_enough(self, server: subprocess.Popen) -> None:
        deadline = time.monotonic() + DEADLINE_S
        with self.lock:
            while len(self.feedback) < ENOUGH_FEEDBACK or len(self.calls) < ENOUGH_CALLS:
                assert server.poll() is None, "the service died before the kill"
                assert time.monotonic() < deadline, f"too few acknowledgements: {self.counts()}"
                self.lock.wait(timeout=1)

    def counts(self) -> dict:
        return {"feedback": len(self.feedback), "calls": len(self.calls), "refused": self.refused}

    def _run(self, post) -> None:
        with requests.Session() as session:
            while True:
                try:
                    post(session)
                except requests.RequestException:
                    return  # the server is gone (connection reset or refused): stop

    def _post_feedback(self, session: requests.Session) -> None:
        """Feedback on a card of this thread's own (acknowledged) call: feedback is taken only for
        a card the service issued to the client."""
        issued = session.post(f"{self.base}{SELECT}", json={**self.hook, "hookInstance": str(uuid.uuid4())},
                              timeout=(2, 30))
        if issued.status_code != 200:
            self._note(issued, lambda: None)
            return
        card = issued.json()["cards"][0]["uuid"]
        body = {"feedback": [{"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-22T09:00:00Z",
                              "overrideReason": {"userComment": "seen"}}]}
        response = session.post(f"{self.base}{SELECT}/feedback", json=body, timeout=(2, 30))
        self._note(response, lambda: self.feedback.append(card))

    def _post_hook(self, session: requests.Session) -> None:
        instance = str(uuid.uuid4())
        response = session.post(f"{self.base}{SELECT}", json={**self.hook, "hookInstance": instance}, timeout=(2, 30))
        self._note(response, lambda: self.calls.append((instance, [c["uuid"] for c in response.json()["cards"]])))

    def _note(self, response: requests.Response, acknowledge) -> None:
        with self.lock:
            if response.status_code == 200:
                acknowledge()
            else:
                self.refused.append(response.status_code)
            self.lock.notify_all()


def start_service(database: str, tmp_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "SPINE_CDS_DATABASE": database, "SPINE_CDS_AUTH": "off", "SPINE_CDS_TODAY": "2026-11-22",
           "SPINE_CDS_LOG_LEVEL": "WARNING", "SPINE_CDS_DATA_DIR": str(tmp_path),
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}  # nothing left in /dev/shm after SIGKILL
    log = open(tmp_path / "service.log", "wb")
    try:
        server = subprocess.Popen([sys.executable, "-m", "cds_service.tools.cli", "serve", "--port", str(port), "--workers", "2"],
                                  cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()
    # Should pytest itself be killed, take the service down with it (it has its own process group).
    subprocess.run(["sh", "-c", f"(while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; kill -9 -{server.pid})"
                    " </dev/null >/dev/null 2>&1 &"], start_new_session=True, check=True, timeout=30)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + DEADLINE_S
    while True:
        try:
            if requests.get(f"{base}/health", timeout=2).status_code == 200:
                return server, base
        except requests.RequestException:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            kill(server)
            pytest.fail(f"the service did not start:\n{(tmp_path / 'service.log').read_text()[-3000:]}")
        time.sleep(0.2)


def kill(server: subprocess.Popen) -> None:
    """SIGKILL the gunicorn master and its workers at once (they share the process group)."""
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.wait(timeout=DEADLINE_S)


def load_then_kill(database: str, tmp_path: Path) -> Load:
    server, base = start_service(database, tmp_path)
    load = Load(base)
    try:
        load.start()
        load.wait_for_enough(server)
    finally:
        kill(server)
        load.join()
    assert server.returncode == -signal.SIGKILL
    return load


def assert_every_acknowledged_record_is_stored(database: str, load: Load) -> None:
    assert load.refused == [], f"the service refused items before the kill: {load.refused}"
    with Store(database) as store:
        lost_feedback = [card for card in load.feedback if len(store.feedback_for_card(card)) != 1]
        lost_decisions = [card for _, cards in load.calls for card in cards if store.decision(card) is None]
        lost_audit = [i for i, _ in load.calls if len(store.audit_records(hook_instance=i)) != 1]
    assert (lost_feedback, lost_decisions, lost_audit) == ([], [], [])
    assert all(len(cards) == 1 for _, cards in load.calls)  # each acknowledged call had its card


def test_sigkill_mid_load_loses_no_acknowledged_record_on_sqlite(tmp_path):
    database = str(tmp_path / "spine-cds.sqlite3")
    load = load_then_kill(database, tmp_path)
    assert_every_acknowledged_record_is_stored(database, load)
    conn = sqlite3.connect(database)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()


def test_sigkill_mid_load_loses_no_acknowledged_record_on_postgresql(pg_server, tmp_path):
    database = pg_server.create_database()
    load = load_then_kill(database, tmp_path)
    assert_every_acknowledged_record_is_stored(database, load)


def test_a_store_that_cannot_write_answers_503_and_acknowledges_nothing(make_app, tmp_path, monkeypatch):
    """Another process holds the write lock longer than the busy timeout: a retryable 503, never a 200."""
    monkeypatch.setattr(store_sqlite, "BUSY_TIMEOUT_S", 0.05)
    database = str(tmp_path / "locked.sqlite3")
    client = make_app(SPINE_CDS_DATABASE=database).test_client()
    with Store(database) as issuing:   # feedback is taken only for a card issued to the client
        issuing.record_decision("c-1", "spine-imaging-order-select", "order-select", "hi-1", "ServiceRequest/sr", "nia",
                                "g", "i", "approve", ["s"], datetime.now(timezone.utc).isoformat(), issuer="")
    feedback = {"feedback": [{"card": "c-1", "outcome": "accepted", "outcomeTimestamp": "2026-11-22T09:00:00Z",
                              "acceptedSuggestions": [{"id": "s"}]}]}
    hook = json.loads((SAMPLES / "radiculopathy-conservative-care-failed.json").read_text())
    locker = sqlite3.connect(database, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        for path, body in ((f"{SELECT}/feedback", feedback), (SELECT, hook)):
            response = client.post(path, json=body)
            assert response.status_code == 503
            assert "retry" in response.get_json()["issue"][0]["diagnostics"]
        locker.execute("ROLLBACK")
    finally:
        locker.close()
    assert client.post(f"{SELECT}/feedback", json=feedback).get_json() == {"received": 1, "stored": 1}
    assert client.post(SELECT, json=hook).status_code == 200
    with Store(database) as check:
        assert check.count_feedback() == 1 and check.count_decisions() == 2   # c-1 and the call's card
        assert [r["status"] for r in check.audit_records()] == [200]  # the refused call left nothing
