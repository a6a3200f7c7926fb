"""Documentation Questionnaires: closing the loop on ``documented`` criteria, the Da Vinci DTR way.

A ``documented`` leaf is a requirement only the clinician's notes can show, so no coded record
can ever meet it.  For each indication or gate we serve a FHIR R4 Questionnaire with one
``boolean`` question per such leaf; the documentation card links to it, and a completed
QuestionnaireResponse in the record (prefetch key ``questionnaireResponses``) is read back by
``facts.py`` as attestations that ``criteria.documented`` counts.

Question ids are derived from the leaf's label alone (a readable slug plus a hash), so they are
stable across releases and the same requirement worded the same way in two guidelines is the
same question: one attestation answers both.  The canonical URL does not depend on the host we
run on, so a response stays recognisable wherever the service moves.  Pure: no Flask here.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from cds_service.engine.attestation import ATTESTATION_WINDOW_DAYS, CANONICAL_BASE, link_id
from cds_service.engine.fhir_dates import lower_first
from cds_service.engine.guidelines import Guideline, Rule

if TYPE_CHECKING:
    from cds_service.engine.decision import Decision

PUBLISHER = "spine-cds"
LINK_ID = re.compile(r"[a-z0-9-]{1,80}-[0-9a-f]{8}")   # attestation.link_id: a slug and 8 hex digits


def questionnaire_id(guideline_id: str, rule_id: str) -> str:
    """The resource id: ``<guideline>--<rule>``, or its first 55 characters and a hash when that is
    longer than the 64 characters a FHIR id may have (the canonical URL keeps the full name)."""
    name = f"{guideline_id}--{rule_id}"
    if len(name) <= 64:
        return name
    return f"{name[:55].rstrip('-')}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def canonical(guideline_id: str, rule_id: str) -> str:
    """The Questionnaire's canonical URL (``QuestionnaireResponse.questionnaire`` names it)."""
    return f"{CANONICAL_BASE}{guideline_id}--{rule_id}"


def route_path(guideline_id: str, rule_id: str) -> str:
    """Where ``GET`` serves it, relative to the service's base URL."""
    return f"/questionnaires/{quote(guideline_id, safe='')}/{quote(rule_id, safe='')}"


def questionnaire_url(base_url: str, guideline_id: str, rule_id: str) -> str | None:
    """The absolute URL of the Questionnaire, or None when ``base_url`` is not an absolute http(s)
    URL — card links must be absolute, so without a base there is no link."""
    parts = urlsplit(base_url or "")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return base_url.rstrip("/") + route_path(guideline_id, rule_id)


def base_url_for(public_base_url: str, request_url_root: str) -> str:
    """The base URL for card links: the configured public one (behind a proxy), else the request's."""
    return (public_base_url or request_url_root or "").rstrip("/")


def find_rule(guideline: Guideline, rule_id: str) -> Rule | None:
    """An indication or gate of ``guideline`` (alternatives ask for nothing to document)."""
    return next((r for r in (*guideline.indications, *guideline.gates) if r.id == rule_id), None)


def _leaves(node: dict, definitions, negated: bool = False) -> Iterator[tuple[dict, bool]]:
    """Every leaf of a criteria tree, following ``ref``s, with whether it sits under a ``not``."""
    if "ref" in node:
        yield from _leaves(definitions[node["ref"]], definitions, negated)
    elif "not" in node:
        yield from _leaves(node["not"], definitions, not negated)
    elif "all" in node or "any" in node:
        for child in node.get("all") or node.get("any"):
            yield from _leaves(child, definitions, negated)
    else:
        yield node, negated


def documented_leaves(rule: Rule, definitions) -> list[dict]:
    """The ``documented`` leaves of a rule's criteria, once per question id, in tree order."""
    found: dict[str, dict] = {}
    for leaf, _ in _leaves(rule.criteria, definitions):
        if leaf["kind"] == "documented":
            found.setdefault(link_id(leaf["label"]), leaf)
    return list(found.values())


def coded_labels(rule: Rule, definitions) -> list[str]:
    """What the coded record (not an attestation) has to show, one line per criterion: a subtree
    without ``documented`` leaves is one line (its label, or its alternatives joined), so the
    clinician sees "one of" where the guideline offers a choice."""
    return list(dict.fromkeys(_coded(rule.criteria, definitions)))


