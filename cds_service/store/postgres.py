"""The PostgreSQL connection behind :class:`~cds_service.store.database.Store`, for several instances.

``SPINE_CDS_DATABASE=postgresql://user:password@host:5432/dbname`` (or ``postgres://``) puts
decisions, feedback, "don't nag twice" fingerprints and the audit trail in one database every
instance shares.  Why these choices:

* One connection per Store behind a lock, reconnected when it breaks — no pool.  A gunicorn
  worker runs Python under the GIL with a handful of threads; the store's writes are a few
  small INSERTs per call (about a millisecond), far below the time the call spends deciding, so
  a pool would add a dependency (psycopg_pool) and idle connections per worker without making
  calls faster.  Connections per instance = workers × 2 (the store and the repeat filter).
* Every unit of work is one transaction committed before :meth:`run` returns; the route
  acknowledges only after that (``synchronous_commit`` stays the server's default, on).
* Every statement has a server-side ``statement_timeout`` and ``lock_timeout``, connecting has
  ``connect_timeout``, and TCP keepalives plus ``tcp_user_timeout`` bound a silent network, so a
  stuck database turns into a 503 instead of a hung worker.
* A broken connection, a deadlock or a serialisation failure is retried once on a fresh
  transaction.  That is safe because every write the store makes is idempotent (``ON CONFLICT``
  on the card uuid, the feedback key, the audit id, the fingerprint); if the lost connection had
  in fact committed, the retry finds the row and reports it as already stored.
* The URL's password never reaches a message or a log (:func:`~.database_url.mask_url`).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import psycopg
from psycopg import conninfo

from cds_service.store.database_url import mask_url
from cds_service.errors import CdsConfigError
from cds_service.store.schema import StoreUnavailable

CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_MS = 5000
LOCK_TIMEOUT_MS = 5000
IDLE_IN_TRANSACTION_TIMEOUT_MS = 30000
TCP_USER_TIMEOUT_MS = 10000
T = TypeVar("T")


class _Qmark:
    """A psycopg cursor that takes the store's ``?`` placeholders (psycopg uses ``%s``)."""

    def __init__(self, cursor: psycopg.Cursor):
        self._cursor = cursor

    def execute(self, sql: str, params=()) -> psycopg.Cursor:
        return self._cursor.execute(sql.replace("?", "%s"), params or None)

    def executemany(self, sql: str, rows) -> psycopg.Cursor:
        self._cursor.executemany(sql.replace("?", "%s"), rows)
        return self._cursor


class PostgresBackend:
    """One PostgreSQL connection; :meth:`run` executes a unit of work as one transaction."""

    dialect = "postgresql"

    def __init__(self, url: str):
        self.location = mask_url(url)
        self._lock = threading.Lock()
        try:
            self._params = conninfo.make_conninfo(url, **_session_options(url))
            self._conn: psycopg.Connection | None = self._connect()
        except psycopg.Error as exc:
            raise CdsConfigError(
                f"SPINE_CDS_DATABASE={self.location}: cannot connect to PostgreSQL "
                f"({_scrub(str(exc), url)}). Check the host, port, database name, user and password, and "
                "that the server accepts connections from this machine.") from exc

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self._params)

    def run(self, work: Callable[[_Qmark], T], write: bool = True) -> T:
        """Run ``work(cursor)`` in one transaction and commit; retry once if that is safe.

        ``write`` is accepted for symmetry with SQLite; PostgreSQL needs no hint.
        """
        with self._lock:
            for attempt in (1, 2):
                conn = self._connection()
                try:
                    with conn.cursor() as cursor:
                        result = work(_Qmark(cursor))
                    conn.commit()
                    return result
                except psycopg.Error as exc:
                    retry = self._recover(conn, exc)
                    if not isinstance(exc, psycopg.OperationalError):
                        raise  # a bug in our SQL: let it surface as one
                    if not retry or attempt == 2:
                        raise StoreUnavailable(
                            f"The decision store (PostgreSQL) did not answer in time or refused the "
                            f"write ({type(exc).__name__}); retry the call, and if this persists ask "
                            "the operator to check the database.") from exc
                except BaseException:
                    self._recover(conn, None)
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection(self) -> psycopg.Connection:
        """The open connection, reconnecting if the last one broke."""
        if self._conn is None or self._conn.closed:
            try:
                self._conn = self._connect()
            except psycopg.Error as exc:
                raise StoreUnavailable(
                    f"The decision store (PostgreSQL at {self.location}) is unreachable "
                    f"({type(exc).__name__}); retry the call, and if this persists ask the operator "
                    "to check the database server.") from exc
        return self._conn

    def _recover(self, conn: psycopg.Connection, exc: BaseException | None) -> bool:
        """Make the connection usable again; True when retrying the work is worth it."""
        if conn.broken or conn.closed:
            self._drop()
            return True
        try:
            conn.rollback()
        except psycopg.Error:
            self._drop()
            return True
        return isinstance(exc, psycopg.errors.TransactionRollback)  # deadlock, serialisation

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        with self._lock:
            self._drop()


def _session_options(url: str) -> dict:
    """Timeouts for every session, added to whatever the URL already sets."""
    given = conninfo.conninfo_to_dict(url)
    ours = (f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c lock_timeout={LOCK_TIMEOUT_MS} "
            f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT_MS}")
    return {
        "options": f"{given.get('options', '')} {ours}".strip(),
        "connect_timeout": given.get("connect_timeout", CONNECT_TIMEOUT_S),
        "application_name": given.get("application_name", "spine-cds"),
        "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
        "tcp_user_timeout": given.get("tcp_user_timeout", TCP_USER_TIMEOUT_MS),
    }


def _scrub(message: str, url: str) -> str:
    """A driver message with the URL's password removed, should the driver ever echo it."""
    try:
        password = conninfo.conninfo_to_dict(url).get("password")
    except psycopg.Error:
        password = None
    return mask_url(message.replace(password, "***") if password else message)
