"""Run every clinical case table in tests/cases/ through the pure core (facts → decision)."""
from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from casebuilder import build_case
from cds_service.cards.card import card_for
from cds_service.protocol.hooks import decide_orders
from contract import assert_card_contract

CASES = Path(__file__).parent / "cases"


def _load():
    for path in sorted(CASES.glob("*.json")):
        table = json.loads(path.read_text())
        for case in table["cases"]:
            yield pytest.param(table, case, id=f"{table['guideline']}::{case['name']}")


@pytest.mark.parametrize("table,case", list(_load()))
def test_case(table, case, registry):
    check_case(table, case, registry)


def check_case(table: dict, case: dict, registry) -> None:
    """Run one case row through the core and compare with its ``expect``."""
    hook, record = build_case(case, table.get("defaults", {}))
    today = date.fromisoformat(case.get("today", table["today"]))
    [decision] = decide_orders(hook, record, registry, table["program"], today)
    expect = case["expect"]
    if expect["outcome"] == "no-policy":
        assert decision.outcome == "no-policy" and decision.indication is None, _explain(decision)
        return
    assert decision.guideline is not None and decision.guideline.id == table["guideline"]
    assert decision.outcome == expect["outcome"], _explain(decision)
    if "indication" in expect:
        assert decision.indication_id == expect["indication"], _explain(decision)
    if "alternative_cpt" in expect:
        assert decision.alternative_study.cpt == expect["alternative_cpt"]
    if "alternative" in expect:
        assert decision.alternative.rule.id == expect["alternative"]
    evidence = set(decision.indication.result.evidence) if decision.indication else set()
    if decision.alternative:
        evidence |= set(decision.alternative.result.evidence)
    for ref in expect.get("evidence_includes", []):
        assert ref in evidence, _explain(decision)
    missing = " | ".join(_missing_labels(decision))
    for text in expect.get("missing_includes", []):
        assert text.lower() in missing.lower(), f"{text!r} not in missing: {missing}"
    if "met_on" in expect:
        assert decision.indication.result.met_on == date.fromisoformat(expect["met_on"]), _explain(decision)
    card_decision = assert_card_contract(card_for(decision, hook.hook_instance))  # every scenario renders a valid card
    assert card_decision["outcome"] == decision.outcome


def _missing_labels(decision):
    from cds_service.cards.card import decision_extension
    return decision_extension(decision).get("missing", [])


def _explain(decision) -> str:
    lines = [f"outcome={decision.outcome} indication={decision.indication_id}"]
    for r in decision.nearest:
        lines.append(f"  nearest {r.rule.id}: {r.status.value} met_on={r.result.met_on}")
    return "\n".join(lines)
