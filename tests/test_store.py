"""The store on SQLite and PostgreSQL: the same assertions on both (idempotent decisions and
feedback, the report queries, the audit table, shown fingerprints, transactions, persistence,
schema versions and migration, thread safety)."""
from __future__ import annotations

import random
import sqlite3
import threading
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from cds_service.errors import CdsConfigError
from cds_service.store.feedback import Coding, FeedbackItem, parse_feedback
from cds_service.store.database import DECISION_COLUMNS, SCHEMA_VERSION, Store
from cds_service.store.schema import MIGRATIONS, statements
from pg_server import pg_database, pg_server  # noqa: F401  (fixtures)

T0 = datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc)
RECEIVED = "2024-05-01T12:30:05+00:00"
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def database(request, tmp_path) -> str:
    """A new, empty database of each kind: a SQLite file, or a PostgreSQL URL."""
    if request.param == "postgresql":
        return request.getfixturevalue("pg_database")
    return str(tmp_path / "db.sqlite3")


@pytest.fixture(params=["sqlite-memory", "postgresql"])
def store(request):
    location = request.getfixturevalue("pg_database") if request.param == "postgresql" else ":memory:"
    with Store(location) as opened:
        yield opened


def raw_execute(database: str, *sql: tuple) -> list:
    """Run (statement, parameters) pairs on the database behind the store's back; the last one's rows."""
    if database.startswith("postgresql://"):
        with psycopg.connect(database, autocommit=True) as conn:
            for statement, params in sql:
                cursor = conn.execute(statement.replace("?", "%s"), params or None)
            return cursor.fetchall() if cursor.description else []
    conn = sqlite3.connect(database, isolation_level=None)
    try:
        for statement, params in sql:
            cursor = conn.execute(statement, params)
        return cursor.fetchall()
    finally:
        conn.close()


def accepted(card="card-1", suggestions=("s-1",), when=T0) -> FeedbackItem:
    return FeedbackItem(card=card, outcome="accepted", outcome_timestamp=when,
                        accepted_suggestions=tuple(suggestions))


def decide(store: Store, card_uuid="card-1", outcome="approved") -> bool:
    return store.record_decision(
        card_uuid, "spine-imaging", "order-sign", "hi-1", "ServiceRequest/sr-1", "nia",
        "nia-spine-2024", "radiculopathy-6wk", outcome, ["s-1", "s-2"], "2024-05-01T12:29:00+00:00",
    )


def audit(audit_id="a-1", hook_instance="hi-1", **extra) -> dict:
    return {"auditId": audit_id, "time": RECEIVED, "service": "svc", "hook": "order-select",
            "hookInstance": hook_instance, "status": 200, "orders": [], **extra}


def test_same_feedback_twice_is_stored_once(store):
    assert store.record_feedback("spine-imaging", accepted(), RECEIVED) is True
    assert store.record_feedback("spine-imaging", accepted(), "2024-05-01T13:00:00+00:00") is False
    assert store.count_feedback() == 1
    [row] = store.feedback_for_card("card-1")
    assert row["received_at"] == RECEIVED  # the first arrival is kept
    assert row["accepted_suggestions"] == ["s-1"]
    assert row["outcome_timestamp"] == "2024-05-01T12:30:00+00:00"


def test_z_and_offset_forms_of_one_instant_are_the_same_feedback(store):
    body = {"card": "c", "outcome": "accepted", "acceptedSuggestions": [{"id": "s"}]}
    [zulu] = parse_feedback({"feedback": [{**body, "outcomeTimestamp": "2024-05-01T12:30:00Z"}]})
    [plus] = parse_feedback({"feedback": [{**body, "outcomeTimestamp": "2024-05-01T14:30:00+02:00"}]})
    assert store.record_feedback("svc", zulu, RECEIVED) is True
    assert store.record_feedback("svc", plus, RECEIVED) is False


def test_suggestion_order_does_not_matter(store):
    assert store.record_feedback("svc", accepted(suggestions=("a", "b")), RECEIVED)
    assert not store.record_feedback("svc", accepted(suggestions=("b", "a")), RECEIVED)


