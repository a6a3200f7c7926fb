"""Evaluate a guideline's criteria trees over the facts, in three-valued logic with a trace.

``all`` is not-met if any child is not-met, met if all are met, else unknown; ``any`` is met if
any child is met, not-met if all are not-met, else unknown; ``not`` swaps met and not-met.
The trace keeps every child's result so cards can show the evidence and list exactly what is
missing.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from .criteria import KIND_FUNCTIONS
from .fhir_dates import lower_first
from .guidelines import Guideline, Rule
from .model import Facts, Result, Status


def evaluate_node(node: dict, facts: Facts, guideline: Guideline) -> Result:
    """Evaluate one criterion (leaf or combinator) against the facts, once per node and facts."""
    result = facts.memo.get(id(node))
    if result is None:
        result = facts.memo[id(node)] = _evaluate(node, facts, guideline)
    return result


def _evaluate(node: dict, facts: Facts, guideline: Guideline) -> Result:
    if "ref" in node:
        return evaluate_node(guideline.definitions[node["ref"]], facts, guideline)
    if "not" in node:
        inner = evaluate_node(node["not"], facts, guideline)
        flipped = {Status.MET: Status.NOT_MET, Status.NOT_MET: Status.MET}.get(inner.status, Status.UNKNOWN)
        detail = "none on record" if inner.status == Status.NOT_MET and not inner.evidence else inner.detail
        return Result(flipped, node.get("label") or f"No {lower_first(inner.label)}", inner.evidence,
                      detail=detail, children=(inner,), combinator="not")
    for combinator in ("all", "any"):
        if combinator in node:
            children = tuple(evaluate_node(child, facts, guideline) for child in node[combinator])
            return _combine(combinator, node, children)
    return KIND_FUNCTIONS[node["kind"]](node, facts)


def _combine(combinator: str, node: dict, children: tuple[Result, ...]) -> Result:
    statuses = {child.status for child in children}
    decisive, other = (Status.NOT_MET, Status.MET) if combinator == "all" else (Status.MET, Status.NOT_MET)
    if decisive in statuses:
        status = decisive
    elif statuses == {other}:
        status = other
    else:
        status = Status.UNKNOWN
    used = [c for c in children if c.status == status] if status != Status.UNKNOWN else list(children)
    evidence = tuple(dict.fromkeys(ref for c in used for ref in c.evidence))
    met_dates = [c.met_on for c in children if c.met_on]
    met_on = max(met_dates) if status == Status.UNKNOWN and met_dates and _only_time_missing(combinator, children) else None
    label = node.get("label") or ("all of" if combinator == "all" else "one of")
    return Result(status, label, evidence, met_on=met_on, children=children, combinator=combinator)


def _only_time_missing(combinator: str, children: tuple[Result, ...]) -> bool:
    unknown = [c for c in children if c.status == Status.UNKNOWN]
    if combinator == "all":
        return all(c.met_on for c in unknown)
    return any(c.met_on for c in unknown)


@dataclass(frozen=True)
class RuleResult:
    """A rule (indication, gate, alternative) with its evaluation."""

    rule: Rule
    result: Result
    applies: Result | None = None   # gates: the applies_if result

    @property
    def status(self) -> Status:
        return self.result.status


def evaluate_rules(rules: tuple[Rule, ...], facts: Facts, guideline: Guideline) -> tuple[RuleResult, ...]:
    return tuple(RuleResult(rule, evaluate_node(rule.criteria, facts, guideline),
                            evaluate_node(rule.applies_if, facts, guideline) if rule.applies_if else None)
                 for rule in rules)


@dataclass(frozen=True)
class Missing:
    """One checklist line of a documentation card: a label, or a group of alternatives."""

    label: str
    detail: str | None = None
    met_on: date | None = None
    one_of: tuple["Missing", ...] = ()

    def text(self) -> str:
        """One line: the label, or the alternatives joined with "or"."""
        if not self.one_of:
            return self.label
        options = " or ".join(option.label for option in self.one_of)  # one level: details stay in the card
        return options if self.label == "one of" else f"{self.label} (one of: {options})"


def missing_items(result: Result) -> list[Missing]:
    """What would have to be documented for ``result`` to become met."""
    if result.status == Status.MET:
        return []
    if result.combinator == "all":
        return [m for child in result.children if child.status != Status.MET for m in missing_items(child)]
    if result.combinator == "any":
        options = [m for child in result.children if child.status != Status.MET for m in _as_one(child)]
        return options if len(options) == 1 else [Missing(result.label, one_of=tuple(options))]
    if result.combinator == "not":
        return [Missing(result.label, result.detail)]
    return [Missing(result.label, result.detail, result.met_on)]


def _as_one(result: Result) -> list[Missing]:
    items = missing_items(result)
    if len(items) <= 1:
        return items
    return [Missing(result.label if result.combinator else " and ".join(m.label for m in items),
                    one_of=(), detail="; ".join(m.label for m in items))]


def count_leaves(result: Result, status: Status) -> int:
    """How many leaves of a trace have ``status``."""
    if not result.children or result.combinator == "not":
        return 1 if result.status == status else 0
    return sum(count_leaves(child, status) for child in result.children)


def evidence_score(result: Result, met_only: bool = True) -> int:
    """How much clinical evidence a trace found (ranks how near an indication is).

    Only leaves backed by record resources count — an age that fits or an absence (``not``)
    says nothing about why the study was ordered — and an ``any`` counts once, so a long list
    of red flags does not outweigh one documented criterion.  With ``met_only`` false, records
    that matched the codes but failed a window count too: they show what the order is about.
    """
    if result.combinator == "not" or (met_only and result.status == Status.NOT_MET):
        return 0
    if not result.children:
        clinical = [ref for ref in result.evidence if ref != "Patient"]
        return 1 if clinical and (result.status == Status.MET or not met_only) else 0
    scores = [evidence_score(child, met_only) for child in result.children]
    return max(scores) if result.combinator == "any" else sum(scores)
