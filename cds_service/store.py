"""The embedded SQLite store for card decisions and clinician feedback.

Why SQLite: the service must keep an audit trail of what each card decided and what the
clinician did with it (CRD asks for retained logs; feedback may arrive several times), without
making operators run a database.  Why these choices:

* One connection per :class:`Store`, shared by the threads of one process behind a lock.
  Writes are tiny, so serialising them costs nothing measurable and avoids the pitfalls of
  per-thread connections that are never closed.  Gunicorn workers (processes) each open their
  own Store on the same file; WAL mode lets readers and the single writer proceed, and the
  busy timeout makes writers wait for each other instead of failing.
* ``synchronous=FULL`` so a stored row survives a power cut, not only a process crash.
* Idempotency via a UNIQUE key column (a SHA-256 of the fields that make feedback "the same"),
  because SQLite treats NULLs as distinct in composite UNIQUE constraints.
* No PHI: decisions hold the card's uuid, the order reference the EHR sent and the rule
  inputs/outputs, never a patient id or a name.  Timestamps are passed in (no clock here).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
from pathlib import Path

from .errors import CdsConfigError
from .feedback import FeedbackItem

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
    card_uuid TEXT PRIMARY KEY,
    service_id TEXT NOT NULL,
    hook TEXT NOT NULL,
    hook_instance TEXT NOT NULL,
    order_ref TEXT,
    program TEXT,
    guideline TEXT,
    indication TEXT,
    outcome TEXT NOT NULL,
    suggestion_uuids TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_hook_instance ON decisions (hook_instance);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dedupe_key TEXT NOT NULL UNIQUE,
    service_id TEXT NOT NULL,
    card_uuid TEXT NOT NULL,
    outcome TEXT NOT NULL,
    outcome_timestamp TEXT NOT NULL,
    accepted_suggestions TEXT NOT NULL,
    reason_system TEXT,
    reason_code TEXT,
    reason_display TEXT,
    user_comment TEXT,
    received_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_card ON feedback (card_uuid);
"""

# Each card's latest feedback item (ties on outcomeTimestamp: the later arrival).  Timestamps are
# stored as UTC isoformat strings, so text order is time order.
_LATEST_FEEDBACK = (
    "WITH latest AS (SELECT * FROM (SELECT f.*, ROW_NUMBER() OVER (PARTITION BY card_uuid"
    " ORDER BY outcome_timestamp DESC, id DESC) AS rank FROM feedback f) WHERE rank = 1) "
)