@pytest.mark.parametrize("other", [
    accepted(card="card-2"),
    accepted(suggestions=("s-2",)),
    accepted(when=T0 + timedelta(seconds=1)),
    FeedbackItem(card="card-1", outcome="overridden", outcome_timestamp=T0),
    FeedbackItem(card="card-1", outcome="overridden", outcome_timestamp=T0, reason=Coding(code="x")),
    FeedbackItem(card="card-1", outcome="overridden", outcome_timestamp=T0, user_comment="why"),
], ids=["card", "suggestion", "timestamp", "outcome", "reason", "comment"])
def test_feedback_differing_in_one_field_is_new(store, other):
    assert store.record_feedback("svc", accepted(), RECEIVED)
    assert store.record_feedback("svc", other, RECEIVED) is True
    assert store.record_feedback("other-svc", accepted(), RECEIVED) is True


def test_reason_code_differing_is_new_but_display_is_not(store):
    base = dict(card="c", outcome="overridden", outcome_timestamp=T0)
    assert store.record_feedback("svc", FeedbackItem(**base, reason=Coding("a", "sys", "A")), RECEIVED)
    assert not store.record_feedback("svc", FeedbackItem(**base, reason=Coding("a", "sys", "other")), RECEIVED)
    assert store.record_feedback("svc", FeedbackItem(**base, reason=Coding("b", "sys", "A")), RECEIVED)
    assert store.record_feedback("svc", FeedbackItem(**base, reason=Coding("a", "sys2", "A")), RECEIVED)


def test_feedback_for_card_returns_reason_and_comment(store):
    item = FeedbackItem(card="c", outcome="overridden", outcome_timestamp=T0,
                        reason=Coding("need-more-info", "urn:sys", "Need more info"), user_comment="later")
    store.record_feedback("svc", item, RECEIVED)
    assert store.feedback_for_card("c") == [{
        "service_id": "svc", "card": "c", "outcome": "overridden",
        "outcome_timestamp": "2024-05-01T12:30:00+00:00", "accepted_suggestions": [],
        "reason": {"system": "urn:sys", "code": "need-more-info", "display": "Need more info"},
        "user_comment": "later", "received_at": RECEIVED,
    }]
    assert store.feedback_for_card("unknown") == []


def test_decisions_are_idempotent_on_card_uuid(store):
    assert decide(store) is True
    assert decide(store, outcome="pa-needed") is False
    decision = store.decision("card-1")
    assert decision["outcome"] == "approved"
    assert decision["order_ref"] == "ServiceRequest/sr-1"
    assert decision["suggestion_uuids"] == ["s-1", "s-2"]
    assert store.decision("nope") is None


def test_report_queries_count_each_card_by_its_latest_feedback(store):
    """The same rows, in the same order, on both engines — NULLs and ties included."""
    cards = {"doc-1": ("nia", "g", "ind", "documentation"), "doc-2": ("nia", "g", "ind", "documentation"),
             "none-1": ("nia", None, None, "no-policy"), "alt-1": ("nia", "g", None, "alternative")}
    for card, (program, guideline, indication, outcome) in cards.items():
        store.record_decision(card, "svc", "order-select", f"hi-{card}", f"ServiceRequest/{card}", program, guideline,
                              indication, outcome, [], RECEIVED)
    code = Coding("clinical-judgment", "urn:sys", "Judgment")
    feedback = [FeedbackItem("doc-1", "overridden", T0, reason=code, user_comment="secret words"),
                FeedbackItem("doc-2", "overridden", T0, user_comment="comment only"),
                FeedbackItem("alt-1", "overridden", T0, reason=code),
                FeedbackItem("alt-1", "accepted", T0 + timedelta(minutes=1), accepted_suggestions=("s",)),
                FeedbackItem("ghost", "accepted", T0, accepted_suggestions=("s",))]
    for item in feedback:
        assert store.record_feedback("svc", item, RECEIVED)
    counts = [(r["program"], r["guideline"], r["indication"], r["outcome"], r["shown"], r["accepted"],
               r["overridden"], r["no_feedback"]) for r in store.outcome_counts()]
    assert counts == [("nia", None, None, "no-policy", 1, 0, 0, 1), ("nia", "g", None, "alternative", 1, 1, 0, 0),
                      ("nia", "g", "ind", "documentation", 2, 0, 2, 0)]
    reasons = [(r["reason_code"], r["reason_display"], r["overrides"], r["with_comment"])
               for r in store.override_reason_counts()]
    assert reasons == [(None, None, 1, 1), ("clinical-judgment", "Judgment", 1, 1)]
    assert "secret" not in repr(store.override_reason_counts())
    assert store.count_decisions() == 4 and store.count_cards_without_decision() == 1


