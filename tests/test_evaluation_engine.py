"""The fast paths of the engine never change an answer.

- Compiled criteria keep one shared result per node for records that hold none of the node's
  value-set tags (evaluation.py).  Every rule of every guideline is evaluated on every case of
  every case table twice — on the registry's long-lived compiled trees (whose shared results
  were filled by all the cases before) and on trees compiled afresh for that one record — and
  the two results must be identical, evidence, details and children included.
- ``decide`` evaluates lazily (the first met indication, rules within reach, the ranking only
  when nothing is met).  It is checked against :func:`reference_decide` below: the precedence
  of decision.py's docstring applied to every rule, fully evaluated.
"""
from __future__ import annotations

import dataclasses
from datetime import date

import pytest

from casebuilder import case_facts, case_table_params
from cds_service.engine.decision import ALTERNATIVE, APPROVE, DOCUMENTATION, decide, guideline_for, rank_nearest
from cds_service.engine.evaluation import Leaf, compiled, evaluate_node, evaluate_rules, evidence_score
from cds_service.model import ClinicalItem, Facts, SpineOrder, Status
from cds_service.engine.routing import Route


def _fresh(guideline):
    """The same guideline with nothing compiled yet: no result shared with any other record."""
    return dataclasses.replace(guideline, nodes={})


@pytest.mark.parametrize("table", case_table_params())
def test_shared_results_equal_fresh_evaluation(table, registry):
    shared = 0
    for case in table["cases"]:
        facts = case_facts(table, case, registry)
        for guideline in registry.guidelines.values():
            fresh, fresh_facts = _fresh(guideline), case_facts(table, case, registry)
            for rule in (*guideline.indications, *guideline.gates, *guideline.alternatives):
                for node in filter(None, (rule.criteria, rule.applies_if)):
                    expected = evaluate_node(node, fresh_facts, fresh)
                    assert evaluate_node(node, facts, guideline) == expected, (case["name"], guideline.id, rule.id)
                    tags = compiled(node, guideline).tags
                    shared += tags is not None and tags.isdisjoint(facts.present)
    assert shared > 0  # the shortcut was exercised


def reference_decide(facts: Facts, guideline, catalog) -> dict:
    """decision.py's precedence over every rule, fully evaluated (the specification)."""
    indications = evaluate_rules(guideline.indications, facts, guideline)
    alternatives = evaluate_rules(guideline.alternatives, facts, guideline)
    gates = evaluate_rules(guideline.gates, facts, guideline)
    applies = {g.rule.id: evaluate_node(g.rule.applies_if, facts, guideline) for g in gates if g.rule.applies_if}

    def alternative(when):
        for r in alternatives:
            study = catalog.resolve(r.rule.study, facts.order.study) if r.rule.when == when else None
            if r.status == Status.MET and study is not None and study.cpt != facts.order.study.cpt:
                return {"alternative": r.rule.id, "cpt": study.cpt}
        return None

    met = next((r for r in indications if r.status == Status.MET), None)
    if alternative("always"):
        return {"outcome": ALTERNATIVE, "indication": met and met.rule.id, **alternative("always")}
    if met:
        blocking = [g.rule.id for g in gates if g.rule.id in applies and applies[g.rule.id].status == Status.MET
                    and g.status != Status.MET]
        return {"outcome": DOCUMENTATION if blocking else APPROVE, "indication": met.rule.id, "blocking": blocking}
    nearest = [r.rule.id for r in rank_nearest(indications)]
    if alternative("unless_approved"):
        return {"outcome": ALTERNATIVE, "nearest": nearest, **alternative("unless_approved")}
    relevant = evidence_score(rank_nearest(indications)[0].result, met_only=False) > 0
    return {"outcome": DOCUMENTATION, "indication": nearest[0] if relevant else None, "nearest": nearest}


def _summary(decision, reference: dict) -> dict:
    got = {"outcome": decision.outcome, "indication": decision.indication_id, "alternative":
           decision.alternative and decision.alternative.rule.id, "cpt": decision.alternative_study and decision.alternative_study.cpt,
           "blocking": [g.rule.id for g in decision.blocking_gates], "nearest": [r.rule.id for r in decision.nearest]}
    return {key: got[key] for key in reference}


@pytest.mark.parametrize("table", case_table_params())
def test_lazy_decision_equals_reference_for_every_program(table, registry):
    outcomes = set()
    for case in table["cases"]:
        for program in registry.routing.programs.values():
            route = Route(program, "comparison")
            facts = case_facts(table, case, registry)
            guideline = guideline_for(facts.order, route, registry.guidelines)
            if guideline is None or not guideline.encoded:
                continue
            reference = reference_decide(case_facts(table, case, registry), _fresh(guideline), registry.catalog)
            decision = decide(facts, route, guideline, registry.catalog)
            assert _summary(decision, reference) == reference, (case["name"], program.id)
            outcomes.add(reference["outcome"])
    assert outcomes == {APPROVE, ALTERNATIVE, DOCUMENTATION}


def test_a_leaf_without_its_tags_is_computed_once_and_shared(catalog):
    leaf = Leaf({"kind": "finding", "valueset": "lumbar-radiculopathy", "label": "Radiculopathy"})
    order = SpineOrder("ServiceRequest/o", {}, catalog.by_cpt["72148"])
    other = ClinicalItem("Condition/c", "Condition", frozenset({"something-else"}), "other", date(2026, 1, 1))
    first = leaf.evaluate(Facts(today=date(2026, 11, 22), birth_date=None, items=(), order=order))
    second = leaf.evaluate(Facts(today=date(2020, 1, 1), birth_date=None, items=(other,), order=order))
    assert first is second and first.status == Status.UNKNOWN
    hit = ClinicalItem("Condition/r", "Condition", frozenset({"lumbar-radiculopathy"}), "rad", date(2026, 1, 1))
    found = leaf.evaluate(Facts(today=date(2026, 11, 22), birth_date=None, items=(hit,), order=order))
    assert found.status == Status.MET and found.evidence == ("Condition/r",)


def test_leaves_that_read_more_than_tags_are_never_shared(catalog):
    leaf = Leaf({"kind": "age", "min_years": 18, "label": "Adult"})
    assert leaf.tags is None
    order = SpineOrder("ServiceRequest/o", {}, catalog.by_cpt["72148"])
    adult = leaf.evaluate(Facts(today=date(2026, 11, 22), birth_date=date(1970, 1, 1), items=(), order=order))
    child = leaf.evaluate(Facts(today=date(2026, 11, 22), birth_date=date(2020, 1, 1), items=(), order=order))
    assert (adult.status, child.status) == (Status.MET, Status.NOT_MET)
