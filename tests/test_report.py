"""The outcome and override report: store aggregates, CLI table, HTML page and GET /report."""
from __future__ import annotations

import json
import re
import time
import uuid
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from cds_service.tools.cli import SAMPLES, main
from cds_service.store.feedback import Coding, FeedbackItem
from cds_service.protocol.report import Labels, build_report, load_report, render_html, render_text
from cds_service.store.database import Store
from jwt_helpers import JwksServer, public_jwk

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=timezone.utc)
SYSTEM = "https://spine-cds.example.org/fhir/CodeSystem/override-reason"
ELSEWHERE = Coding(code="documented-elsewhere", system=SYSTEM, display="Criteria are documented in notes")
JUDGMENT = Coding(code="clinical-judgment", system=SYSTEM, display="Clinical <judgment> & care")
SCRIPT = "<script>alert('x')</script>"
LUMBAR = ("nia", "nia-lumbar-spine-mri")

# card uuid → (program, guideline, indication, outcome)
CARDS = {
    "doc-1": (*LUMBAR, "conservative-care-failed", "documentation"),
    "doc-2": (*LUMBAR, "conservative-care-failed", "documentation"),
    "doc-3": (*LUMBAR, "conservative-care-failed", "documentation"),
    "doc-4": (*LUMBAR, "conservative-care-failed", "documentation"),
    "alt-1": (*LUMBAR, "neuro-deficit", "alternative"),
    "alt-2": (*LUMBAR, "neuro-deficit", "alternative"),
    "alt-3": (*LUMBAR, "neuro-deficit", "alternative"),
    "none-1": ("nia", None, None, "no-policy"),
    "aim-1": ("aim", "aim-imaging-of-the-spine", "thoracic-pain-adult-conservative-care", "approve"),
    "aim-2": ("aim", "aim-imaging-of-the-spine", "thoracic-pain-adult-conservative-care", "approve"),
}


def accepted(card: str, minutes: int = 0) -> FeedbackItem:
    return FeedbackItem(card=card, outcome="accepted", outcome_timestamp=T0 + timedelta(minutes=minutes),
                        accepted_suggestions=("s-1",))


def overridden(card: str, reason: Coding | None, comment: str | None = None, minutes: int = 0) -> FeedbackItem:
    return FeedbackItem(card=card, outcome="overridden", outcome_timestamp=T0 + timedelta(minutes=minutes),
                        reason=reason, user_comment=comment)


FEEDBACK = [
    overridden("doc-1", ELSEWHERE, comment=SCRIPT),
    overridden("doc-2", ELSEWHERE),
    overridden("doc-2", ELSEWHERE),                       # the same feedback twice: stored once
    overridden("doc-3", JUDGMENT),
    accepted("alt-1"),
    accepted("alt-2"), overridden("alt-2", None, comment="patient refused CT", minutes=5),  # latest wins
    overridden("alt-3", JUDGMENT), accepted("alt-3", minutes=5),
    accepted("ghost"),                                    # no decision stored for this card
]


def seed(store: Store) -> None:
    for card, (program, guideline, indication, outcome) in CARDS.items():
        store.record_decision(card, "spine-imaging-order-select", "order-select", f"hi-{card}", f"ServiceRequest/sr-{card}",
                              program, guideline, indication, outcome, ["s-1"], T0.isoformat())
    stored = [store.record_feedback("spine-imaging-order-select", item, T0.isoformat()) for item in FEEDBACK]
    assert stored.count(False) == 1


@pytest.fixture
def store():
    with Store(":memory:") as opened:
        seed(opened)
        yield opened


def row(program, guideline, indication, outcome, shown, acc, ovr, none):
    return {"program": program, "guideline": guideline, "indication": indication, "outcome": outcome,
            "shown": shown, "accepted": acc, "overridden": ovr, "no_feedback": none}