def test_a_hook_call_is_stored_with_its_audit_record_in_one_transaction(store):
    row = dict(zip(DECISION_COLUMNS, ("card-9", "svc", "order-select", "hi-9", "ServiceRequest/sr-9", "nia", "g",
                                      "ind", "approve", ["s-9"], RECEIVED)))
    broken = {k: v for k, v in audit("a-9", "hi-9").items() if k != "status"}
    with pytest.raises(KeyError):
        store.record_hook_call([row], broken)
    assert store.decision("card-9") is None and store.count_audit() == 0  # rolled back together
    assert store.record_hook_call([row], audit("a-9", "hi-9", cards=["card-9"])) == 1
    assert store.record_hook_call([row], audit("a-9", "hi-9", cards=["card-9"])) == 0  # a retried call: no duplicates
    assert store.decision("card-9")["suggestion_uuids"] == ["s-9"]
    assert store.count_audit() == 1
    store.record_audit(audit("a-10", "hi-10", status=400, error="invalid"))
    assert [r["hookInstance"] for r in store.audit_records()] == ["hi-9", "hi-10"]
    assert store.audit_records(hook_instance="hi-10") == [audit("a-10", "hi-10", status=400, error="invalid")]


def test_shown_fingerprints_are_remembered_and_forgotten(store):
    store.remember_shown(["b", "a", "a"], shown_at=100.0, forget_before=0.0)
    assert store.shown_at("a") == 100.0 and store.shown_at("b") == 100.0
    store.remember_shown(["a"], shown_at=200.5, forget_before=150.0)
    assert store.shown_at("a") == 200.5
    assert store.shown_at("b") is None  # older than the window: deleted
    assert store.shown_at("never") is None


def test_database_persists_across_reopen(database):
    with Store(database) as first:
        decide(first)
        first.record_feedback("svc", accepted(), RECEIVED)
        first.record_audit(audit())
        assert first.schema_found == 0
    with Store(database) as second:
        assert second.schema_found == SCHEMA_VERSION
        assert second.count_feedback() == 1 and second.count_audit() == 1
        assert second.record_feedback("svc", accepted(), RECEIVED) is False
        assert second.decision("card-1")["hook_instance"] == "hi-1"
        assert decide(second) is False
    assert raw_execute(database, ("SELECT version FROM schema_version", ())) == [(SCHEMA_VERSION,)]


def test_sqlite_file_is_in_wal_mode_and_folders_are_created(tmp_path):
    path = tmp_path / "nested" / "dir" / "spine-cds.sqlite3"
    Store(str(path)).close()
    assert raw_execute(str(path), ("PRAGMA journal_mode", ())) == [("wal",)]


