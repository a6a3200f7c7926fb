"""Group commit in the embedded SQLite store: concurrent writes share one transaction and one fsync.

Batching is forced, not hoped for: a *blocker* unit holds the writer (it leads a batch and waits
on a gate inside its transaction) while other threads queue; opening the gate lets the next
leader take the whole queue at once.  Everything asserted is counts and content, never time.
"""
from __future__ import annotations

import sqlite3
import threading

import pytest

from cds_service import store_sqlite
from cds_service.store import Store, StoreUnavailable
from cds_service.store_sqlite import SqliteBackend

QUEUED = 24  # units queued behind the blocker; fewer than MAX_BATCH, so they form one batch


def wait_until(predicate, what: str) -> None:
    """Poll (bounded) until ``predicate()``: synchronisation with the threads, not a timing check."""
    pause = threading.Event()
    for _ in range(4000):
        if predicate():
            return
        pause.wait(0.005)
    raise AssertionError(f"never happened: {what}")


def insert(key: int):
    """A unit of work that stores one row and returns something of its own."""
    def work(conn):
        conn.execute("INSERT INTO t (k, v) VALUES (?, ?)", (key, f"v{key}"))
        return key * 10
    return work


class Blocker:
    """A writer that inserts row 0 and then waits on a gate inside its transaction."""

    def __init__(self, backend: SqliteBackend):
        self.entered, self.gate = threading.Event(), threading.Event()
        self.outcome: list = []

        def work(conn):
            conn.execute("INSERT INTO t (k, v) VALUES (0, 'blocker')")
            self.entered.set()
            self.gate.wait(30)  # bound: a broken test fails instead of hanging
            return "blocker"

        self.thread = threading.Thread(target=lambda: self.outcome.append(backend.run(work)))
        self.thread.start()
        assert self.entered.wait(30)

    def release(self) -> None:
        self.gate.set()
        self.thread.join()


def in_threads(backend: SqliteBackend, works: dict) -> tuple[dict, list[threading.Thread]]:
    """Start one thread per ``key -> work``; results (or exceptions) land in the returned dict."""
    outcomes: dict = {}

    def call(key, work):
        try:
            outcomes[key] = backend.run(work)
        except BaseException as exc:  # recorded for the asserts: a thread must not die silently
            outcomes[key] = exc

    threads = [threading.Thread(target=call, args=item) for item in works.items()]
    for thread in threads:
        thread.start()
    return outcomes, threads


@pytest.fixture
def backend(tmp_path):
    opened = SqliteBackend(str(tmp_path / "group.sqlite3"))
    opened.run(lambda c: c.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)"))
    yield opened
    opened.close()


def stored_keys(path: str) -> set[int]:
    conn = sqlite3.connect(path)
    try:
        return {k for (k,) in conn.execute("SELECT k FROM t")}
    finally:
        conn.close()


def test_queued_writes_commit_together_each_with_its_own_result_or_error(backend):
    def fails_in_python(conn):
        conn.execute("INSERT INTO t (k, v) VALUES (1000, 'rolled back')")
        raise ValueError("unit 1000 is broken")

    def fails_in_sql(conn):
        conn.execute("INSERT INTO t (k, v) VALUES (1001, 'rolled back')")
        conn.execute("INSERT INTO no_such_table VALUES (1)")

    works = {k: insert(k) for k in range(1, QUEUED - 1)} | {1000: fails_in_python, 1001: fails_in_sql}
    commits_before = backend.commits
    blocker = Blocker(backend)
    outcomes, threads = in_threads(backend, works)
    wait_until(lambda: len(backend._pending) == QUEUED, "every unit queued behind the blocker")
    blocker.release()
    for thread in threads:
        thread.join()

    assert blocker.outcome == ["blocker"]
    assert {k: outcomes[k] for k in range(1, QUEUED - 1)} == {k: k * 10 for k in range(1, QUEUED - 1)}
    assert isinstance(outcomes[1000], ValueError) and "unit 1000" in str(outcomes[1000])
    assert isinstance(outcomes[1001], StoreUnavailable) and "no_such_table" in str(outcomes[1001])
    assert backend.commits - commits_before == 2  # the blocker's batch, then all queued units at once
    backend.close()
    assert stored_keys(backend.location) == {0, *range(1, QUEUED - 1)}  # the failed units only are gone


