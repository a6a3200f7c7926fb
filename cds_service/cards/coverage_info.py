"""Da Vinci CRD 2.2 coverage-information: a systemAction that annotates each decided order.

CRD puts the coverage assertion in ``systemActions`` (never in a card, ``resp-25``), requires it
on order-sign (``hook-16``) and forbids clinical/admin ``doc-needed`` on order-select
(``hook-19``).  The extension needs the client's Coverage; without one (the CDS Hooks sandbox)
none is returned.  Invariants crd-ci-q1..q9 are respected by construction and tested.  When the
documentation needed has a Questionnaire (questionnaires.py), its canonical URL rides along in
``questionnaire`` — only on order-sign, beside ``doc-needed`` (crd-ci-q1).
"""
from __future__ import annotations

from datetime import date

from cds_service.cards import questionnaires
from cds_service.cards.ids import stable_uuid
from cds_service.engine.decision import ALTERNATIVE, APPROVE, INCOMPLETE, NO_POLICY, Decision

EXT = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
REASONS = "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp"


def coverage_action(decision: Decision, hook: str, hook_instance: str, today: date) -> dict | None:
    """The ``update`` systemAction for one decided order, or None without a Coverage."""
    if decision.route.coverage is None:
        return None
    order = dict(decision.order.resource)  # a new top level: only its extension list is replaced, never mutated
    existing = order.get("extension") if isinstance(order.get("extension"), list) else []
    order["extension"] = [e for e in existing if isinstance(e, dict) and e.get("url") != EXT]
    order["extension"].append(coverage_extension(decision, hook, hook_instance, today))
    return {"type": "update", "description": f"Coverage information for {decision.order.study.display}",
            "resource": order}


def coverage_extension(d: Decision, hook: str, hook_instance: str, today: date) -> dict:
    assertion = stable_uuid(hook_instance, d.order.reference, "coverage-assertion")
    parts: list[tuple[str, dict]] = [("coverage", {"valueReference": {"reference": d.route.coverage}})]
    parts += _assertion(d, hook, assertion)
    parts += [("date", {"valueDate": today.isoformat()}), ("coverage-assertion-id", {"valueString": assertion})]
    return {"url": EXT, "extension": [{"url": url, **value} for url, value in parts]}


def _code(url: str, code: str) -> tuple[str, dict]:
    return url, {"valueCode": code}


def _reason(text: str, code: str | None = None) -> tuple[str, dict]:
    concept: dict = {"text": text}
    if code:
        concept["coding"] = [{"system": REASONS, "code": code}]
    return "reason", {"valueCodeableConcept": concept}


def _assertion(d: Decision, hook: str, assertion: str) -> list[tuple[str, dict]]:
    program = d.route.program.name
    if d.outcome == APPROVE:
        return [_code("covered", "covered"), _code("pa-needed", "satisfied"),
                ("satisfied-pa-id", {"valueString": stable_uuid(assertion, "pa")})]
    if d.outcome == INCOMPLETE:  # CRD resp-43: a technical failure is indeterminate, reason technical
        return [_code("covered", "indeterminate"), _code("pa-needed", "indeterminate"),
                _reason(f"Patient data could not be read from the EHR ({', '.join(d.data_gaps)})", "technical")]
    if d.route.routed_by != "payer":   # a Coverage whose payer we could not identify: assert nothing for it
        return [_code("covered", "indeterminate"),
                _reason(f"The payer on the Coverage could not be identified ({d.route.note}); coverage was not assessed")]
    if d.outcome == NO_POLICY:
        return [_code("covered", "indeterminate"),
                _reason(f"No {program} guideline for {d.order.study.display}")]
    parts = [_code("covered", "conditional"), _code("pa-needed", "auth-needed"),
             _code("info-needed", "OTH")]
    if hook == "order-sign":
        parts += [_code("doc-needed", "clinical"), _code("doc-purpose", "withpa")]
        rule = questionnaires.target(d)  # only beside doc-needed (crd-ci-q1)
        if rule:
            parts.append(("questionnaire", {"valueCanonical": questionnaires.canonical(d.guideline.id, rule.id)}))
    why = (f"{program} suggests {d.alternative_study.display} instead" if d.outcome == ALTERNATIVE
           else f"{program} criteria not yet documented")
    return parts + [_reason(why)]