def test_each_card_counts_once_by_its_latest_feedback(store):
    assert store.outcome_counts() == [
        row("aim", "aim-imaging-of-the-spine", "thoracic-pain-adult-conservative-care", "approve", 2, 0, 0, 2),
        row("nia", None, None, "no-policy", 1, 0, 0, 1),
        row(*LUMBAR, "conservative-care-failed", "documentation", 4, 0, 3, 1),
        row(*LUMBAR, "neuro-deficit", "alternative", 3, 2, 1, 0),
    ]
    assert store.count_decisions() == len(CARDS)
    assert store.count_cards_without_decision() == 1


def test_override_reasons_count_comments_but_never_return_their_text(store):
    reasons = store.override_reason_counts()
    assert [(r["indication"], r["outcome"], r["reason_code"], r["reason_display"], r["overrides"], r["with_comment"])
            for r in reasons] == [
        ("conservative-care-failed", "documentation", "documented-elsewhere", ELSEWHERE.display, 2, 1),
        ("conservative-care-failed", "documentation", "clinical-judgment", JUDGMENT.display, 1, 0),
        ("neuro-deficit", "alternative", None, None, 1, 1),
    ]
    assert "script" not in repr(reasons) and "refused" not in repr(reasons)


def test_report_totals_bars_and_text(store):
    report = load_report(store)
    assert report.total == {"shown": 10, "accepted": 2, "overridden": 4, "no_feedback": 4}
    assert [(b.label, b.accepted, b.overridden, b.no_feedback) for b in report.bars] == [
        ("aim / aim-imaging-of-the-spine / thoracic-pain-adult-conservative-care", 0, 0, 2),
        ("nia / nia-lumbar-spine-mri / conservative-care-failed", 0, 3, 1),
        ("nia / nia-lumbar-spine-mri / neuro-deficit", 2, 1, 0),
        ("nia / - / -", 0, 0, 1),
    ]
    text = render_text(report)
    assert "dismissed without a reason" in text and "comment only" not in text
    assert "1 card(s) with feedback but no stored decision are not counted." in text
    assert "script" not in text and "refused" not in text
    assert render_text(build_report([], [])) == "no decisions recorded yet"


def table_line(text: str, *cells: str) -> bool:
    """Whether some line of a text table holds exactly these cells, in order."""
    return any(re.split(r"\s{2,}", line.strip()) == list(cells) for line in text.splitlines())


def named(registry, program, guideline=None, indication=None) -> list[str]:
    """The clinical labels the report shows for these ids ("-" for none)."""
    return [v or "-" for v in Labels.from_registry(registry).names(program, guideline, indication)]


def test_cli_prints_the_table_in_clinical_labels(tmp_path, capsys, registry):
    database = tmp_path / "decisions.sqlite3"
    with Store(str(database)) as store:
        seed(store)
    assert main(["report", "--database", str(database)]) == 0
    out = capsys.readouterr().out
    assert f"Decisions in {database}" in out
    care = named(registry, *LUMBAR, "conservative-care-failed")
    indication = next(i for i in registry.guidelines[LUMBAR[1]].indications if i.id == "conservative-care-failed")
    assert care == ["National Imaging Associates (NIA)", "NIA Clinical Guidelines: Lumbar Spine MRI", indication.label]
    assert table_line(out, *care, "documentation asked", "4", "0", "3", "1", "100%")
    assert table_line(out, *named(registry, *LUMBAR, "neuro-deficit"), "alternative suggested", "3", "2", "1", "0", "33%")
    assert table_line(out, *named(registry, "nia"), "no guideline for this study", "1", "0", "0", "1", "-")
    assert table_line(out, "total", "10", "2", "4", "4", "67%")
    assert table_line(out, *care, "documentation asked", f"documented-elsewhere ({ELSEWHERE.display})", "2", "1")
    assert table_line(out, *named(registry, *LUMBAR, "neuro-deficit"), "alternative suggested",
                      "dismissed without a reason", "1", "1")
    assert "nia-lumbar-spine-mri" not in out and "conservative-care-failed" not in out
    assert "script" not in out