def _coded(node: dict, definitions) -> list[str]:
    if "ref" in node:
        return _coded(definitions[node["ref"]], definitions)
    if not _has_documented(node, definitions):
        return [_describe(node, definitions)]
    if "not" in node:
        return _coded(node["not"], definitions)
    if "all" in node:
        return [line for child in node["all"] for line in _coded(child, definitions)]
    if "any" not in node:
        return []  # a documented leaf: it is a question, not a line here
    asked = [child for child in node["any"] if _has_documented(child, definitions)]
    plain = [lower_first(_describe(child, definitions)) for child in node["any"] if child not in asked]
    lines = [line for child in asked for line in _coded(child, definitions)]
    if plain:  # coded alternatives to the questions: say so, never list them as also needed
        above = "a yes above" if all(_resolve(c, definitions).get("kind") == "documented" for c in asked) else "all of the above"
        lines.append(f"Or, instead of {above}: " + ("one of: " if len(plain) > 1 else "") + "; ".join(plain))
    return lines


def _resolve(node: dict, definitions) -> dict:
    return _resolve(definitions[node["ref"]], definitions) if "ref" in node else node


def _has_documented(node: dict, definitions) -> bool:
    return any(leaf["kind"] == "documented" for leaf, _ in _leaves(node, definitions))


def _describe(node: dict, definitions) -> str:
    """One line for a criteria subtree, worded as evaluation.py labels it."""
    if "ref" in node:
        return _describe(definitions[node["ref"]], definitions)
    if node.get("label"):
        return node["label"]
    if "not" in node:
        return f"No {lower_first(_describe(node['not'], definitions))}"
    if "any" in node:
        return "One of: " + "; ".join(lower_first(_describe(c, definitions)) for c in node["any"])
    return " and ".join(_describe(c, definitions) for c in node["all"])


def found_in_notes(value: str | None) -> frozenset[str]:
    """The ``found`` parameter of a card's link: the linkIds of questions the record already
    answers (a note said so), as a comma-separated list.  Link ids only, never text."""
    return frozenset(v for v in (value or "").split(",")[:50] if LINK_ID.fullmatch(v))


def build_questionnaire(guideline: Guideline, rule: Rule, found: frozenset[str] = frozenset()) -> dict:
    """The FHIR R4 Questionnaire asking the clinician to attest ``rule``'s documented criteria;
    questions the notes already answer (``found``) carry ``initial`` yes, for the clinician to
    confirm (DTR pre-population)."""
    source = rule.source
    quote_text = f': "{source["quote"]}"' if source.get("quote") else ""
    items: list[dict] = [{"linkId": "guideline", "type": "display",
                          "text": f"{guideline.title} — {source['section']}{quote_text}"}]
    for leaf in documented_leaves(rule, guideline.definitions):
        item = {"linkId": link_id(leaf["label"]), "type": "boolean", "text": leaf["label"]}
        if item["linkId"] in found:
            item["initial"] = [{"valueBoolean": True}]
        items.append(item)
    coded = coded_labels(rule, guideline.definitions)
    if coded:
        items.append({"linkId": "record", "type": "group",
                      "text": "Decided from the coded record, not answered here:",
                      "item": [{"linkId": f"record-{n}", "type": "display", "text": label}
                               for n, label in enumerate(coded, 1)]})
    questionnaire = {
        "resourceType": "Questionnaire", "id": questionnaire_id(guideline.id, rule.id),
        "url": canonical(guideline.id, rule.id), "status": "active", "title": rule.label,
        "subjectType": ["Patient"], "publisher": PUBLISHER,
        "description": (f"Attest what the clinician's notes document for {guideline.title} "
                        f"({guideline.publisher or 'the payer'}): {rule.label}. Answer Yes only when the "
                        f"notes show it; a completed response counts for {ATTESTATION_WINDOW_DAYS} days "
                        "unless the criterion sets its own window."),
        "item": items,
    }
    if guideline.version:
        questionnaire["version"] = guideline.version
    return questionnaire


def target(decision: Decision) -> Rule | None:
    """The rule a documentation card asks to document: the blocking gate, else the nearest
    indication — when it has at least one ``documented`` leaf (else a questionnaire adds nothing)."""
    if decision.outcome != "documentation" or decision.guideline is None:  # decision.DOCUMENTATION
        return None
    if decision.blocking_gates:
        rule = decision.blocking_gates[0].rule
    elif decision.indication:
        rule = decision.indication.rule
    else:
        return None
    return rule if documented_leaves(rule, decision.guideline.definitions) else None


def answered_by_notes(decision: Decision, rule: Rule) -> list[str]:
    """The linkIds of ``rule``'s questions a note already answered (a met ``documented`` leaf
    whose evidence points into text): the card's form link pre-fills them."""
    result = decision.blocking_gates[0].result if decision.blocking_gates else decision.indication.result
    asked = {leaf["label"] for leaf in documented_leaves(rule, decision.guideline.definitions)}
    found, todo = [], [result]
    while todo:
        node = todo.pop()
        todo.extend(node.children)
        if (not node.children and node.label in asked and node.status.value == "met"
                and any("#char=" in ref for ref in node.evidence)):
            found.append(link_id(node.label))
    return sorted(set(found))
