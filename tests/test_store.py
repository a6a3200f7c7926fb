"""The SQLite store: idempotent decisions and feedback, persistence, thread safety (check 48)."""
from __future__ import annotations

import random
import sqlite3
import threading
from datetime import datetime, timedelta, timezone

import pytest

from cds_service.errors import CdsConfigError
from cds_service.feedback import Coding, FeedbackItem, parse_feedback
from cds_service.store import SCHEMA_VERSION, Store

T0 = datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc)
RECEIVED = "2024-05-01T12:30:05+00:00"


@pytest.fixture
def store():
    with Store(":memory:") as opened:
        yield opened


def accepted(card="card-1", suggestions=("s-1",), when=T0) -> FeedbackItem:
    return FeedbackItem(card=card, outcome="accepted", outcome_timestamp=when,
                        accepted_suggestions=tuple(suggestions))


def decide(store: Store, card_uuid="card-1", outcome="approved") -> bool:
    return store.record_decision(
        card_uuid, "spine-imaging", "order-sign", "hi-1", "ServiceRequest/sr-1", "nia",
        "nia-spine-2024", "radiculopathy-6wk", outcome, ["s-1", "s-2"], "2024-05-01T12:29:00+00:00",
    )


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


def test_file_database_persists_across_reopen(tmp_path):
    path = tmp_path / "nested" / "dir" / "spine-cds.sqlite3"
    with Store(str(path)) as first:
        decide(first)
        first.record_feedback("svc", accepted(), RECEIVED)
    assert path.exists()
    with Store(str(path)) as second:
        assert second.count_feedback() == 1
        assert second.record_feedback("svc", accepted(), RECEIVED) is False
        assert second.decision("card-1")["hook_instance"] == "hi-1"
        assert decide(second) is False
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    finally:
        conn.close()


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "db.sqlite3"
    Store(str(path)).close()
    conn = sqlite3.connect(path)
    try:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
        conn.commit()
    finally:
        conn.close()
    with pytest.raises(CdsConfigError, match="newer"):
        Store(str(path))


def test_close_twice_is_harmless():
    opened = Store(":memory:")
    opened.close()
    opened.close()


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


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_concurrent_feedback_from_threads_sharing_one_store(tmp_path, kind):
    path = ":memory:" if kind == "memory" else str(tmp_path / "db.sqlite3")
    with Store(path) as shared:
        items = _hammer(lambda: shared)
        assert shared.count_feedback() == len(items)
        assert all(len(shared.feedback_for_card(i.card)) == 1 for i in items)


def test_concurrent_feedback_from_separate_connections(tmp_path):
    """Like several gunicorn workers, each with its own Store on one file."""
    path = str(tmp_path / "db.sqlite3")
    opened: list[Store] = []
    lock = threading.Lock()

    def make_store():
        store = Store(path)
        with lock:
            opened.append(store)
        return store

    try:
        items = _hammer(make_store)
    finally:
        for store in opened:
            store.close()
    with Store(path) as check:
        assert check.count_feedback() == len(items)
