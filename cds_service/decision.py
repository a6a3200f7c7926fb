"""From evaluated rules to one outcome per order: approve, alternative, documentation, no-policy.

Precedence, which is the guideline's own logic made explicit:
1. no encoded guideline of the patient's program covers the study → ``no-policy``;
2. an ``always`` alternative is met (MRI contraindicated, an infant who needs ultrasound) →
   ``alternative``, even when an indication is met — the ordered study is the wrong one;
3. an indication is met and every gate that applies is satisfied → ``approve``;
4. an ``unless_approved`` alternative is met (radiographs first) → ``alternative``;
5. otherwise → ``documentation``, naming the nearest indications and exactly what they lack.

When part of the record could not be read (``data_gaps``: the FHIR server failed or missed the
deadline), only what the data *found* stands: an approval or an ``always`` alternative.  Every
other answer might have been different with the missing data, so it becomes ``incomplete`` —
"the check could not complete" (CRD ``indeterminate`` / ``technical``) — never a request for
documentation the record may well hold.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .evaluation import RuleResult, count_leaves, evaluate_node, evaluate_rules, evidence_score, missing_items
from .guidelines import Guideline, Rule
from .model import Facts, SpineOrder, Status, Study
from .prerequisites import within_reach
from .routing import Route
from .studies import StudyCatalog

APPROVE, ALTERNATIVE, DOCUMENTATION, NO_POLICY = "approve", "alternative", "documentation", "no-policy"
INCOMPLETE = "incomplete"


@dataclass(frozen=True)
class Decision:
    order: SpineOrder
    route: Route
    guideline: Guideline | None
    outcome: str
    indication: RuleResult | None = None          # the met one (approve) or the nearest
    alternative: RuleResult | None = None
    alternative_study: Study | None = None
    blocking_gates: tuple[RuleResult, ...] = ()
    nearest: tuple[RuleResult, ...] = ()          # ranked candidates for the documentation card
    data_gaps: tuple[str, ...] = ()               # prefetch keys that could not be read
    also_approved_by: tuple[str, ...] = ()        # other programs whose guideline approves the order

    @property
    def indication_id(self) -> str | None:
        return self.indication.rule.id if self.indication else None


def guideline_for(order: SpineOrder, route: Route, guidelines: dict[str, Guideline]) -> Guideline | None:
    """The program's guideline that governs the ordered study, if any."""
    for guideline_id in route.program.guidelines:
        guideline = guidelines.get(guideline_id)
        if guideline and guideline.applies_to(order.study):
            return guideline
    return None


def decide(facts: Facts, route: Route, guideline: Guideline | None, catalog: StudyCatalog,
           data_gaps: tuple[str, ...] = ()) -> Decision:
    """Decide one order.  Pure: everything it needs is in the arguments."""
    decision = _decide(facts, route, guideline, catalog, data_gaps)
    if data_gaps and (decision.outcome == DOCUMENTATION or
                      decision.outcome == ALTERNATIVE and decision.alternative.rule.when != "always"):
        # Without the Patient (age) the ranking of nearest indications means nothing: name none.
        indication = None if "patient" in data_gaps else decision.indication
        return replace(decision, outcome=INCOMPLETE, indication=indication, alternative=None,
                       alternative_study=None, blocking_gates=())
    return decision


def _decide(facts: Facts, route: Route, guideline: Guideline | None, catalog: StudyCatalog,
            data_gaps: tuple[str, ...]) -> Decision:
    base = dict(order=facts.order, route=route, guideline=guideline, data_gaps=data_gaps)
    if guideline is None or not guideline.encoded:
        return Decision(outcome=NO_POLICY, **base)
    indications = evaluate_rules(guideline.indications, facts, guideline)
    alternatives = evaluate_rules(guideline.alternatives, facts, guideline)
    gates = evaluate_rules(guideline.gates, facts, guideline)
    met = next((r for r in indications if r.status == Status.MET), None)

    urgent = _met_alternative(alternatives, "always", facts, catalog)
    if urgent:
        return Decision(outcome=ALTERNATIVE, indication=met, alternative=urgent[0], alternative_study=urgent[1], **base)
    if met:
        blocking = tuple(g for g in gates if g.applies and g.applies.status == Status.MET and g.status != Status.MET)
        if not blocking:
            return Decision(outcome=APPROVE, indication=met, **base)
        return Decision(outcome=DOCUMENTATION, indication=met, blocking_gates=blocking, nearest=(met,), **base)
    later = _met_alternative(alternatives, "unless_approved", facts, catalog)
    if later:
        return Decision(outcome=ALTERNATIVE, alternative=later[0], alternative_study=later[1],
                        nearest=rank_nearest(indications), **base)
    nearest = rank_nearest(indications)
    relevant = nearest and evidence_score(nearest[0].result, met_only=False) > 0
    return Decision(outcome=DOCUMENTATION, indication=nearest[0] if relevant else None, nearest=nearest, **base)


def approves(facts: Facts, guideline: Guideline | None, catalog: StudyCatalog) -> bool:
    """Whether :func:`decide` would approve — evaluating only what can change that answer.

    For the comparison with other programs: rules out of reach of the record (prerequisites.py)
    are skipped, and evaluation stops at the first met indication.  Tested equal to
    ``decide(...).outcome == APPROVE`` on every case table and program.
    """
    if guideline is None or not guideline.encoded:
        return False
    if not any(_met(rule, facts, guideline) for rule in guideline.indications):
        return False
    urgent = [RuleResult(rule, evaluate_node(rule.criteria, facts, guideline)) for rule in guideline.alternatives
              if rule.when == "always" and within_reach(rule.needs, facts)]
    if _met_alternative(tuple(urgent), "always", facts, catalog):
        return False
    return not any(within_reach(gate.applies_needs, facts)
                   and evaluate_node(gate.applies_if, facts, guideline).status == Status.MET
                   and not _met(gate, facts, guideline) for gate in guideline.gates if gate.applies_if)


def _met(rule: Rule, facts: Facts, guideline: Guideline) -> bool:
    return within_reach(rule.needs, facts) and evaluate_node(rule.criteria, facts, guideline).status == Status.MET


def _met_alternative(results: tuple[RuleResult, ...], when: str, facts: Facts, catalog: StudyCatalog):
    for result in results:
        if result.rule.when == when and result.status == Status.MET:
            study = catalog.resolve(result.rule.study, facts.order.study)
            if study is not None and study.cpt != facts.order.study.cpt:
                return result, study
    return None


def rank_nearest(indications: tuple[RuleResult, ...], limit: int = 3) -> tuple[RuleResult, ...]:
    """Indications closest to being met, for the documentation card.

    Indications the record says something about (even if a window excluded it) come before
    those it is silent on; within each, open (unknown) before ruled out (not-met); then the
    most record evidence, evidence that counts, only time missing, fewest unknowns; ties keep
    the guideline's order.
    """
    def key(item: tuple[int, RuleResult]):
        index, r = item
        relevance = evidence_score(r.result, met_only=False)
        return (relevance == 0, r.status == Status.NOT_MET, -relevance, -evidence_score(r.result),
                r.result.met_on is None, len(missing_items(r.result)), count_leaves(r.result, Status.UNKNOWN), index)

    return tuple(r for _, r in sorted(enumerate(indications), key=key)[:limit])
