"""The embedded SQLite connection behind :class:`~cds_service.store.Store` (the default).

Why SQLite: operators get a durable audit trail without running a database.  Why these choices:

* ``synchronous=FULL`` so a committed row survives a power cut, not only a process crash; and
  every write is committed before :meth:`SqliteBackend.run` returns — the caller acknowledges
  only after that, so a SIGKILL right after an answer loses nothing.
* Group commit, because with FULL each commit costs an fsync and commits are serialised: one
  commit per hook call capped throughput.  Writes from the threads of one process queue up;
  the first waiting thread becomes the *leader*, takes every queued unit, runs them all in ONE
  ``BEGIN IMMEDIATE`` transaction with a ``SAVEPOINT`` per unit (a unit that raises rolls back
  only itself), commits once, then wakes each caller with its own result or exception.  No
  writer thread: nothing to leak, and the leader is a caller that had to wait anyway.
* Two connections per Store (file databases): the writer above, and a reader behind its own
  lock, so reads never wait for the write queue (WAL lets them see the last commit while a
  write is in progress).  Gunicorn workers each open their own Store on the same file; the
  busy timeout makes their leaders wait for each other instead of failing.
* ``:memory:`` is one private database per connection, so there is one connection and no
  batching (no fsync to save); every unit is its own transaction, as before.
* No unbounded waits: a unit still queued after the busy timeout gets 503; :meth:`close`
  drains the queue (bounded) and fails what is left.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .errors import CdsConfigError
from .store_schema import StoreUnavailable

BUSY_TIMEOUT_S = 10.0  # read when used, so tests may lower it
MAX_BATCH = 64  # units per transaction: bounds how long one leader holds the write lock
T = TypeVar("T")


def _unavailable(reason: object) -> StoreUnavailable:
    return StoreUnavailable(f"The decision store could not be written ({reason}); retry the call, and if "
                            "this persists ask the operator to check the database file and disk.")


def _connect(path: str, pragmas: tuple[str, ...]) -> sqlite3.Connection:
    """A connection with our settings; a path we cannot use is a configuration error."""
    try:
        if path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so nothing is left open.
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise CdsConfigError(f"cannot open {path} as a SQLite database ({exc}); point "
                             "SPINE_CDS_DATABASE at a writable file.") from exc
    try:
        for pragma in pragmas:
            conn.execute(pragma)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise CdsConfigError(f"cannot read {path} as a spine-cds database ({exc}); point "
                             "SPINE_CDS_DATABASE at another file or move this one away.") from exc
    return conn


class _Unit:
    """One caller's work in the write queue, and what became of it."""

    __slots__ = ("work", "done", "result", "error")

    def __init__(self, work: Callable[[sqlite3.Connection], Any]):
        self.work = work
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None

    def outcome(self) -> Any:
        """The result, or the unit's own exception (database trouble as a 503)."""
        if self.error is None:
            return self.result
        if isinstance(self.error, sqlite3.OperationalError):
            raise _unavailable(self.error) from self.error
        raise self.error


class SqliteBackend:
    """SQLite connections; :meth:`run` executes a unit of work and returns once it is committed."""

    dialect = "sqlite"

    def __init__(self, path: str):
        self.location = path
        self.commits = 0  # write transactions committed: with group commit, fewer than units
        self._in_memory = path == ":memory:"
        pragmas = () if self._in_memory else ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL")
        self._conn = _connect(path, pragmas)
        try:
            self._reader = self._conn if self._in_memory else _connect(path, ("PRAGMA query_only=1",))
        except BaseException:
            self._conn.close()
            raise
        self._read_lock = threading.Lock()  # guards the reader (in memory: the one connection)
        self._queue = threading.Condition(threading.Lock())  # guards the fields below
        self._pending: list[_Unit] = []
        self._leading = False
        self._closing = False

    def run(self, work: Callable[[sqlite3.Connection], T], write: bool = True) -> T:
        """Run ``work(connection)`` in a transaction that has committed when this returns.

        Writes may share their transaction with other threads' writes (each in its own
        savepoint); reads run alone on the reader.  If ``work`` raises, its changes are rolled
        back and the exception is raised here.  A locked, full or failing database becomes
        :class:`StoreUnavailable` (503).
        """
        if self._in_memory or not write:
            return self._run_alone(work, write)
        unit = _Unit(work)
        self._wait_for(unit)
        return unit.outcome()

    def _run_alone(self, work: Callable[[sqlite3.Connection], T], write: bool) -> T:
        conn = self._reader
        with self._read_lock:
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                result = work(conn)
                conn.execute("COMMIT")
                self.commits += write
                return result
            except sqlite3.OperationalError as exc:
                raise _unavailable(exc) from exc
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")

    def _wait_for(self, unit: _Unit) -> None:
        """Queue the unit and return once it is done: lead a batch when no one else is."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        with self._queue:
            if self._closing:
                raise _unavailable("the store is shutting down")
            self._pending.append(unit)
            while not unit.done:
                if not self._leading:
                    self._lead()
                    continue
                left = deadline - time.monotonic()
                if left <= 0 and unit in self._pending:  # not taken yet: give up, never hang
                    self._pending.remove(unit)
                    raise _unavailable(f"no write slot within {BUSY_TIMEOUT_S:g} s")
                # A unit already taken waits for its leader, whose every step is bounded.
                self._queue.wait(left if left > 0 else BUSY_TIMEOUT_S)

    def _lead(self) -> None:
        """Take the queued units and commit them (called holding the queue, which is released meanwhile)."""
        batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        self._leading = True
        self._queue.release()
        try:
            self._commit_batch(batch)
        finally:
            self._queue.acquire()
            self._leading = False
            for unit in batch:
                unit.done = True
            self._queue.notify_all()

    def _commit_batch(self, batch: list[_Unit]) -> None:
        """One transaction, a savepoint per unit; if it cannot commit, every unit not already failed fails."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            for unit in batch:
                self._run_unit(conn, unit)
            conn.execute("COMMIT")
            self.commits += 1
        except BaseException as exc:  # handed to the callers, never lost in the leader
            for unit in batch:
                if unit.error is None:
                    unit.result, unit.error = None, exc
        finally:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the callers already have the error that got us here

    @staticmethod
    def _run_unit(conn: sqlite3.Connection, unit: _Unit) -> None:
        conn.execute("SAVEPOINT unit")
        try:
            unit.result = unit.work(conn)
        except BaseException as exc:
            unit.error = exc
            if not conn.in_transaction:  # SQLite rolled everything back (disk full, I/O error)
                raise
            conn.execute("ROLLBACK TO unit")
        conn.execute("RELEASE unit")

    def close(self) -> None:
        """Let queued writes finish (bounded), fail the rest, close the connections; safe to call twice."""
        with self._queue:
            self._closing = True
            self._queue.wait_for(lambda: not self._pending and not self._leading, timeout=2 * BUSY_TIMEOUT_S)
            for unit in self._pending:
                unit.error, unit.done = _unavailable("the store shut down first"), True
            self._pending = []
            self._queue.notify_all()
        with self._read_lock:
            self._reader.close()
            self._conn.close()
