"""The embedded SQLite connection behind :class:`~cds_service.store.database.Store` (the default).

Why SQLite: operators get a durable audit trail without running a database.  Why these choices:

* One connection per Store, shared by the threads of one process behind a lock.  Writes are
  tiny, so serialising them costs nothing measurable and avoids per-thread connections that
  are never closed.  Gunicorn workers (processes) each open their own Store on the same file;
  WAL lets readers and the single writer proceed, and the busy timeout makes writers wait for
  each other instead of failing.
* Every unit of work is one explicit transaction (``BEGIN IMMEDIATE`` for writes, so two
  processes never interleave a write) committed before :meth:`run` returns — the caller
  acknowledges only after that, so a SIGKILL right after an answer loses nothing.
* ``synchronous=FULL`` so a committed row survives a power cut, not only a process crash.
* Writers of several processes take turns on a file lock (:class:`WriterTurn`) before SQLite's
  own write lock: SQLite makes a waiting writer sleep 1, 2, 5, 10 ms between attempts, while a
  commit holds the lock for one fsync (well under a millisecond), so under load two gunicorn
  workers spent most of their time asleep (232 calls/s against 545 with no store; bench/load.py).
"""
from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cds_service.errors import CdsConfigError
from cds_service.store.schema import StoreUnavailable

BUSY_TIMEOUT_S = 10.0
T = TypeVar("T")


class SqliteBackend:
    """One SQLite connection; :meth:`run` executes a unit of work as one transaction."""

    dialect = "sqlite"

    def __init__(self, path: str):
        self.location = path
        self._lock = threading.Lock()
        in_memory = path == ":memory:"
        self._turn: WriterTurn | None = None
        try:
            if not in_memory:
                _private_file(Path(path).expanduser())
                self._turn = WriterTurn(str(Path(path).expanduser()) + ".lock")
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so nothing is left open.
            self._conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                         check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise CdsConfigError(f"cannot open {path} as a SQLite database ({exc}); point "
                                 "SPINE_CDS_DATABASE at a writable file.") from exc
        try:
            if not in_memory:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise CdsConfigError(f"cannot read {path} as a spine-cds database ({exc}); point "
                                 "SPINE_CDS_DATABASE at another file or move this one away.") from exc

    def run(self, work: Callable[[sqlite3.Connection], T], write: bool = True) -> T:
        """Run ``work(connection)`` in one transaction and commit; roll back if it raises.

        A locked, full or failing database becomes :class:`StoreUnavailable` (503).
        """
        with self._lock:
            turn = self._turn if write else None
            try:
                if turn:
                    turn.take(BUSY_TIMEOUT_S)
                self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                result = work(self._conn)
                self._conn.execute("COMMIT")
                return result
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"The decision store could not be written ({exc}); retry the "
                                       "call, and if this persists ask the operator to check the "
                                       "database file and disk.") from exc
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                if turn:
                    turn.give_back()

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        with self._lock:
            self._conn.close()
            if self._turn:
                self._turn.close()


class WriterTurn:
    """A cross-process writers' queue: an exclusive ``flock`` on ``<database>.lock``.

    Taken before ``BEGIN IMMEDIATE`` and given back after ``COMMIT``, so SQLite's write lock is
    never contended and its sleeping busy handler never runs.  Waiting polls with sleeps of 50 µs
    doubling to 1 ms, so a turn is noticed within a fraction of a commit; past the timeout the
    store is unavailable (503), never hung.  The kernel drops the lock of a killed process.
    """

    def __init__(self, path: str):
        try:
            self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise CdsConfigError(f"cannot create the writers' lock file {path} ({exc.strerror}); point "
                                 "SPINE_CDS_DATABASE at a writable folder.") from exc

    def take(self, timeout_s: float) -> None:
        deadline, pause = time.monotonic() + timeout_s, 0.00005
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreUnavailable(f"Another process kept the decision store busy for {timeout_s:g} s; "
                                           "retry the call, and if this persists ask the operator to check "
                                           "the database disk.") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.001)

    def give_back(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _private_file(path: Path) -> None:
    """Create the database file readable by its owner only (0600, in a 0700 folder when we make
    the folder): it holds clinicians' free-text comments and the audit trail.  SQLite gives its
    -wal and -shm files the database file's permissions.  An existing file keeps the operator's."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))