def test_every_acknowledged_hook_call_survives_close_and_reopen(tmp_path):
    """Through the Store facade, as the app uses it: fewer commits than calls, nothing lost."""
    path = str(tmp_path / "store.sqlite3")
    store = Store(path)
    store._db.run(lambda c: c.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)"))
    commits_before = store._db.commits
    blocker = Blocker(store._db)
    audits = [{"auditId": f"a-{i}", "time": "2026-11-22T09:00:00Z", "service": "svc", "hook": "order-select",
               "hookInstance": f"hi-{i}", "status": 200} for i in range(QUEUED)]
    acknowledged: list[str] = []
    lock = threading.Lock()

    def call(audit):
        assert store.record_hook_call([], audit, ([audit["auditId"]], 1.0, None)) == 0
        with lock:
            acknowledged.append(audit["auditId"])

    threads = [threading.Thread(target=call, args=(audit,)) for audit in audits]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(store._db._pending) == QUEUED, "every call queued")
    blocker.release()
    for thread in threads:
        thread.join()
    assert store._db.commits - commits_before == 2
    store.close()
    with Store(path) as reopened:
        assert reopened.count_audit() == QUEUED
        assert sorted(r["auditId"] for r in reopened.audit_records()) == sorted(acknowledged)
        assert all(reopened.shown_at(a) == 1.0 for a in acknowledged)


def test_reads_do_not_wait_for_the_writer(backend):
    backend.run(insert(1))
    blocker = Blocker(backend)
    try:
        seen = backend.run(lambda c: sorted(k for (k,) in c.execute("SELECT k FROM t")), write=False)
        assert not blocker.gate.is_set()  # the read finished while the write transaction was open
    finally:
        blocker.release()
    assert seen == [1]  # the last commit, not the blocker's uncommitted row
    assert backend.run(lambda c: c.execute("SELECT COUNT(*) FROM t").fetchone()[0], write=False) == 2


def test_a_unit_queued_past_the_busy_timeout_gets_503_and_is_not_stored(tmp_path, monkeypatch):
    monkeypatch.setattr(store_sqlite, "BUSY_TIMEOUT_S", 0.1)
    path = str(tmp_path / "slow.sqlite3")
    backend = SqliteBackend(path)
    try:
        backend.run(lambda c: c.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)"))
        blocker = Blocker(backend)
        try:
            with pytest.raises(StoreUnavailable, match="retry"):
                backend.run(insert(7))
            assert backend._pending == []  # it left the queue; nobody will run it later
        finally:
            blocker.release()
        assert blocker.outcome == ["blocker"]
        assert backend.run(insert(8)) == 80
    finally:
        backend.close()
    assert stored_keys(path) == {0, 8}


def test_close_drains_queued_writes_then_refuses_new_ones(backend):
    threads_before = threading.active_count()
    blocker = Blocker(backend)
    outcomes, threads = in_threads(backend, {k: insert(k) for k in range(1, 6)})
    wait_until(lambda: len(backend._pending) == 5, "five units queued")
    closer = threading.Thread(target=backend.close)
    closer.start()
    wait_until(lambda: backend._closing, "close started")
    blocker.release()
    closer.join()
    for thread in threads:
        thread.join()
    assert outcomes == {k: k * 10 for k in range(1, 6)}
    assert stored_keys(backend.location) == {0, 1, 2, 3, 4, 5}
    with pytest.raises(StoreUnavailable, match="shutting down"):
        backend.run(insert(9))
    backend.close()  # twice is harmless
    assert threading.active_count() == threads_before  # the store starts no threads of its own


def test_memory_databases_commit_each_unit_alone(tmp_path):
    """':memory:' has one connection and no fsync to save: no batching, every unit still committed."""
    backend = SqliteBackend(":memory:")
    try:
        backend.run(lambda c: c.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)"))
        outcomes, threads = in_threads(backend, {k: insert(k) for k in range(1, 21)})
        for thread in threads:
            thread.join()
        assert outcomes == {k: k * 10 for k in range(1, 21)}
        assert backend.commits == 21
        assert backend.run(lambda c: c.execute("SELECT COUNT(*) FROM t").fetchone()[0], write=False) == 20
    finally:
        backend.close()
