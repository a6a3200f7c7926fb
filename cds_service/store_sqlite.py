"""The embedded SQLite connection behind :class:`~cds_service.store.Store` (the default).

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
"""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .errors import CdsConfigError
from .store_schema import StoreUnavailable

BUSY_TIMEOUT_S = 10.0
T = TypeVar("T")


class SqliteBackend:
    """One SQLite connection; :meth:`run` executes a unit of work as one transaction."""

    dialect = "sqlite"

    def __init__(self, path: str):
        self.location = path
        self._lock = threading.Lock()
        in_memory = path == ":memory:"
        try:
            if not in_memory:
                Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
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
            try:
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

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        with self._lock:
            self._conn.close()
