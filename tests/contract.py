"""One assertion helper per cross-cutting contract (CDS Hooks 2.0 cards, CRD coverage-information)."""
from __future__ import annotations

from cds_service.cards.coverage_info import EXT
from cds_service.protocol.fhir_models import ServiceRequest, validation_problems

DECISION_KEYS = {"order", "outcome", "program", "guideline", "indication"}
OUTCOMES = {"approve", "alternative", "documentation", "no-policy", "incomplete"}


def assert_no_empty_values(value, path="$"):
    """CDS Hooks 2.0 'Use of JSON': no null, "", [] or {} (cards: [] excepted by the caller)."""
    if isinstance(value, dict):
        assert value, f"empty object at {path}"
        for key, item in value.items():
            if key == "indication" and path.endswith("spine-cds.decision"):
                continue  # contract: indication is null when no indication applies
            if key == "guideline" and path.endswith("spine-cds.decision"):
                continue
            assert item not in (None, "", [], {}), f"empty value at {path}.{key}"
            assert_no_empty_values(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            assert_no_empty_values(item, f"{path}[{i}]")


def assert_card_contract(card: dict) -> dict:
    """Check a card against CDS Hooks 2.0 and CRD card rules; return its decision extension."""
    assert isinstance(card["summary"], str) and 0 < len(card["summary"]) < 140, card["summary"]
    assert card["indicator"] in ("info", "warning"), "coverage matters are never critical (CRD resp-1)"
    assert card["source"]["label"] and card["source"]["topic"]["code"] and card["source"]["topic"]["system"]
    assert isinstance(card["uuid"], str) and len(card["uuid"]) == 36
    assert isinstance(card.get("detail", ""), str)
    for reason in card.get("overrideReasons", []):
        assert reason["code"] and reason["system"] and reason["display"]
    if card.get("suggestions"):
        assert card["selectionBehavior"] in ("at-most-one", "any")
        assert sum(1 for s in card["suggestions"] if s.get("isRecommended")) <= 1
        for suggestion in card["suggestions"]:
            assert suggestion["label"] and len(suggestion["uuid"]) == 36 and suggestion["actions"]
            for action in suggestion["actions"]:
                assert action["type"] in ("create", "update", "delete") and action["description"]
                if action["type"] == "delete":
                    assert action["resourceId"].startswith("ServiceRequest/")
                else:
                    assert not validation_problems(ServiceRequest, action["resource"])
    assert_no_empty_values({k: v for k, v in card.items()})
    decision = card["extension"]["spine-cds.decision"]
    assert DECISION_KEYS <= decision.keys() and decision["outcome"] in OUTCOMES
    return decision


def coverage_parts(resource: dict) -> dict[str, list]:
    """The coverage-information sub-extensions of an order, by url."""
    [ext] = [e for e in resource["extension"] if e["url"] == EXT]
    parts: dict[str, list] = {}
    for sub in ext["extension"]:
        value = next(v for k, v in sub.items() if k.startswith("value"))
        parts.setdefault(sub["url"], []).append(value)
    return parts


def assert_coverage_information(resource: dict, hook: str) -> dict[str, list]:
    """Cardinalities and invariants crd-ci-q1..q9 of ext-coverage-information."""
    p = coverage_parts(resource)
    for required in ("coverage", "covered", "date", "coverage-assertion-id"):
        assert len(p.get(required, [])) == 1, required
    codes = lambda key: p.get(key, [])  # noqa: E731
    assert not p.get("questionnaire") or p.get("doc-needed")                                   # q1
    assert not (codes("covered") == ["not-covered"] and p.get("pa-needed"))                   # q2
    if "conditional" in codes("covered") + codes("pa-needed") + codes("doc-needed"):
        assert p.get("info-needed")                                                            # q3
    if set(codes("pa-needed")) & {"satisfied", "no-auth"} or codes("covered") == ["not-covered"]:
        assert "withpa" not in codes("doc-purpose")                                            # q4
    assert (codes("pa-needed") == ["satisfied"]) == bool(p.get("satisfied-pa-id"))            # q5
    if "OTH" in codes("info-needed"):
        assert p.get("reason")                                                                 # q6
    for reason in p.get("reason", []):
        assert reason.get("text") or all(c["system"].startswith("http://hl7.org/fhir/us/davinci-crd") for c in reason["coding"])  # q7
    if p.get("doc-purpose"):
        assert p.get("reason")                                                                 # q8
    if "indeterminate" in codes("covered") + codes("pa-needed") + codes("doc-needed"):
        assert p.get("reason")                                                                 # q9
    if hook == "order-select":
        assert not set(codes("doc-needed")) & {"clinical", "admin"}                            # hook-19
    return p
