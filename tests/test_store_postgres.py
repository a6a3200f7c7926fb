"""PostgreSQL-only behaviour of the store: configuration errors that never show the password,
timeouts on every statement, reconnecting, 503 instead of a hang, several instances sharing one
database.  (The assertions both engines share are in test_store.py.)"""
from __future__ import annotations

import json
from datetime import datetime, timezone

import psycopg
import pytest

from cds_service import close_app
from cds_service import create_app
from cds_service.tools.cli import SAMPLES, main
from cds_service.errors import CdsConfigError
from cds_service.store.feedback import FeedbackItem
from cds_service.store.database import Store, StoreUnavailable
from cds_service.store import postgres as store_postgres
from cds_service.store.database_url import mask_url
from pg_server import PASSWORD, free_port, pg_database, pg_server  # noqa: F401  (fixtures)

SELECT, SIGN = "/cds-services/spine-imaging-order-select", "/cds-services/spine-imaging-order-sign"
SECRET = "hunter2-do-not-print"
T0 = datetime(2026, 11, 22, 9, 0, tzinfo=timezone.utc)


def item(card: str) -> FeedbackItem:
    return FeedbackItem(card=card, outcome="accepted", outcome_timestamp=T0, accepted_suggestions=("s",))


def backend_pid(store: Store) -> int:
    return store._db.run(lambda c: c.execute("SELECT pg_backend_pid()").fetchone()[0])


def admin(pg_server, sql: str, *params) -> None:
    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        conn.execute(sql, params or None)


@pytest.mark.parametrize("url, masked", [
    ("postgresql://spine:pw@db:5432/cds", "postgresql://spine:***@db:5432/cds"),
    ("postgres://spine:p%40ss:w@db/cds?sslmode=require", "postgres://spine:***@db/cds?sslmode=require"),
    ("postgresql://db/cds?user=spine&password=pw&sslmode=require",
     "postgresql://db/cds?user=spine&password=***&sslmode=require"),
    ("postgresql://spine@db/cds", "postgresql://spine@db/cds"),
    ("postgresql:///cds?host=/run/postgresql", "postgresql:///cds?host=/run/postgresql"),
])
def test_mask_url_hides_only_the_password(url, masked):
    assert mask_url(url) == masked


@pytest.mark.parametrize("url, fragment", [
    (f"mysql://spine:{SECRET}@127.0.0.1/cds", "is not supported"),
    (f"postgresql://spine:{SECRET}@127.0.0.1:{{port}}/cds", "cannot connect"),
    (f"postgresql://spine:{SECRET}@127.0.0.1:notaport/cds", "cannot connect"),
], ids=["other-scheme", "nothing-listening", "bad-port"])
def test_a_bad_or_unreachable_url_stops_startup_naming_the_setting_not_the_password(url, fragment):
    url = url.replace("{port}", str(free_port()))
    with pytest.raises(CdsConfigError) as info:
        create_app({"SPINE_CDS_DATABASE": url, "SPINE_CDS_AUTH": "off"})
    assert "SPINE_CDS_DATABASE=" in info.value.message and fragment in info.value.message
    assert SECRET not in info.value.message and "***" in info.value.message


def test_a_wrong_password_is_a_config_error_without_the_password(pg_server):
    with pytest.raises(CdsConfigError) as info:
        Store(pg_server.url(password=SECRET))
    assert "authentication failed" in info.value.message
    assert SECRET not in info.value.message and PASSWORD not in info.value.message


def test_every_session_has_statement_and_lock_timeouts(pg_database):
    with Store(pg_database) as store:
        settings = store._db.run(lambda c: c.execute(
            "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'),"
            " current_setting('search_path'), current_setting('application_name')").fetchone())
    assert settings[:2] == (f"{store_postgres.STATEMENT_TIMEOUT_MS // 1000}s", f"{store_postgres.LOCK_TIMEOUT_MS // 1000}s")
    assert settings[2].startswith("t_")  # the URL's own options are kept alongside ours
    assert settings[3] == "spine-cds"


