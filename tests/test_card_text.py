"""Card text and evidence for every scenario of every guideline's case table.

Each card type has its own promise to the clinician: an approval names the indication and
shows the evidence with dates; an alternative is a one-click swap with the reason; a
documentation card lists exactly what is missing and, when only time is missing, the date.
"""
from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from casebuilder import build_case
from cds_service.cards.card_text import day
from cds_service.cards.card import card_for, decision_extension
from cds_service.protocol.hooks import decide_orders

CASES = Path(__file__).parent / "cases"
PARAMS = [pytest.param(table, case, id=f"{table['guideline']}::{case['name']}")
          for path in sorted(CASES.glob("*.json")) for table in [json.loads(path.read_text())] for case in table["cases"]]


@pytest.mark.parametrize("table,case", PARAMS)
def test_card_says_what_the_decision_is(table, case, registry):
    hook, record = build_case(case, table.get("defaults", {}))
    [decision] = decide_orders(hook, record, registry, table["program"], date.fromisoformat(table["today"]))
    card = card_for(decision, hook.hook_instance)
    check = {"approve": _approval, "alternative": _alternative, "documentation": _documentation,
             "no-policy": lambda c, d: None}[decision.outcome]
    check(card, decision)


def _approval(card, decision):
    assert decision.indication.rule.label in card["detail"] and card["indicator"] == "info"
    assert "Evidence in the record:" in card["detail"]
    for ref in decision.indication.result.evidence:   # ids for machines, words for the clinician (#15 §2)
        if ref != "Patient":
            assert ref not in card["detail"] and ref in card["extension"]["spine-cds.decision"]["evidence"], ref
    assert "suggestions" not in card and "overrideReasons" not in card


def _alternative(card, decision):
    """One update of the draft order (#15 §1): same id, the alternative's CPT code, reasons kept."""
    [suggestion] = card["suggestions"]
    [update] = suggestion["actions"]
    assert suggestion["isRecommended"] and card["selectionBehavior"] == "at-most-one"
    assert update["type"] == "update" and update["resource"]["id"] == decision.order.resource["id"]
    assert update["resource"]["code"]["coding"][0]["code"] == decision.alternative_study.cpt
    assert update["resource"].get("reasonCode") == decision.order.resource.get("reasonCode")
    assert decision.order.resource["code"]["coding"][0]["code"] != decision.alternative_study.cpt  # the draft is untouched
    assert decision.alternative_study.display in suggestion["label"]
    assert decision.alternative.rule.reason.rstrip(".") in card["detail"]
    assert card["overrideReasons"] and card["indicator"] == "warning"


def _documentation(card, decision):
    assert card["overrideReasons"] and card["indicator"] == "warning"
    if decision.indication is None:
        assert "No indication of this guideline is documented." in card["detail"]
        return
    assert "- [ ] " in card["detail"]
    for line in decision_extension(decision)["missing"]:
        assert line.split(" (one of:")[0] in card["detail"]
    met_on = decision.indication.result.met_on
    if met_on and not decision.blocking_gates:
        assert day(met_on) in card["summary"] and decision_extension(decision)["metOn"] == met_on.isoformat()


def test_dates_read_as_clinicians_write_them():
    """Day, English month abbreviation, year — from a table, not strftime('%b'), which follows
    the server's locale."""
    from datetime import date

    from cds_service.engine.fhir_dates import human_date
    assert [human_date(date(2026, m, d)) for m, d in ((1, 3), (5, 31), (12, 1))] == ["3 Jan 2026", "31 May 2026", "1 Dec 2026"]


def _every_card(registry):
    from casebuilder import case_tables
    for table in case_tables():
        for case in table["cases"]:
            hook, record = build_case(case, table.get("defaults", {}))
            today = date.fromisoformat(case.get("today", table["today"]))
            for decision in decide_orders(hook, record, registry, table["program"], today):
                yield case["name"], decision, card_for(decision, hook.hook_instance)


def test_wording_that_cannot_mislead(registry):
    """#15 §3: summaries are written to fit 140 characters, never cut; a date in the future reads
    as "will meet … if care continues", never "met on"; override reasons fit the card."""
    seen = {"alternative": 0, "documentation": 0, "will meet": 0}
    for name, decision, card in _every_card(registry):
        summary = card["summary"]
        assert len(summary) <= 140 and not summary.endswith("…"), (name, summary)
        assert "met on" not in summary, (name, summary)
        reasons = {r["code"] for r in card.get("overrideReasons", [])}
        if decision.outcome == "alternative":
            assert "alternative-not-suitable" in reasons and "documented-elsewhere" not in reasons, name
            seen["alternative"] += 1
        elif decision.outcome == "documentation":
            assert "documented-elsewhere" in reasons and "alternative-not-suitable" not in reasons, name
            seen["documentation"] += 1
            if decision.indication and decision.indication.result.met_on:
                assert "will meet" in summary and "if care continues" in summary, (name, summary)
                seen["will meet"] += 1
        else:
            assert not reasons, name
    assert all(seen.values()), seen   # every branch above was exercised



def test_an_alternative_can_be_proposed_as_delete_and_create(registry):
    """The CRD alternative form, chosen by the operator (setting) or the EHR (configuration option)."""
    from casebuilder import case_tables
    from cds_service.cards.pama import RATING_URL
    table = next(t for t in case_tables() if t["guideline"] == "nia-lumbar-spine-mri")
    case = next(c for c in table["cases"] if c["expect"]["outcome"] == "alternative")
    hook, record = build_case(case, table.get("defaults", {}))
    [decision] = decide_orders(hook, record, registry, table["program"], date.fromisoformat(table["today"]))
    delete, create = card_for(decision, hook.hook_instance, delete_create=True)["suggestions"][0]["actions"]
    assert (delete["type"], delete["resourceId"]) == ("delete", decision.order.reference)
    assert create["type"] == "create" and create["resource"]["id"] != decision.order.resource["id"]
    assert create["resource"]["code"]["coding"][0]["code"] == decision.alternative_study.cpt
    [update] = card_for(decision, hook.hook_instance)["suggestions"][0]["actions"]
    ratings = [e for e in update["resource"].get("extension", []) if e["url"] == RATING_URL]
    assert [r["valueCodeableConcept"]["coding"][0]["code"] for r in ratings] == ["appropriate"]   # no Coverage: PAMA


def test_the_ehr_chooses_the_alternative_form_per_call(client):
    """CRD configuration option alternative-delete-create overrides the operator's default."""
    import json as _json
    from cds_service.tools.cli import SAMPLES
    body = _json.loads((SAMPLES / "pacemaker-mri-contraindicated.json").read_text())
    default = client.post("/cds-services/spine-imaging-order-select", json=body).get_json()
    assert [a["type"] for a in default["cards"][0]["suggestions"][0]["actions"]] == ["update"]
    body["extension"] = {"davinci-crd.configuration": {"alternative-delete-create": True}}
    chosen = client.post("/cds-services/spine-imaging-order-select", json=body).get_json()
    assert [a["type"] for a in chosen["cards"][0]["suggestions"][0]["actions"]] == ["delete", "create"]