class Store:
    """Decisions and feedback in one SQLite database; safe to share between threads."""

    def __init__(self, path: str):
        self.path = str(path)
        self._lock = threading.Lock()
        in_memory = self.path == ":memory:"
        if not in_memory:
            Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so nothing is left open.
        self._conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            if not in_memory:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")
            self._create_schema()
        except BaseException:
            self._conn.close()
            raise

    def _create_schema(self) -> None:
        """Create tables if missing; refuse a database written by a newer schema."""
        with self._transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._conn.execute(statement)
            row = self._conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            if row[0] is None:
                self._conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif row[0] > SCHEMA_VERSION:
                raise CdsConfigError(
                    f"{self.path} has schema version {row[0]}, newer than this release "
                    f"understands ({SCHEMA_VERSION}); upgrade spine-cds or point "
                    "SPINE_CDS_DATABASE at another file."
                )

    @contextlib.contextmanager
    def _transaction(self):
        """BEGIN IMMEDIATE … COMMIT/ROLLBACK, so two processes never interleave a write."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- decisions -------------------------------------------------------------------------

    def record_decision(
        self,
        card_uuid: str,
        service_id: str,
        hook: str,
        hook_instance: str,
        order_ref: str | None,
        program: str | None,
        guideline: str | None,
        indication: str | None,
        outcome: str,
        suggestion_uuids: list[str],
        created_at: str,
    ) -> bool:
        """Record what a card decided; a second call with the same card_uuid changes nothing.

        Returns True if the row was new.
        """
        with self._lock:
            cursor = self._conn.execute(
                "INSERT OR IGNORE INTO decisions (card_uuid, service_id, hook, hook_instance,"
                " order_ref, program, guideline, indication, outcome, suggestion_uuids, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (card_uuid, service_id, hook, hook_instance, order_ref, program, guideline,
                 indication, outcome, json.dumps(list(suggestion_uuids)), created_at),
            )
            return cursor.rowcount == 1

    def decision(self, card_uuid: str) -> dict | None:
        """The decision recorded for a card, or None."""
        with self._lock:
            cursor = self._conn.execute("SELECT * FROM decisions WHERE card_uuid = ?", (card_uuid,))
            row = cursor.fetchone()
            if row is None:
                return None
            result = dict(zip([c[0] for c in cursor.description], row))
        result["suggestion_uuids"] = json.loads(result["suggestion_uuids"])
        return result

    # -- feedback --------------------------------------------------------------------------

    def record_feedback(self, service_id: str, item: FeedbackItem, received_at: str) -> bool:
        """Store one feedback item unless the same feedback is already stored.

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
        with self._lock:
            cursor = self._conn.execute(
                "INSERT OR IGNORE INTO feedback (dedupe_key, service_id, card_uuid, outcome,"
                " outcome_timestamp, accepted_suggestions, reason_system, reason_code,"
                " reason_display, user_comment, received_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, service_id, item.card, item.outcome, timestamp,
                 json.dumps(list(item.accepted_suggestions)),
                 reason.system if reason else None, reason.code if reason else None,
                 reason.display if reason else None, item.user_comment, received_at),
            )
            return cursor.rowcount == 1

    def feedback_for_card(self, card_uuid: str) -> list[dict]:
        """Every stored feedback item for a card, oldest outcome first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT service_id, card_uuid, outcome, outcome_timestamp, accepted_suggestions,"
                " reason_system, reason_code, reason_display, user_comment, received_at"
                " FROM feedback WHERE card_uuid = ? ORDER BY outcome_timestamp, id",
                (card_uuid,),
            ).fetchall()
        return [
            {
                "service_id": service_id,
                "card": card,
                "outcome": outcome,
                "outcome_timestamp": timestamp,
                "accepted_suggestions": json.loads(suggestions),
                "reason": None if code is None else {"system": system, "code": code, "display": display},
                "user_comment": comment,
                "received_at": received_at,
            }
            for (service_id, card, outcome, timestamp, suggestions, system, code, display,
                 comment, received_at) in rows
        ]

    def count_feedback(self) -> int:
        """How many distinct feedback items are stored."""
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM feedback").fetchone()[0]

    # -- reports ---------------------------------------------------------------------------

    def outcome_counts(self) -> list[dict]:
        """Per (program, guideline, indication, outcome): cards shown and what clinicians did.

        A card counts once, by its latest feedback (outcomeTimestamp): an EHR may report
        "accepted" and later "overridden" for one card, and counting both would make
        accepted + overridden exceed the cards shown.  Feedback joins decisions by card uuid.
        """
        return self._rows(
            _LATEST_FEEDBACK + "SELECT d.program, d.guideline, d.indication, d.outcome, COUNT(*) AS shown,"
            " COUNT(CASE WHEN l.outcome = 'accepted' THEN 1 END) AS accepted,"
            " COUNT(CASE WHEN l.outcome = 'overridden' THEN 1 END) AS overridden,"
            " COUNT(CASE WHEN l.card_uuid IS NULL THEN 1 END) AS no_feedback"
            " FROM decisions d LEFT JOIN latest l ON l.card_uuid = d.card_uuid"
            " GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
        )

    def override_reason_counts(self) -> list[dict]:
        """Override reasons of cards whose latest feedback is "overridden", with counts.

        Grouped by the card's (program, guideline, indication, outcome) and reason system+code;
        ``with_comment`` counts overrides that carried a userComment.  The comment text itself
        is never returned: aggregate views must not leak free text a clinician typed.
        """
        return self._rows(
            _LATEST_FEEDBACK + "SELECT d.program, d.guideline, d.indication, d.outcome,"
            " l.reason_system, l.reason_code, MAX(l.reason_display) AS reason_display,"
            " COUNT(*) AS overrides, COUNT(l.user_comment) AS with_comment"
            " FROM decisions d JOIN latest l ON l.card_uuid = d.card_uuid WHERE l.outcome = 'overridden'"
            " GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, overrides DESC, 6"
        )

    def count_decisions(self) -> int:
        """How many cards (decisions) are stored."""
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]

    def count_cards_without_decision(self) -> int:
        """Cards that have feedback but no stored decision (e.g. decided by another database)."""
        with self._lock:
            return self._conn.execute(
                "SELECT COUNT(DISTINCT card_uuid) FROM feedback"
                " WHERE card_uuid NOT IN (SELECT card_uuid FROM decisions)").fetchone()[0]

    def _rows(self, sql: str) -> list[dict]:
        with self._lock:
            cursor = self._conn.execute(sql)
            names = [c[0] for c in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
