"""Evaluate a guideline's criteria trees over the facts, in three-valued logic with a trace.

``all`` is not-met if any child is not-met, met if all are met, else unknown; ``any`` is met if
any child is met, not-met if all are not-met, else unknown; ``not`` swaps met and not-met.
The trace keeps every child's result so cards can show the evidence and list exactly what is
missing.

The mapping trees are compiled once per guideline into small node objects (:class:`Leaf`,
:class:`Combination` for ``all`` and ``any``, :class:`Not`; a ``ref`` becomes the definition's own node), so
evaluating walks objects instead of re-reading dict keys.  Each node also knows the value-set
tags its whole subtree reads — or None when some leaf reads anything else (age, the ordered
study, other draft orders).  On a record holding none of those tags the node's result is the
same for every record (nothing of it was found), so it is computed once and kept: on a long
chart most of a guideline's hundreds of nodes are exactly that.  Everything else is computed at
most once per record (``Facts.memo``).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from cds_service.engine.criteria import KIND_FUNCTIONS, tags_read
from cds_service.engine.fhir_dates import lower_first
from cds_service.engine.guidelines import Guideline, Rule
from cds_service.model import Facts, Result, Status

MET, NOT_MET, UNKNOWN = Status.MET, Status.NOT_MET, Status.UNKNOWN


class Criterion:
    """A compiled mapping node.  Subclasses say how to compute it from the facts."""

    __slots__ = ("raw", "label", "tags", "_when_absent")

    def __init__(self, raw: dict, label: str | None, tags: frozenset[str] | None):
        self.raw, self.label, self.tags, self._when_absent = raw, label, tags, None

    def evaluate(self, facts: Facts) -> Result:
        """This node's result on ``facts``: the shared one when none of its tags is present,
        else computed once per record."""
        tags = self.tags
        if tags is not None and tags.isdisjoint(facts.present):
            result = self._when_absent
            if result is None:
                result = self._when_absent = self.compute(facts)
            return result
        memo = facts.memo
        result = memo.get(self)
        if result is None:
            result = memo[self] = self.compute(facts)
        return result

    def compute(self, facts: Facts) -> Result:
        raise NotImplementedError


class Leaf(Criterion):
    """One criterion of the closed vocabulary (criteria.py)."""

    __slots__ = ("function",)

    def __init__(self, raw: dict):
        super().__init__(raw, raw.get("label"), tags_read(raw))
        self.function = KIND_FUNCTIONS[raw["kind"]]

    def compute(self, facts: Facts) -> Result:
        return self.function(self.raw, facts)


class Not(Criterion):
    __slots__ = ("child",)

    def __init__(self, raw: dict, child: Criterion):
        super().__init__(raw, raw.get("label"), child.tags)
        self.child = child

    def compute(self, facts: Facts) -> Result:
        inner = self.child.evaluate(facts)
        flipped = NOT_MET if inner.status is MET else MET if inner.status is NOT_MET else UNKNOWN
        detail = "none on record" if inner.status is NOT_MET and not inner.evidence else inner.detail
        return Result(flipped, self.label or f"No {lower_first(inner.label)}", inner.evidence,
                      detail=detail, children=(inner,), combinator="not")


class Combination(Criterion):
    """``all`` or ``any``: ``decisive`` settles it (not-met for all, met for any); only children
    of the other status make the other status; anything else is unknown."""

    __slots__ = ("children", "combinator", "decisive", "other")

    def __init__(self, raw: dict, combinator: str, children: tuple[Criterion, ...]):
        tags = None if any(c.tags is None for c in children) else frozenset().union(*(c.tags for c in children))
        super().__init__(raw, raw.get("label") or ("all of" if combinator == "all" else "one of"), tags)
        self.children, self.combinator = children, combinator
        self.decisive, self.other = (NOT_MET, MET) if combinator == "all" else (MET, NOT_MET)

    def compute(self, facts: Facts) -> Result:
        children = tuple([child.evaluate(facts) for child in self.children])
        statuses = {child.status for child in children}
        if self.decisive in statuses:
            status = self.decisive
        elif len(statuses) == 1 and self.other in statuses:
            status = self.other
        else:
            status = UNKNOWN
        used = children if status is UNKNOWN else [c for c in children if c.status is status]
        refs = [ref for c in used if c.evidence for ref in c.evidence]
        evidence = tuple(dict.fromkeys(refs)) if refs else ()
        met_on = self._met_on(children) if status is UNKNOWN else None
        return Result(status, self.label, evidence, met_on=met_on, children=children, combinator=self.combinator)

    def _met_on(self, children: tuple[Result, ...]) -> date | None:
        """When an unknown becomes met by time alone (``all``: every unknown child only waits for
        time; ``any``: one does), the latest such date; else None."""
        dates = [c.met_on for c in children if c.met_on]
        if not dates:
            return None
        unknown = [c for c in children if c.status is UNKNOWN]
        waits = all(c.met_on for c in unknown) if self.combinator == "all" else any(c.met_on for c in unknown)
        return max(dates) if waits else None


def compiled(node: dict, guideline: Guideline) -> Criterion:
    """The compiled form of a mapping node of ``guideline`` (compiled on first use, then kept in
    ``guideline.nodes``; a ``ref`` compiles to its definition's node, shared by every use)."""
    entry = guideline.nodes.get(id(node))
    if entry is not None and entry[0] is node:
        return entry[1]
    if "ref" in node:
        result = compiled(guideline.definitions[node["ref"]], guideline)
    elif "not" in node:
        result = Not(node, compiled(node["not"], guideline))
    elif "all" in node or "any" in node:
        combinator = "all" if "all" in node else "any"
        result = Combination(node, combinator, tuple(compiled(child, guideline) for child in node[combinator]))
    else:
        result = Leaf(node)
    guideline.nodes[id(node)] = (node, result)  # the node itself is kept, so its id stays unique
    return result


def compile_guideline(guideline: Guideline) -> None:
    """Compile every rule of ``guideline`` at start-up, before any request thread runs."""
    for rule in (*guideline.indications, *guideline.gates, *guideline.alternatives):
        compiled(rule.criteria, guideline)
        if rule.applies_if:
            compiled(rule.applies_if, guideline)


def evaluate_node(node: dict, facts: Facts, guideline: Guideline) -> Result:
    """Evaluate one criterion (leaf or combinator) of ``guideline`` against the facts."""
    return compiled(node, guideline).evaluate(facts)


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