def test_a_newer_schema_is_refused(database):
    Store(database).close()
    raw_execute(database, ("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,)))
    with pytest.raises(CdsConfigError, match="newer") as info:
        Store(database)
    assert "s3cret" not in info.value.message


# The tables exactly as the first release (schema version 1) created them on SQLite.
SQLITE_VERSION_1 = [
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    "CREATE TABLE decisions (card_uuid TEXT PRIMARY KEY, service_id TEXT NOT NULL, hook TEXT NOT NULL,"
    " hook_instance TEXT NOT NULL, order_ref TEXT, program TEXT, guideline TEXT, indication TEXT,"
    " outcome TEXT NOT NULL, suggestion_uuids TEXT NOT NULL, created_at TEXT NOT NULL)",
    "CREATE INDEX decisions_hook_instance ON decisions (hook_instance)",
    "CREATE TABLE feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, dedupe_key TEXT NOT NULL UNIQUE,"
    " service_id TEXT NOT NULL, card_uuid TEXT NOT NULL, outcome TEXT NOT NULL, outcome_timestamp TEXT NOT NULL,"
    " accepted_suggestions TEXT NOT NULL, reason_system TEXT, reason_code TEXT, reason_display TEXT,"
    " user_comment TEXT, received_at TEXT NOT NULL)",
    "CREATE INDEX feedback_card ON feedback (card_uuid)",
    "CREATE TABLE shown_decisions (fingerprint TEXT PRIMARY KEY, shown_at REAL NOT NULL)",
]


def test_a_version_1_database_is_migrated_without_losing_rows(database):
    dialect = "postgresql" if database.startswith("postgresql://") else "sqlite"
    ddl = SQLITE_VERSION_1 if dialect == "sqlite" else [
        "CREATE TABLE schema_version (version INTEGER NOT NULL)", *statements(MIGRATIONS[1], dialect)]
    raw_execute(database, *[(s, ()) for s in ddl],
                ("INSERT INTO schema_version VALUES (1)", ()),
                ("INSERT INTO decisions VALUES ('old-card', 'svc', 'order-select', 'hi-old', 'ServiceRequest/1',"
                 " 'nia', 'g', 'ind', 'approve', '[]', '2024-01-01T00:00:00+00:00')", ()),
                ("INSERT INTO feedback (dedupe_key, service_id, card_uuid, outcome, outcome_timestamp,"
                 " accepted_suggestions, received_at) VALUES ('k', 'svc', 'old-card', 'accepted',"
                 " '2024-01-01T00:00:00+00:00', '[\"s\"]', '2024-01-01T00:00:01+00:00')", ()))
    with Store(database) as migrated:
        assert migrated.schema_found == 1
        assert migrated.decision("old-card")["outcome"] == "approve"
        assert migrated.feedback_for_card("old-card")[0]["accepted_suggestions"] == ["s"]
        assert migrated.record_feedback("svc", accepted(card="old-card"), RECEIVED)  # ids continue after the old rows
        migrated.record_audit(audit())
        migrated.remember_shown(["f"], 1.0, 0.0)
        assert migrated.count_audit() == 1 and migrated.shown_at("f") == 1.0
    assert raw_execute(database, ("SELECT version FROM schema_version", ())) == [(SCHEMA_VERSION,)]


def test_close_twice_is_harmless(store):
    store.close()
    store.close()


def _hammer(make_store, threads=8, per_thread=50):
    """Every thread sends the same 50 items in its own order; each must be stored once."""
    items = [accepted(card=f"card-{i}", suggestions=(f"s-{i}",)) for i in range(per_thread)]
    results: list[bool] = []
    errors: list[BaseException] = []
    results_lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def work(seed):
        store = make_store()
        try:
            mine = items[:]
            random.Random(seed).shuffle(mine)
            barrier.wait()
            outcomes = [store.record_feedback("svc", item, RECEIVED) for item in mine]
            with results_lock:
                results.extend(outcomes)
        except BaseException as exc:  # reported below; a thread must not die silently
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(seed,)) for seed in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    assert len(results) == threads * per_thread
    assert results.count(True) == per_thread
    return items


def test_concurrent_feedback_from_threads_sharing_one_store(store):
    items = _hammer(lambda: store)
    assert store.count_feedback() == len(items)
    assert all(len(store.feedback_for_card(i.card)) == 1 for i in items)


def test_concurrent_feedback_from_separate_connections(database):
    """Like several gunicorn workers (or instances), each with its own Store on one database."""
    opened: list[Store] = []
    lock = threading.Lock()

    def make_store():
        store = Store(database)
        with lock:
            opened.append(store)
        return store

    try:
        items = _hammer(make_store)
    finally:
        for store in opened:
            store.close()
    with Store(database) as check:
        assert check.count_feedback() == len(items)



def test_sqlite_writers_of_several_processes_take_turns_on_a_file_lock(tmp_path):
    """A second writer waits for the turn (no SQLite busy-handler sleeps) and writes as soon as
    it is given back; held too long, the store answers 'unavailable' instead of hanging."""
    from cds_service.store.schema import StoreUnavailable
    from cds_service.store.sqlite import WriterTurn
    path = tmp_path / "s.sqlite3"
    with Store(str(path)) as first, Store(str(path)) as second:
        holder = WriterTurn(str(path) + ".lock")  # as another process would hold it
        holder.take(1.0)
        done = threading.Event()
        writer = threading.Thread(target=lambda: (_decide(second, "held"), done.set()))
        writer.start()
        assert not done.wait(0.3)  # waiting for its turn
        holder.give_back()
        assert done.wait(5)
        writer.join()
        _decide(first, "after")
        assert first.count_decisions() == 2
        holder.take(1.0)
        with pytest.raises(StoreUnavailable):
            second._db._turn.take(0.2)
        holder.give_back()
        holder.close()


def _decide(store: Store, card: str) -> None:
    store.record_decision(card, "svc", "order-select", "h", "ServiceRequest/1", "p", "g", "i", "approve", [], "t")


def test_a_client_token_is_claimed_once_and_forgotten_after_it_expires(store):
    """Replay protection for every worker on this database (protocol/auth.py)."""
    assert store.claim_token("https://ehr.example.org", "jti-1", expires_at=1_000.0, now=700.0) is True
    assert store.claim_token("https://ehr.example.org", "jti-1", expires_at=1_000.0, now=701.0) is False
    assert store.claim_token("https://other.example.org", "jti-1", expires_at=1_000.0, now=702.0) is True
    # once expired it is forgotten: such a token would be refused as expired before reaching here
    assert store.claim_token("https://ehr.example.org", "jti-1", expires_at=2_000.0, now=1_001.0) is True


def test_a_new_sqlite_database_is_private_to_its_owner(tmp_path):
    """#14 finding 12: it was created world-readable (0644), with free-text comments inside."""
    import os
    import stat
    path = tmp_path / "fresh" / "nested" / "spine-cds.sqlite3"
    with Store(str(path)) as store:
        store.record_audit({"auditId": "a1", "time": "2026-11-22T10:00:00Z", "service": "s", "status": 200})
        modes = {p.name: stat.S_IMODE(os.stat(p).st_mode) for p in path.parent.iterdir()}
    assert modes["spine-cds.sqlite3"] == 0o600 and all(m & 0o077 == 0 for m in modes.values()), modes
    assert stat.S_IMODE(os.stat(path.parent).st_mode) & 0o077 == 0


def test_a_card_is_issued_to_one_client_and_only_its_feedback_counts(store):
    """#14 finding 11, on both engines: a card remembers the issuer it was issued to (schema
    version 4); feedback another client stored for it (before the check existed) is neither the
    card's latest feedback nor counted, and the report flags it."""
    store.record_decision("card-a", "svc", "order-select", "hi-a", "ServiceRequest/sr", "nia", "g", "i", "approve",
                          ["s-1"], "2026-11-22T10:00:00+00:00", issuer="https://ehr-a")
    assert store.card_issued("card-a", "svc", "https://ehr-a", "2026-11-22T09:00:00+00:00")
    assert not store.card_issued("card-a", "svc", "https://ehr-b", "2026-11-22T09:00:00+00:00")
    assert not store.card_issued("card-a", "other-svc", "https://ehr-a", "2026-11-22T09:00:00+00:00")
    assert not store.card_issued("card-a", "svc", "https://ehr-a", "2026-11-22T11:00:00+00:00")   # too old
    assert not store.card_issued("made-up", "svc", "https://ehr-a", "2026-11-22T09:00:00+00:00")
    store.record_feedback("svc", accepted("card-a"), RECEIVED, issuer="https://ehr-a")
    later = FeedbackItem(card="card-a", outcome="overridden", outcome_timestamp=T0 + timedelta(minutes=5))
    store.record_feedback("svc", later, RECEIVED, issuer="https://ehr-b")
    [row] = store.outcome_counts()
    assert (row["accepted"], row["overridden"]) == (1, 0)
    assert store.override_reason_counts() == [] and store.count_cards_without_decision() == 1
