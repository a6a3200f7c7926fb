"""A real browser opens the pages a person reads: /report and a documentation Questionnaire.

Why a browser: what a clinician or operator sees is the rendered page — the redirect that
takes the operator token out of the address bar, the cookie the browser keeps, the escaped
text — and only a browser shows it.  Debian's ``chromium`` is driven by Python ``playwright``
launched with ``executable_path`` (nothing is downloaded: ``playwright install`` is never run),
against a real two-worker ``spine-cds serve`` (tests/served.py).  Each page is saved as a
screenshot under ``test-artifacts/`` at the repository root, which CI keeps as an artifact.

Without chromium or playwright the tests skip, saying what to install; under SPINE_CDS_CI=1
(.ci/run, which apt-installs chromium) they fail instead, so CI cannot pass by skipping them.
"""
from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from cds_service.store.database import Store
from cds_service.store.feedback import FeedbackItem
from served import served  # noqa: F401  (the fixture)

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("SPINE_CDS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "operator-token-for-the-browser-test-0123456789"
GUIDELINE, RULE = "nia-lumbar-spine-mri", "post-treatment-follow-up"
NOW = datetime(2026, 11, 22, 9, 0, tzinfo=timezone.utc)


def _require(what: str, found: bool) -> None:
    if found:
        return
    if os.environ.get("SPINE_CDS_CI") == "1":
        pytest.fail(f"{what} is missing, and SPINE_CDS_CI=1 requires it (.ci/run installs it).", pytrace=False)
    pytest.skip(f"{what} is missing: apt-get install chromium, and pip install -e '.[test]' (playwright).")


@pytest.fixture
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require("the Python package playwright", False)
    _require(f"Debian chromium ({CHROMIUM})", Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK))
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def _seed(database: Path) -> None:
    """Three order-select cards about one order and one about another, one dismissed plainly."""
    with Store(str(database)) as store:
        for n in range(3):
            store.record_decision(f"card-{n}", "spine-imaging-order-select", "order-select", f"h-{n}", "ServiceRequest/a",
                                  "nia", GUIDELINE, "conservative-care-failed", "documentation", [], NOW.isoformat())
        store.record_decision("card-b", "spine-imaging-order-select", "order-select", "h-b", "ServiceRequest/b",
                              "nia", GUIDELINE, "neuro-deficit", "alternative", ["s"], NOW.isoformat())
        store.record_feedback("spine-imaging-order-select", FeedbackItem("card-1", "overridden", NOW), NOW.isoformat())


def test_report_opens_in_a_browser_with_the_operator_token_and_reads_in_clinical_words(served, browser, tmp_path):
    _seed(tmp_path / "served.sqlite3")
    server = served(workers=2, SPINE_CDS_AUTH="on", SPINE_CDS_REPORT_TOKEN=TOKEN)
    server.wait_until("/health answers", lambda: _up(server.url))
    page = browser.new_page()
    assert page.goto(f"{server.url}/report").status == 401
    page.goto(f"{server.url}/report?token={TOKEN}")
    assert page.url == f"{server.url}/report"  # redirected: the token left the address bar
    text = page.inner_text("body")
    assert "2 order decisions shown: 0 accepted, 1 overridden, 1 without feedback" in text
    assert "National Imaging Associates (NIA)" in text and "NIA Clinical Guidelines: Lumbar Spine MRI" in text
    assert "documentation asked" in text and "dismissed without a reason" in text
    assert "conservative-care-failed" not in text
    page.reload()
    assert "order decisions shown" in page.inner_text("body")  # the cookie keeps it open
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    assert (ARTIFACTS / "report.png").stat().st_size > 0
    assert not any(TOKEN in line for line in server.lines)


def test_questionnaire_opens_in_a_browser_as_a_form(served, browser, registry):
    server = served(workers=2)
    server.wait_until("/health answers", lambda: _up(server.url))
    rule = next(r for r in registry.guidelines[GUIDELINE].indications if r.id == RULE)
    page = browser.new_page()
    response = page.goto(f"{server.url}/questionnaires/{GUIDELINE}/{RULE}")
    assert response.headers["content-type"].startswith("text/html")
    assert page.inner_text("h1") == rule.label
    assert rule.source["quote"] in page.inner_text("blockquote")
    assert page.locator("input[type=radio]").count() >= 2
    assert "What the coded record must show instead" in page.inner_text("body")
    json_link = page.get_attribute("a", "href")
    assert json_link == f"{server.url}/questionnaires/{GUIDELINE}/{RULE}?_format=json"
    page.screenshot(path=str(ARTIFACTS / "questionnaire.png"), full_page=True)
    assert (ARTIFACTS / "questionnaire.png").stat().st_size > 0


def _up(url: str) -> bool:
    import urllib.request
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as answer:
            return answer.status == 200
    except OSError:
        return False
