"""What a criterion needs in the record before it can possibly be met — checked in one lookup.

Comparing an order against every other program evaluates hundreds of indications, and on most
records nearly all of them are plainly out of reach: a cauda equina indication cannot be met by
a chart that holds no cauda equina finding.  For each rule the loader derives, from its criteria
tree alone, a conjunction of clauses; each clause is a set of value-set tags of which at least
one must have items in the record for the rule to be met.  If a clause has none, the rule is
not met, whatever the rest of the tree says — so the full evaluation can be skipped.

Only a *necessary* condition is derived (never a sufficient one): leaves whose outcome does not
depend on coded record items (age, the ordered study, other draft orders, ``not``) add no clause,
and ``any`` keeps one clause made of the union of its children's smallest clauses.  The
equivalence with full evaluation is tested over every case table and every program.
"""
from __future__ import annotations

from collections.abc import Mapping

from cds_service.model import Facts

Clauses = tuple[frozenset[str], ...]


def prerequisites(node: dict, definitions: Mapping[str, dict]) -> Clauses:
    """The clauses that must all hold in the record for ``node`` to be met."""
    if "ref" in node:
        return prerequisites(definitions[node["ref"]], definitions)
    if "not" in node:
        return ()
    if "all" in node:
        return tuple(dict.fromkeys(c for child in node["all"] for c in prerequisites(child, definitions)))
    if "any" in node:
        per_child = [prerequisites(child, definitions) for child in node["any"]]
        if not all(per_child):
            return ()  # some child can be met without any coded item
        return (frozenset().union(*(min(clauses, key=len) for clauses in per_child)),)
    return _leaf(node)


def _leaf(node: dict) -> Clauses:
    """The value sets a leaf reads (criteria.tags_read) are the ones it needs — except that a
    ``documented`` leaf is met only by a "yes" answer, never by a "no"."""
    from cds_service.engine.criteria import tags_read  # late: criteria imports evaluation's neighbours
    from cds_service.engine.attestation import ATTESTED, link_id
    tags = tags_read(node)
    if tags is None:
        return ()
    if node["kind"] == "documented":
        return (frozenset({ATTESTED + link_id(node["label"])}),)
    return (tags,)


def within_reach(clauses: Clauses, facts: Facts) -> bool:
    """False when the record certainly cannot meet a rule with these prerequisites."""
    present = facts.present
    for clause in clauses:
        if clause.isdisjoint(present):
            return False
    return True
