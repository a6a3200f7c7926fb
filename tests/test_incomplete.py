"""When part of the record could not be read, only what the data found stands.

Approvals and ``always`` alternatives (a contraindication found) are kept; every other answer
becomes ``incomplete``: a card saying the check could not complete, CRD coverage-information
``indeterminate`` with reason ``technical`` (CRD resp-43), and no PAMA rating.
"""
from __future__ import annotations

import dataclasses
import json
from datetime import date
from pathlib import Path

import pytest

from casebuilder import build_case
from cds_service.cards.card import card_for
from cds_service.cards.coverage_info import REASONS, coverage_action
from cds_service.protocol.hooks import decide_orders
from cds_service.cards.pama import pama_action
from contract import assert_card_contract

TABLE = json.loads((Path(__file__).parent / "cases" / "nia-lumbar-spine-mri.json").read_text())
TODAY = date.fromisoformat(TABLE["today"])
CASES = {case["name"]: case for case in TABLE["cases"]}


def decide_with_gaps(name: str, registry, failed=("conditions",), coverage: str | None = None):
    hook, record = build_case(CASES[name], TABLE["defaults"])
    sources = {**record.sources, **{key: "failed" for key in failed}}
    record = dataclasses.replace(record, sources=sources)
    [decision] = decide_orders(hook, record, registry, TABLE["program"], TODAY)
    if coverage:
        decision = dataclasses.replace(decision, route=dataclasses.replace(decision.route, coverage=coverage,
                                                                           routed_by="payer"))
    return hook, decision


@pytest.mark.parametrize("name", [
    "leg weakness 91 days ago is not new: document that it worsened",            # documentation
    "5-year-old with back pain and no radiographs: radiographs first",           # x-ray first (unless approved)
])
def test_answers_that_missing_data_could_change_become_incomplete(name, registry):
    hook, decision = decide_with_gaps(name, registry)
    assert decision.outcome == "incomplete"
    assert decision.alternative is None and decision.data_gaps == ("conditions",)
    card = assert_card_contract(card_for(decision, hook.hook_instance))
    assert card["outcome"] == "incomplete" and card["dataGaps"] == ["conditions"]
    full = card_for(decision, hook.hook_instance)
    assert "could not complete" in full["summary"] and "suggestions" not in full
    assert "not known" in full["detail"] and "conditions" in full["detail"]
    assert pama_action(decision, hook.hook_instance) is None  # no rating from incomplete data


@pytest.mark.parametrize("name,outcome", [
    ("new foot drop 10 days ago (ICD) with lumbar radiculopathy", "approve"),
    ("pacemaker on record overrides an approvable MRI", "alternative"),   # an "always" alternative: data found settles it
])
def test_what_the_data_found_stands(name, outcome, registry):
    _, decision = decide_with_gaps(name, registry, failed=("procedures", "observations"))
    assert decision.outcome == outcome == CASES[name]["expect"]["outcome"]


def test_no_gaps_no_incomplete(registry):
    _, decision = decide_with_gaps("leg weakness 91 days ago is not new: document that it worsened", registry, failed=())
    assert decision.outcome == "documentation"


def test_coverage_information_is_indeterminate_with_reason_technical(registry):
    hook, decision = decide_with_gaps("leg weakness 91 days ago is not new: document that it worsened", registry,
                                      coverage="Coverage/cov1")
    action = coverage_action(decision, "order-sign", hook.hook_instance, TODAY)
    [ext] = [e for e in action["resource"]["extension"] if e["url"].endswith("ext-coverage-information")]
    parts = {p["url"]: p for p in ext["extension"]}
    assert parts["covered"]["valueCode"] == "indeterminate" and parts["pa-needed"]["valueCode"] == "indeterminate"
    reason = parts["reason"]["valueCodeableConcept"]
    assert reason["coding"] == [{"system": REASONS, "code": "technical"}] and "conditions" in reason["text"]
    assert "doc-needed" not in parts and "questionnaire" not in parts


def test_without_the_patient_no_nearest_indication_is_named(registry):
    _, decision = decide_with_gaps("leg weakness 91 days ago is not new: document that it worsened", registry,
                                   failed=("patient", "conditions"))
    assert decision.outcome == "incomplete" and decision.indication is None


def test_an_unreadable_coverage_is_not_called_absent(registry):
    hook, decision = decide_with_gaps("leg weakness 91 days ago is not new: document that it worsened", registry,
                                      failed=("coverage", "conditions"))
    detail = card_for(decision, hook.hook_instance)["detail"]
    assert "the Coverage could not be read from the EHR" in detail and "no Coverage in the request" not in detail