def test_a_dropped_connection_is_replaced_and_the_write_retried(pg_server, pg_database):
    with Store(pg_database) as store:
        first = backend_pid(store)
        admin(pg_server, "SELECT pg_terminate_backend(%s)", first)
        assert store.record_feedback("svc", item("c-1"), T0.isoformat()) is True
        assert backend_pid(store) != first
        assert store.count_feedback() == 1


def test_a_locked_table_gives_503_not_a_hang_and_the_store_recovers(pg_server, pg_database, monkeypatch):
    monkeypatch.setattr(store_postgres, "LOCK_TIMEOUT_MS", 200)
    with Store(pg_database) as store, psycopg.connect(pg_database) as locker:
        locker.execute("LOCK TABLE feedback IN ACCESS EXCLUSIVE MODE")  # held until rollback
        with pytest.raises(StoreUnavailable) as info:
            store.record_feedback("svc", item("c-1"), T0.isoformat())
        assert info.value.status == 503 and "retry" in info.value.message
        locker.rollback()
        assert store.record_feedback("svc", item("c-1"), T0.isoformat()) is True


def test_an_unreachable_database_answers_503_and_nothing_is_acknowledged(make_app, pg_server):
    url = pg_server.create_database()
    name = url.rsplit("/", 1)[1]
    app = make_app(SPINE_CDS_DATABASE=url)
    client, store = app.test_client(), app.extensions["spine_cds"].store
    store.record_decision("c-1", "spine-imaging-order-select", "order-select", "hi-1", "ServiceRequest/sr", "nia",
                          "g", "i", "approve", ["s"], datetime.now(timezone.utc).isoformat(), issuer="")
    feedback = {"feedback": [{"card": "c-1", "outcome": "accepted", "outcomeTimestamp": "2026-11-22T09:00:00Z",
                              "acceptedSuggestions": [{"id": "s"}]}]}
    admin(pg_server, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    try:
        admin(pg_server, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", name)
        response = client.post(f"{SELECT}/feedback", json=feedback)
        assert response.status_code == 503
        message = response.get_json()["issue"][0]["diagnostics"]
        assert "retry" in message and PASSWORD not in message
    finally:
        admin(pg_server, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    assert client.post(f"{SELECT}/feedback", json=feedback).get_json() == {"received": 1, "stored": 1}
    assert store.count_feedback() == 1


def test_two_instances_on_one_database_share_decisions_feedback_repeats_and_the_report(make_app, pg_database):
    first, second = make_app(SPINE_CDS_DATABASE=pg_database), make_app(SPINE_CDS_DATABASE=pg_database)
    select = json.loads((SAMPLES / "radiculopathy-conservative-care-failed.json").read_text())
    [card] = first.test_client().post(SELECT, json=select).get_json()["cards"]
    sign = {**select, "hook": "order-sign", "hookInstance": "sign-1",
            "context": {k: v for k, v in select["context"].items() if k != "selections"}}
    assert second.test_client().post(SIGN, json=sign).get_json()["cards"] == []  # shown by the other instance
    feedback = {"feedback": [{"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-22T09:00:00Z",
                              "overrideReason": {"reason": {"code": "urgent", "system": "urn:x"}}}]}
    assert second.test_client().post(f"{SELECT}/feedback", json=feedback).get_json()["stored"] == 1
    store = first.extensions["spine_cds"].store
    [row] = store.outcome_counts()
    assert (row["shown"], row["overridden"]) == (1, 1)
    assert [r["hook"] for r in store.audit_records()] == ["order-select", "order-sign"]


def test_report_command_reads_postgres_and_masks_the_password(pg_database, capsys):
    app = create_app({"SPINE_CDS_DATABASE": pg_database, "SPINE_CDS_AUTH": "off", "SPINE_CDS_TODAY": "2026-11-22"})
    try:
        body = json.loads((SAMPLES / "radiculopathy-conservative-care-failed.json").read_text())
        assert app.test_client().post(SELECT, json=body).status_code == 200
    finally:
        close_app(app)
    assert main(["report", "--database", pg_database]) == 0
    out = capsys.readouterr().out
    assert "Decisions in postgresql://spine:***@" in out and PASSWORD not in out
    assert "Back pain that failed 6 weeks of conservative treatment" in out  # the indication in clinical words
