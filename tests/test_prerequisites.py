"""The comparison shortcut (prerequisites.py + decision.approves) never changes an answer.

Every scenario of every case table is decided under every program twice: by the full
``decide`` and by the shortcut ``approves``; they must agree.  And no rule that the
prerequisites call out of reach is ever met by full evaluation.
"""
from __future__ import annotations

import pytest

from casebuilder import case_facts as _facts
from casebuilder import case_table_params
from cds_service.engine.decision import APPROVE, approves, decide, guideline_for
from cds_service.engine.evaluation import evaluate_node
from cds_service.model import Status
from cds_service.engine.prerequisites import prerequisites, within_reach
from cds_service.engine.routing import Route


@pytest.mark.parametrize("table", case_table_params())
def test_shortcut_agrees_with_full_decision_for_every_program(table, registry):
    compared = approved = 0
    for case in table["cases"]:
        facts = _facts(table, case, registry)
        for program in registry.routing.programs.values():
            route = Route(program, "comparison")
            guideline = guideline_for(facts.order, route, registry.guidelines)
            full = decide(facts, route, guideline, registry.catalog).outcome == APPROVE
            fresh = _facts(table, case, registry)  # no memo shared with the full evaluation
            assert approves(fresh, guideline, registry.catalog) == full, (case["name"], program.id)
            compared, approved = compared + 1, approved + full
    assert compared == len(table["cases"]) * len(registry.routing.programs)
    assert 0 < approved < compared  # the table exercises both answers


@pytest.mark.parametrize("table", case_table_params())
def test_rules_out_of_reach_are_never_met(table, registry):
    skipped = 0
    for case in table["cases"]:
        facts = _facts(table, case, registry)
        for guideline in registry.guidelines.values():
            for rule in (*guideline.indications, *guideline.alternatives, *guideline.gates):
                if not within_reach(rule.needs, facts):
                    skipped += 1
                    assert evaluate_node(rule.criteria, facts, guideline).status != Status.MET, rule.id
    assert skipped > 0


def test_prerequisites_of_combinators():
    definitions = {"rad": {"kind": "finding", "valueset": "radiculopathy", "label": "r"}}
    leaf = {"ref": "rad"}
    age = {"kind": "age", "min_years": 18, "label": "adult"}
    assert prerequisites({"all": [leaf, age]}, definitions) == (frozenset({"radiculopathy"}),)
    assert prerequisites({"any": [leaf, age]}, definitions) == ()
    either = {"any": [leaf, {"kind": "procedure", "valueset": "pt", "label": "p"}]}
    assert prerequisites(either, definitions) == (frozenset({"radiculopathy", "pt"}),)
    assert prerequisites({"not": leaf}, definitions) == ()