def test_cli_on_a_missing_or_empty_database_says_so(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "nothing-here.sqlite3"
    assert main(["report", "--database", str(missing)]) == 0
    assert "no decisions recorded yet" in capsys.readouterr().out
    assert not missing.exists()  # reading a report never creates a database
    Store(str(tmp_path / "empty.sqlite3")).close()
    assert main(["report", "--database", str(tmp_path / "empty.sqlite3"), "--html", str(tmp_path / "r.html")]) == 0
    assert "no decisions recorded yet" in capsys.readouterr().out
    assert "No decisions recorded yet." in (tmp_path / "r.html").read_text()
    monkeypatch.setenv("SPINE_CDS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SPINE_CDS_DATABASE", raising=False)
    assert main(["report"]) == 0  # default: the settings' database file
    assert f"no decisions recorded yet in {tmp_path / 'data' / 'spine-cds.sqlite3'}" in capsys.readouterr().out


def test_cli_refuses_a_file_that_is_not_a_database(tmp_path, capsys):
    junk = tmp_path / "junk.sqlite3"
    junk.write_text("not sqlite " * 200)
    assert main(["report", "--database", str(junk)]) == 2
    assert "cannot read" in capsys.readouterr().err


class Page(HTMLParser):
    """Collects the chart's bars (per label: kind → count and tooltip) and the tables' rows."""

    def __init__(self, html: str):
        super().__init__()
        self.bars: dict[str, dict[str, tuple[int, str]]] = {}
        self.tables: list[list[list[str]]] = []
        self._label = self._rect = self._cell = None
        self._title = ""
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "g" and "data-label" in a:
            self._label = a["data-label"]
            self.bars[self._label] = {}
        elif tag == "rect" and self._label:
            self._rect, self._title = a, ""
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag == "rect" and self._rect:
            self.bars[self._label][self._rect["data-kind"]] = (int(self._rect["data-count"]), self._title)
            self._rect = None
        elif tag == "g":
            self._label = None
        elif tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._rect is not None:
            self._title += data
        if self._cell is not None:
            self._cell += data


def test_html_page_has_a_bar_per_indication_and_the_reason_table(store):
    html = render_html(load_report(store), generated_at="2026-11-22 10:00 UTC")
    page = Page(html)
    label = "nia / nia-lumbar-spine-mri / neuro-deficit"
    assert page.bars[label] == {"accepted": (2, f"{label}: 2 accepted"), "overridden": (1, f"{label}: 1 overridden"),
                                "no_feedback": (0, f"{label}: 0 no feedback")}
    assert {k: v[0] for k, v in page.bars["nia / nia-lumbar-spine-mri / conservative-care-failed"].items()} == \
        {"accepted": 0, "overridden": 3, "no_feedback": 1}
    assert len(page.bars) == 4
    outcomes, reasons = page.tables
    assert outcomes[-1] == ["total", "", "", "", "10", "2", "4", "4", "67%"]
    assert reasons[1:] == [
        [*LUMBAR, "conservative-care-failed", "documentation asked", f"documented-elsewhere ({ELSEWHERE.display})", "2", "1"],
        [*LUMBAR, "conservative-care-failed", "documentation asked", f"clinical-judgment ({JUDGMENT.display})", "1", "0"],
        [*LUMBAR, "neuro-deficit", "alternative suggested", "dismissed without a reason", "1", "1"],
    ]
    assert "Clinical &lt;judgment&gt; &amp; care" in html and "<judgment>" not in html
    assert "<script" not in html and "alert" not in html and "refused" not in html
    assert 'src=' not in html and 'href=' not in html  # self-contained: no external asset


def test_get_report_serves_the_page_from_the_apps_store(make_app, registry):
    app = make_app()
    client = app.test_client()
    hook = {name: json.loads((SAMPLES / name).read_text())
            for name in ("infant-sacral-dimple.json", "radiculopathy-conservative-care-failed.json")}
    cards = [client.post("/cds-services/spine-imaging-order-select", json=body).get_json()["cards"][0]
             for body in hook.values()]
    alternative = next(c for c in cards if c.get("suggestions"))
    feedback = {"card": alternative["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-22T10:00:00Z",
                "overrideReason": {"reason": {"code": "alternative-not-suitable", "system": SYSTEM},
                                   "userComment": SCRIPT}}
    assert client.post("/cds-services/spine-imaging-order-select/feedback",
                       json={"feedback": [feedback]}).get_json()["stored"] == 1
    response = client.get("/report")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert "script-src" not in response.headers["Content-Security-Policy"]
    html = response.get_data(as_text=True)
    page = Page(html)
    approve = next(c for c in cards if not c.get("suggestions"))["extension"]["spine-cds.decision"]
    assert page.bars[" / ".join(named(registry, "nia", "nia-lumbar-spine-mri", approve["indication"]))]["no_feedback"][0] == 1
    assert sum(bar["overridden"][0] for bar in page.bars.values()) == 1
    assert any("alternative-not-suitable" in cell for r in page.tables[1] for cell in r)
    assert "<script" not in html


def test_get_report_needs_a_client_token_when_auth_is_on(make_app):
    key = ec.generate_private_key(ec.SECP384R1())
    with JwksServer() as jwks:
        jwks.jwks = {"keys": [public_jwk(key, "k1", "ES384")]}
        app = make_app(SPINE_CDS_AUTH="on",
                       SPINE_CDS_TRUSTED_ISSUERS=json.dumps({"https://ehr.example.org": jwks.url + "/jwks.json"}))
        client = app.test_client()
        assert client.get("/report").status_code == 401
        now = int(time.time())
        token = jwt.encode({"iss": "https://ehr.example.org", "aud": "http://localhost/report", "iat": now,
                            "exp": now + 300, "jti": str(uuid.uuid4())}, key, algorithm="ES384",
                           headers={"kid": "k1", "typ": "JWT"})
        response = client.get("/report", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
        assert "No decisions recorded yet." in response.get_data(as_text=True)


# -- one row per order decision (#15 §4) -------------------------------------------------------

SELECT = "/cds-services/spine-imaging-order-select"
REPORT_TOKEN = "r" * 40


def select_calls(client, sample: str, times: int) -> list[dict]:
    """``times`` order-select calls about one unchanged order, as an EHR makes on every edit."""
    body = json.loads((SAMPLES / sample).read_text())
    return [client.post(SELECT, json={**body, "hookInstance": str(uuid.uuid4())}).get_json()["cards"][0]
            for _ in range(times)]


def test_repeated_order_select_cards_of_one_order_are_one_order_decision(make_app):
    client = make_app().test_client()
    cards = select_calls(client, "radiculopathy-conservative-care-failed.json", 4)
    assert len({c["uuid"] for c in cards}) == 4  # four cards shown ...
    other = select_calls(client, "infant-sacral-dimple.json", 2)[0]
    feedback = {"card": cards[1]["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-22T10:00:00Z"}
    client.post(SELECT + "/feedback", json={"feedback": [feedback]})
    report = client.get("/report", headers={"Accept": "application/json"}).get_json()
    rows = {r["indication"]: r for r in report["orderDecisions"]}
    decided = cards[0]["extension"]["spine-cds.decision"]["indication"]
    assert (rows[decided]["shown"], rows[decided]["overridden"], rows[decided]["no_feedback"]) == (1, 1, 0)  # ... one decision
    assert report["total"]["shown"] == 2
    assert rows[other["extension"]["spine-cds.decision"]["indication"]]["shown"] == 1
    assert report["overrideReasons"][0]["reason"] == "dismissed without a reason"


def test_a_changed_decision_about_the_same_order_is_another_order_decision(store):
    for n, outcome in enumerate(("alternative", "alternative", "approve")):
        store.record_decision(f"ord-{n}", "spine-imaging-order-select", "order-select", f"h-{n}", "ServiceRequest/x",
                              "nia", LUMBAR[1], "neuro-deficit", outcome, [], T0.isoformat())
    counts = {(r["indication"], r["outcome"]): r["shown"] for r in store.outcome_counts()}
    assert counts[("neuro-deficit", "alternative")] == 3 + 1 and counts[("neuro-deficit", "approve")] == 1


def test_report_page_shows_clinical_labels_and_a_plain_dismiss_in_words(make_app, registry):
    client = make_app().test_client()
    [card] = select_calls(client, "radiculopathy-conservative-care-failed.json", 1)
    client.post(SELECT + "/feedback", json={"feedback": [
        {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-22T10:00:00Z"}]})
    response = client.get("/report", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    html = response.get_data(as_text=True)
    decision = card["extension"]["spine-cds.decision"]
    assert all(label in html for label in named(registry, "nia", decision["guideline"], decision["indication"]))
    assert "dismissed without a reason" in html and "comment only" not in html
    assert decision["indication"] not in html and ">nia<" not in html
    assert response.headers["Referrer-Policy"] == "no-referrer"


def auth_on_app(make_app, **extra):
    return make_app(SPINE_CDS_AUTH="on", SPINE_CDS_TRUSTED_ISSUERS=json.dumps({"https://ehr.example.org": "https://ehr.example.org/jwks"}),
                    **extra)


def test_report_opens_with_the_operator_token_as_bearer(make_app, caplog):
    client = auth_on_app(make_app, SPINE_CDS_REPORT_TOKEN=REPORT_TOKEN).test_client()
    assert client.get("/report", headers={"Authorization": f"Bearer {REPORT_TOKEN}"}).status_code == 200
    for wrong in (REPORT_TOKEN[:-1] + "x", REPORT_TOKEN + "x", "", REPORT_TOKEN.upper()):
        denied = client.get("/report", headers={"Authorization": f"Bearer {wrong}"})
        assert denied.status_code == 401
        assert "SPINE_CDS_REPORT_TOKEN" in denied.get_json()["issue"][0]["diagnostics"]
    assert client.get("/report").status_code == 401
    assert REPORT_TOKEN not in caplog.text


def test_a_browser_opens_the_report_once_with_the_token_in_the_url_then_by_cookie(make_app, caplog):
    app = auth_on_app(make_app, SPINE_CDS_REPORT_TOKEN=REPORT_TOKEN, SPINE_CDS_PUBLIC_BASE_URL="https://cds.example.org")
    client = app.test_client()
    assert client.get("/report?token=" + "x" * 40).status_code == 401
    first = client.get(f"/report?token={REPORT_TOKEN}")
    assert first.status_code == 303
    assert first.headers["Location"] == "https://cds.example.org/report"  # the token leaves the address bar
    cookie = first.headers["Set-Cookie"]
    assert REPORT_TOKEN not in cookie
    assert all(flag in cookie for flag in ("HttpOnly", "SameSite=Strict", "Path=/report", "Secure"))
    assert client.get("/report").status_code == 200  # the test client keeps the cookie
    client.delete_cookie("spine_cds_report", path="/report")
    assert client.get("/report").status_code == 401
    client.set_cookie("spine_cds_report", "0" * 64, path="/report")
    assert client.get("/report").status_code == 401
    assert REPORT_TOKEN not in caplog.text


def test_without_an_operator_token_the_401_says_how_to_set_one(make_app):
    denied = auth_on_app(make_app).test_client().get(f"/report?token={REPORT_TOKEN}")
    assert denied.status_code == 401
    assert "set SPINE_CDS_REPORT_TOKEN" in denied.get_json()["issue"][0]["diagnostics"]


def test_a_short_report_token_is_refused_without_quoting_it(make_app):
    from cds_service.errors import CdsConfigError
    with pytest.raises(CdsConfigError) as refused:
        make_app(SPINE_CDS_REPORT_TOKEN="short-secret")
    assert "short-secret" not in refused.value.message and "32 characters" in refused.value.message
