"""Argonaut PAMA appropriateness ratings, for plain CDS Hooks callers such as the public sandbox.

The CDS Hooks sandbox's "PAMA Imaging" tab shows a rating badge only from
``response.extension.systemActions``: ``update`` actions whose ServiceRequest carries the
``pama-rating`` extension.  The Argonaut guide allows three codes and forbids a rating when the
data are insufficient, so a documentation outcome gets none.  CRD callers (with a Coverage) get
CRD coverage information instead; the two never mix.
"""
from __future__ import annotations


from cds_service.cards.ids import stable_uuid
from cds_service.engine.decision import ALTERNATIVE, APPROVE, NO_POLICY, Decision

RATING_URL = "http://fhir.org/argonaut/Extension/pama-rating"
CONSULT_ID_URL = "http://fhir.org/argonaut/Extension/pama-rating-consult-id"
RATING_SYSTEM = "http://fhir.org/argonaut/CodeSystem/pama-rating"
RATINGS = {APPROVE: "appropriate", ALTERNATIVE: "not-appropriate", NO_POLICY: "no-criteria-apply"}


def pama_action(decision: Decision, hook_instance: str) -> dict | None:
    """The ``update`` carrying the rating for one order, or None when no rating applies."""
    rating = RATINGS.get(decision.outcome)
    if rating is None or decision.route.coverage is not None:
        return None
    order = rated(dict(decision.order.resource), rating, hook_instance, decision.order.reference)
    return {"type": "update", "description": f"Appropriateness rating ({rating}) for {decision.order.study.display}",
            "resource": order}


def rated(order: dict, rating: str, hook_instance: str, reference: str) -> dict:
    """``order`` (a copy the caller owns) with its pama-rating extensions replaced by ``rating``."""
    existing = order.get("extension") if isinstance(order.get("extension"), list) else []
    order["extension"] = [e for e in existing if isinstance(e, dict) and e.get("url") not in (RATING_URL, CONSULT_ID_URL)]
    order["extension"] += [
        {"url": RATING_URL, "valueCodeableConcept": {"coding": [{"system": RATING_SYSTEM, "code": rating}]}},
        {"url": CONSULT_ID_URL, "valueUri": f"urn:uuid:{stable_uuid(hook_instance, reference, 'pama')}"},
    ]
    return order

