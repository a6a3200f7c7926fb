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

from cds_service.engine.evaluation import RuleResult, count_leaves, evaluate_node, evaluate_rules, evidence_score, missing_items
from cds_service.engine.guidelines import Guideline, Rule
from cds_service.model import Facts, SpineOrder, Status, Study
from cds_service.engine.prerequisites import within_reach
from cds_service.engine.routing import Route
from cds_service.engine.studies import StudyCatalog

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
    unread: tuple[str, ...] = ()                  # notes and attachments not read, and why (engine/narrative)

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
    verdict = _verdict(facts, guideline, catalog)
    decision = Decision(**vars(verdict), **base)
    if verdict.outcome == ALTERNATIVE and verdict.alternative.rule.when == "unless_approved":
        return replace(decision, nearest=_ranked(facts, guideline))
    if verdict.outcome == DOCUMENTATION and verdict.indication is None:
        nearest = _ranked(facts, guideline)
        relevant = nearest and evidence_score(nearest[0].result, met_only=False) > 0
        return replace(decision, indication=nearest[0] if relevant else None, nearest=nearest)
    return decision


def _ranked(facts: Facts, guideline: Guideline) -> tuple[RuleResult, ...]:
    """No indication is met: rank them all for the card (the one step that needs every trace)."""
    return rank_nearest(evaluate_rules(guideline.indications, facts, guideline))


@dataclass(frozen=True)
class _Verdict:
    """The outcome and the rules that settle it, found by evaluating only what can change it
    (the fields of :class:`Decision` that are not the order, route, guideline and data gaps)."""

    outcome: str
    indication: RuleResult | None = None
    alternative: RuleResult | None = None
    alternative_study: Study | None = None
    blocking_gates: tuple[RuleResult, ...] = ()
    nearest: tuple[RuleResult, ...] = ()


def _verdict(facts: Facts, guideline: Guideline, catalog: StudyCatalog) -> _Verdict:
    """Steps 2–5 of the precedence, lazily: rules out of reach of the record (prerequisites.py)
    cannot be met and are not evaluated, and evaluation stops at the first met indication.

    Only the documentation outcome without a met indication needs more (the ranking of every
    indication), which :func:`_decide` adds; :func:`approves` needs nothing more.
    """
    met = next((r for r in _reachable(guideline.indications, facts, guideline) if r.status == Status.MET), None)
    urgent = _met_alternative(_reachable(guideline.alternatives, facts, guideline, "always"), "always", facts, catalog)
    if urgent:
        return _Verdict(ALTERNATIVE, indication=met, alternative=urgent[0], alternative_study=urgent[1])
    if met:
        blocking = tuple(_blocking_gates(guideline, facts))
        if not blocking:
            return _Verdict(APPROVE, indication=met)
        return _Verdict(DOCUMENTATION, indication=met, blocking_gates=blocking, nearest=(met,))
    later = _met_alternative(_reachable(guideline.alternatives, facts, guideline, "unless_approved"),
                             "unless_approved", facts, catalog)
    if later:
        return _Verdict(ALTERNATIVE, alternative=later[0], alternative_study=later[1])
    return _Verdict(DOCUMENTATION)


def _reachable(rules: tuple[Rule, ...], facts: Facts, guideline: Guideline, when: str | None = None):
    """RuleResults of the rules (of one ``when``) that the record can possibly meet, in order, lazily."""
    for rule in rules:
        if (when is None or rule.when == when) and within_reach(rule.needs, facts):
            yield RuleResult(rule, evaluate_node(rule.criteria, facts, guideline))


def _blocking_gates(guideline: Guideline, facts: Facts):
    """Gates that apply to this record (``applies_if`` met) and are not satisfied."""
    for gate in guideline.gates:
        if gate.applies_if and within_reach(gate.applies_needs, facts):
            applies = evaluate_node(gate.applies_if, facts, guideline)
            if applies.status == Status.MET:
                result = evaluate_node(gate.criteria, facts, guideline)
                if result.status != Status.MET:
                    yield RuleResult(gate, result, applies)


def approves(facts: Facts, guideline: Guideline | None, catalog: StudyCatalog) -> bool:
    """Whether :func:`decide` would approve (no data gaps) — for the comparison with other
    programs, evaluating only what can change that answer.  Tested equal to
    ``decide(...).outcome == APPROVE`` on every case table and program."""
    if guideline is None or not guideline.encoded:
        return False
    if not any(r.status == Status.MET for r in _reachable(guideline.indications, facts, guideline)):
        return False  # most comparisons end here, before any alternative or gate is looked at
    return _verdict(facts, guideline, catalog).outcome == APPROVE  # the met indication is memoised


def _met_alternative(results, when: str, facts: Facts, catalog: StudyCatalog):
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
