"""The store for card decisions, clinician feedback, shown-decision fingerprints and the audit trail.

Why a store: the service must keep an audit trail of what each call and card decided and what
the clinician did with it (CRD ``found-37`` asks for retained logs; feedback may arrive several
times), and nothing it acknowledged may be lost if the process dies.  ``SPINE_CDS_DATABASE``
picks the database — one setting:

* a file path (or empty: ``spine-cds.sqlite3`` in ``SPINE_CDS_DATA_DIR``) → embedded SQLite in
  WAL mode (:mod:`.store_sqlite`), the default, nothing to run;
* ``:memory:`` → SQLite in memory, nothing kept (tests, offline evaluation);
* ``postgresql://`` / ``postgres://`` URL → PostgreSQL (:mod:`.store_postgres`), for several
  instances sharing one trail.

The SQL here is written once for both (``ON CONFLICT`` upserts, ``?`` placeholders); the tables
and their migrations are in :mod:`.store_schema`.  Every method is one transaction, committed
before it returns.  Idempotency uses UNIQUE keys (card uuid; a SHA-256 of the fields that make
feedback "the same", because NULLs are distinct in composite UNIQUE constraints; the audit id).
No PHI: rows hold card uuids, order references and rule ids, never a patient id or a name;
timestamps are passed in (no clock here).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from cds_service.store.database_url import is_postgres_url, is_url, mask_url
from cds_service.errors import CdsConfigError, CdsError
from cds_service.store.feedback import FeedbackItem
from cds_service.store.schema import SCHEMA_VERSION, StoreUnavailable, ensure_schema
from cds_service.store.space import no_space

__all__ = ["SCHEMA_VERSION", "DECISION_COLUMNS", "Store", "StoreUnavailable", "open_backend"]

DECISION_COLUMNS = ("card_uuid", "service_id", "hook", "hook_instance", "order_ref", "program", "guideline",
                    "indication", "outcome", "suggestion_uuids", "created_at", "issuer")
_INSERT_DECISION = (f"INSERT INTO decisions ({', '.join(DECISION_COLUMNS)})"
                    f" VALUES ({', '.join('?' * len(DECISION_COLUMNS))}) ON CONFLICT DO NOTHING")
_INSERT_FEEDBACK = (
    "INSERT INTO feedback (dedupe_key, service_id, card_uuid, outcome, outcome_timestamp, accepted_suggestions,"
    " reason_system, reason_code, reason_display, user_comment, received_at, issuer)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
_ISSUED = ("SELECT 1 FROM decisions WHERE card_uuid = ? AND service_id = ? AND issuer = ? AND created_at >= ?")
# Feedback counts for a card only when it came from the client the card was issued to (rows from
# before schema version 4 have no issuer on either side and still join).
_SAME_CLIENT = "COALESCE(l.issuer, '') = COALESCE(d.issuer, '')"
MIN_FREE_BYTES = 32 << 20   # below this a commit may fail for lack of space: /health says so
_CLAIM_TOKEN = "INSERT INTO seen_tokens (issuer, jti, expires_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
_INSERT_AUDIT = ("INSERT INTO audit (audit_id, created_at, service_id, hook, hook_instance, status, record)"
                 " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
_REMEMBER_SHOWN = ("INSERT INTO shown_decisions (fingerprint, shown_at) VALUES (?, ?)"
                   " ON CONFLICT (fingerprint) DO UPDATE SET shown_at = excluded.shown_at")

# Each card's latest feedback item from each client (ties on outcomeTimestamp: the later arrival).  Timestamps are
# stored as UTC isoformat strings, so text order is time order.
#
# Then one row per *order decision*: an EHR calls order-select on every edit of an order, so one
# decision about one order comes back as many cards (the sandbox showed 40 cards for 19 screens).
# The cards of one order reference with the same decision (program, guideline, indication,
# outcome) on the same UTC day are one order decision, represented by its last card; its feedback
# is the latest feedback given on any of those cards.  A card with no order reference is its own
# decision.  The day bounds the grouping: order ids are unique on one EHR, not across EHRs and
# years, and no patient id is stored to tell orders apart otherwise.
_LATEST_FEEDBACK = (
    "WITH latest AS (SELECT * FROM (SELECT f.*, ROW_NUMBER() OVER (PARTITION BY card_uuid, COALESCE(issuer, '')"
    " ORDER BY outcome_timestamp DESC, id DESC) AS latest_first FROM feedback f) ranked"
    " WHERE latest_first = 1), "
    "cards AS (SELECT d.program, d.guideline, d.indication, d.outcome, d.created_at, d.card_uuid,"
    " COALESCE(d.order_ref, d.card_uuid) AS order_key, SUBSTR(d.created_at, 1, 10) AS day,"
    " l.outcome AS feedback, l.outcome_timestamp, l.id AS feedback_id, l.reason_system, l.reason_code,"
    " l.reason_display, l.user_comment"
    " FROM decisions d LEFT JOIN latest l ON l.card_uuid = d.card_uuid AND " + _SAME_CLIENT + "), "
    "order_decisions AS (SELECT * FROM (SELECT c.*, ROW_NUMBER() OVER (PARTITION BY order_key, day, program,"
    " guideline, indication, outcome ORDER BY (feedback IS NULL), outcome_timestamp DESC, feedback_id DESC,"
    " created_at DESC, card_uuid DESC) AS pick FROM cards c) ranked_cards WHERE pick = 1) "
)


def open_backend(database: str):
    """The connection for a ``SPINE_CDS_DATABASE`` value (see the module docstring)."""
    if is_postgres_url(database):
        from cds_service.store.postgres import PostgresBackend  # psycopg loads only when used
        return PostgresBackend(database)
    if is_url(database):
        raise CdsConfigError(
            f"SPINE_CDS_DATABASE={mask_url(database)} is not supported: use a SQLite file path, ':memory:', "
            "or a postgresql://user:password@host:5432/dbname URL.")
    from cds_service.store.sqlite import SqliteBackend
    return SqliteBackend(database)


ShownRows = tuple[list[str], float, float | None]
"""Fingerprints shown now, when, and (if it is time to clean up) before when to forget."""


class Store:
    """Decisions, feedback, fingerprints and audit records in one database; thread-safe."""

    def __init__(self, database: str):
        try:
            self._db = open_backend(str(database))
        except CdsError as exc:
            raise no_space(str(database), exc, MIN_FREE_BYTES) or exc
        try:
            self.schema_found = self._db.run(lambda c: ensure_schema(c, self._db.dialect, self._db.location))
        except BaseException as exc:
            self._db.close()
            if isinstance(exc, CdsError) and (full := no_space(str(database), exc, MIN_FREE_BYTES)):
                raise full from exc
            raise

    @property
    def location(self) -> str:
        """Where the data is, fit to print (a file path, or the URL with its password masked)."""
        return self._db.location

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._db.dialect

    def problem(self) -> str | None:
        """Why the store could not take a hook call's records right now, or None when it can.

        ``/health`` asks this, so a probe sees what every hook call would: a database that
        cannot be read, or (SQLite) a folder with less than :data:`MIN_FREE_BYTES` left — a full
        disk fails every commit while reads still work.
        """
        if self.dialect == "sqlite" and self.location != ":memory:":
            folder = Path(self.location).expanduser().parent
            try:
                if shutil.disk_usage(folder).free < MIN_FREE_BYTES:
                    return f"less than {MIN_FREE_BYTES >> 20} MiB free where the database is"
            except OSError:
                return "the database folder cannot be read"
        try:
            self._db.run(lambda c: c.execute("SELECT 1").fetchone(), write=False)
        except CdsError:
            return "the database cannot be read"
        return None

    # -- decisions and the audit trail -------------------------------------------------------

    def record_decision(self, card_uuid: str, service_id: str, hook: str, hook_instance: str, order_ref: str | None,
                        program: str | None, guideline: str | None, indication: str | None, outcome: str,
                        suggestion_uuids: list[str], created_at: str, issuer: str | None = None) -> bool:
        """Record what a card decided (and the client it was issued to); a second call with the
        same card_uuid changes nothing.

        Returns True if the row was new.
        """
        row = dict(zip(DECISION_COLUMNS, (card_uuid, service_id, hook, hook_instance, order_ref, program,
                                          guideline, indication, outcome, suggestion_uuids, created_at, issuer)))
        return self._db.run(lambda c: _insert_decision(c, row))

    def record_hook_call(self, decisions: list[dict], audit: dict, shown: ShownRows | None = None) -> int:
        """Store a hook call's decisions (rows keyed by :data:`DECISION_COLUMNS`), its audit
        record and the fingerprints of the cards it showed (repeats.py) in one transaction:
        the trail never shows a call without its decisions, and one commit (one fsync) per call
        is what keeps the embedded store from capping throughput.

        Returns how many decisions were new.
        """
        def work(c) -> int:
            new = sum(_insert_decision(c, row) for row in decisions)
            _insert_audit(c, audit)
            if shown:
                _remember_shown(c, *shown)
            return new
        return self._db.run(work)

    def record_audit(self, audit: dict) -> None:
        """Store one audit record (a call that ended without decisions, e.g. an error)."""
        self._db.run(lambda c: _insert_audit(c, audit))

    def audit_records(self, hook_instance: str | None = None, limit: int = 1000) -> list[dict]:
        """Audit records, oldest first; only one hook instance's if given."""
        where, params = ("WHERE hook_instance = ?", (hook_instance, limit)) if hook_instance else ("", (limit,))
        rows = self._db.run(lambda c: c.execute(f"SELECT record FROM audit {where} ORDER BY seq LIMIT ?",
                                                params).fetchall(), write=False)
        return [json.loads(record) for (record,) in rows]

    def count_audit(self) -> int:
        return self._scalar("SELECT COUNT(*) FROM audit")

    def decision(self, card_uuid: str) -> dict | None:
        """The decision recorded for a card, or None."""
        rows = self._rows("SELECT * FROM decisions WHERE card_uuid = ?", (card_uuid,))
        if not rows:
            return None
        return {**rows[0], "suggestion_uuids": json.loads(rows[0]["suggestion_uuids"])}

    # -- feedback --------------------------------------------------------------------------

    def card_issued(self, card_uuid: str, service_id: str, issuer: str, since: str) -> bool:
        """Whether ``service_id`` issued this card to the client ``issuer`` at or after ``since``
        (UTC isoformat): feedback is taken only for such cards."""
        return bool(self._rows(_ISSUED, (card_uuid, service_id, issuer, since)))

    def record_feedback(self, service_id: str, item: FeedbackItem, received_at: str, issuer: str | None = None) -> bool:
        """Store one feedback item (from the client ``issuer``) unless the same feedback is already stored.

        "The same" means same service, card, outcome, outcomeTimestamp (as an instant),
        accepted suggestion ids (as a set), reason system+code and comment.  Returns True if
        the item was newly stored.
        """
        timestamp = item.outcome_timestamp.isoformat()
        reason = item.reason
        key_fields = [
            service_id, item.card, item.outcome, timestamp, sorted(set(item.accepted_suggestions)),
            reason.system if reason else None, reason.code if reason else None, item.user_comment,
        ]
        key = hashlib.sha256(json.dumps(key_fields, separators=(",", ":")).encode()).hexdigest()
        params = (key, service_id, item.card, item.outcome, timestamp, json.dumps(list(item.accepted_suggestions)),
                  reason.system if reason else None, reason.code if reason else None,
                  reason.display if reason else None, item.user_comment, received_at, issuer)
        return self._db.run(lambda c: c.execute(_INSERT_FEEDBACK, params).rowcount == 1)

    def feedback_for_card(self, card_uuid: str) -> list[dict]:
        """Every stored feedback item for a card, oldest outcome first."""
        rows = self._rows(
            "SELECT service_id, card_uuid, outcome, outcome_timestamp, accepted_suggestions, reason_system,"
            " reason_code, reason_display, user_comment, received_at FROM feedback WHERE card_uuid = ?"
            " ORDER BY outcome_timestamp, id", (card_uuid,))
        return [
            {"service_id": r["service_id"], "card": r["card_uuid"], "outcome": r["outcome"],
             "outcome_timestamp": r["outcome_timestamp"], "accepted_suggestions": json.loads(r["accepted_suggestions"]),
             "reason": None if r["reason_code"] is None else
             {"system": r["reason_system"], "code": r["reason_code"], "display": r["reason_display"]},
             "user_comment": r["user_comment"], "received_at": r["received_at"]}
            for r in rows
        ]

    def count_feedback(self) -> int:
        """How many distinct feedback items are stored."""
        return self._scalar("SELECT COUNT(*) FROM feedback")

    # -- shown decisions (repeats.py) ------------------------------------------------------

    def remember_shown(self, fingerprints: list[str], shown_at: float, forget_before: float | None) -> None:
        """Mark fingerprints as shown now, and forget those shown before ``forget_before``."""
        self._db.run(lambda c: _remember_shown(c, fingerprints, shown_at, forget_before))

    def shown_at(self, fingerprint: str) -> float | None:
        """When a fingerprint was last shown (epoch seconds), or None."""
        rows = self._rows("SELECT shown_at FROM shown_decisions WHERE fingerprint = ?", (fingerprint,))
        return rows[0]["shown_at"] if rows else None

    # -- client tokens (protocol/auth.py replay protection) ---------------------------------

    def claim_token(self, issuer: str, jti: str, expires_at: float, now: float) -> bool:
        """Record a client JWT's (issuer, jti) until ``expires_at``; False when it is already there.

        Atomic (insert-if-absent in one transaction), and shared by every worker and instance on
        this database: a replayed token is refused whichever worker receives it.  Tokens past
        their expiry are forgotten in the same transaction (they would be refused as expired).
        """
        def work(c) -> bool:
            c.execute("DELETE FROM seen_tokens WHERE expires_at < ?", (now,))
            return c.execute(_CLAIM_TOKEN, (issuer, jti, expires_at)).rowcount == 1
        return self._db.run(work)

    # -- reports ---------------------------------------------------------------------------

    def outcome_counts(self) -> list[dict]:
        """Per (program, guideline, indication, outcome): order decisions shown and what clinicians did.

        ``shown`` counts order decisions, not cards (see ``_LATEST_FEEDBACK``): the repeated cards
        of every order-select call about one unchanged order count once.  Each counts by its latest
        feedback (outcomeTimestamp): an EHR may report "accepted" and later "overridden", and
        counting both would make accepted + overridden exceed the decisions shown.
        """
        rows = self._rows(
            _LATEST_FEEDBACK + "SELECT program, guideline, indication, outcome, COUNT(*) AS shown,"
            " COUNT(CASE WHEN feedback = 'accepted' THEN 1 END) AS accepted,"
            " COUNT(CASE WHEN feedback = 'overridden' THEN 1 END) AS overridden,"
            " COUNT(CASE WHEN feedback IS NULL THEN 1 END) AS no_feedback"
            " FROM order_decisions GROUP BY program, guideline, indication, outcome")
        return sorted(rows, key=lambda r: _order(r, "program", "guideline", "indication", "outcome"))

    def override_reason_counts(self) -> list[dict]:
        """Override reasons of order decisions whose latest feedback is "overridden", with counts.

        Grouped by the card's (program, guideline, indication, outcome) and reason system+code;
        ``with_comment`` counts overrides that carried a userComment.  The comment text itself
        is never returned: aggregate views must not leak free text a clinician typed.  Sorted
        here, not in SQL, because the engines order NULLs and text differently.
        """
        rows = self._rows(
            _LATEST_FEEDBACK + "SELECT program, guideline, indication, outcome,"
            " reason_system, reason_code, MAX(reason_display) AS reason_display,"
            " COUNT(*) AS overrides, COUNT(user_comment) AS with_comment"
            " FROM order_decisions WHERE feedback = 'overridden'"
            " GROUP BY program, guideline, indication, outcome, reason_system, reason_code")
        return sorted(rows, key=lambda r: (_order(r, "program", "guideline", "indication", "outcome"),
                                           -r["overrides"], _order(r, "reason_code", "reason_system")))

    def count_decisions(self) -> int:
        """How many cards (decisions) are stored."""
        return self._scalar("SELECT COUNT(*) FROM decisions")

    def count_cards_without_decision(self) -> int:
        """Cards that have feedback but no stored decision issued to the client that sent it
        (decided by another database, or feedback stored before cards were bound to clients)."""
        return self._scalar("SELECT COUNT(DISTINCT card_uuid) FROM feedback f WHERE NOT EXISTS (SELECT 1 FROM"
                            " decisions d WHERE d.card_uuid = f.card_uuid AND COALESCE(d.issuer, '') ="
                            " COALESCE(f.issuer, ''))")

    # -- plumbing --------------------------------------------------------------------------

    def _rows(self, sql: str, params: tuple = ()) -> list[dict]:
        def work(c) -> list[dict]:
            cursor = c.execute(sql, params)
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]
        return self._db.run(work, write=False)

    def _scalar(self, sql: str) -> int:
        return self._db.run(lambda c: c.execute(sql).fetchone()[0], write=False)

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _insert_decision(cursor, row: dict) -> bool:
    values = tuple(json.dumps(list(row[k])) if k == "suggestion_uuids" else row.get(k) for k in DECISION_COLUMNS)
    return cursor.execute(_INSERT_DECISION, values).rowcount == 1


def _remember_shown(cursor, fingerprints: list[str], shown_at: float, forget_before: float | None) -> None:
    rows = [(f, shown_at) for f in sorted(set(fingerprints))]  # one lock order: no deadlocks
    if rows:
        cursor.executemany(_REMEMBER_SHOWN, rows)
    if forget_before is not None:
        cursor.execute("DELETE FROM shown_decisions WHERE shown_at < ?", (forget_before,))


def _insert_audit(cursor, audit: dict) -> None:
    record = json.dumps(audit, sort_keys=True, separators=(",", ":"))
    cursor.execute(_INSERT_AUDIT, (audit["auditId"], audit["time"], audit["service"], audit.get("hook"),
                                   audit.get("hookInstance"), audit["status"], record))


def _order(row: dict, *keys: str) -> tuple:
    """Sort key as SQLite's ORDER BY always gave it: NULLs first, then text by code point."""
    return tuple((row[k] is not None, row[k] or "") for k in keys)

