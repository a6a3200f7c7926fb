"""Build the CDS Hooks card for each decision: one card per decided order, pure dicts.

Card and suggestion ids are UUIDv5 of the hook instance and order, so the same call yields the
same ids (feedback and "don't nag twice" can rely on them) without a random source in the core.
"""
from __future__ import annotations

from cds_service.cards import card_text as text
from cds_service.cards.ids import stable_uuid
from cds_service.cards.pama import rated
from cds_service.cards import questionnaires
from cds_service.engine.decision import ALTERNATIVE, APPROVE, DOCUMENTATION, INCOMPLETE, NO_POLICY, Decision
from cds_service.engine.evaluation import missing_items

CARD_TYPES = "http://terminology.hl7.org/CodeSystem/cdshooks-card-type"
OVERRIDE_SYSTEM = "https://spine-cds.example.org/fhir/CodeSystem/override-reason"
TOPICS = {
    APPROVE: ("appropriate-use", "Appropriate use"),
    ALTERNATIVE: ("therapy-alternatives-opt", "Alternative study"),
    DOCUMENTATION: ("guideline", "Documentation needed"),
    NO_POLICY: ("guideline", "No applicable guideline"),
    INCOMPLETE: ("guideline", "Check could not complete"),
}
OVERRIDE_REASONS = (
    ("documented-elsewhere", "Criteria are documented in notes not yet in the record"),
    ("clinical-judgment", "Clinical judgment: this study is needed now"),
    ("alternative-not-suitable", "The suggested alternative is not suitable for this patient"),
    ("urgent", "Urgent or emergency presentation"),
)
# Which reasons fit which card: "the alternative is not suitable" only where one is suggested,
# "documented elsewhere" only where documentation is asked for.
REASONS_FOR = {
    ALTERNATIVE: ("alternative-not-suitable", "clinical-judgment", "urgent"),
    DOCUMENTATION: ("documented-elsewhere", "clinical-judgment", "urgent"),
}


def card_for(decision: Decision, hook_instance: str, base_url: str = "", delete_create: bool = False) -> dict:
    """The one decision card for an order.  ``base_url`` (absolute, the service's public root) is
    needed only for the documentation card's questionnaire link; without it there is no link.
    ``delete_create``: propose an alternative as delete + create rather than one update."""
    if decision.outcome == ALTERNATIVE:
        card = _alternative(decision, hook_instance, delete_create)
    else:
        builder = {APPROVE: _approve, DOCUMENTATION: _documentation, NO_POLICY: _no_policy, INCOMPLETE: _incomplete}
        card = builder[decision.outcome](decision, hook_instance, base_url)
    code, display = TOPICS[decision.outcome]
    card["uuid"] = stable_uuid(hook_instance, decision.order.reference, "card")
    card["source"] = {"label": decision.route.payer or decision.route.program.name,   # CRD: the insurer the patient knows
                      "topic": {"system": CARD_TYPES, "code": code, "display": display}}
    card["extension"] = {"spine-cds.decision": decision_extension(decision)}
    if fitting := REASONS_FOR.get(decision.outcome):
        card["overrideReasons"] = [{"system": OVERRIDE_SYSTEM, "code": c, "display": d}
                                   for c, d in OVERRIDE_REASONS if c in fitting]
    return card


def decision_extension(d: Decision) -> dict:
    """The stable, machine-readable decision (external checks depend on these keys)."""
    ext = {"order": d.order.reference, "outcome": d.outcome, "program": d.route.program.id,
           "guideline": d.guideline.id if d.guideline else None, "indication": d.indication_id,
           "routedBy": d.route.routed_by}
    if d.outcome in (APPROVE, DOCUMENTATION) and d.indication and d.indication.result.evidence:
        ext["evidence"] = list(d.indication.result.evidence)   # what decided it (or is already on record)
    if d.alternative_study:
        ext["alternative"] = {"id": d.alternative.rule.id, "cpt": d.alternative_study.cpt}
    if d.data_gaps:
        ext["dataGaps"] = list(d.data_gaps)
    if d.unread:
        ext["notRead"] = list(d.unread)   # notes and attachments the narrative reader could not read, and why
    if d.outcome == DOCUMENTATION and d.indication:
        ext["missing"] = [m.text() for m in _missing(d)]
        if d.indication.result.met_on and not d.blocking_gates:
            ext["metOn"] = d.indication.result.met_on.isoformat()
    return ext


def _missing(d: Decision):
    if d.blocking_gates:
        return [m for gate in d.blocking_gates for m in missing_items(gate.result)]
    return missing_items(d.indication.result)


def _approve(d: Decision, _hook: str, _base_url: str) -> dict:
    rule = d.indication.rule
    lines = [f"**{rule.label}** — meets {d.guideline.title}.", "", f"> {text.cite(rule)}", "",
             "Evidence in the record:", *text.evidence_lines(d.indication.result), "", text.program_note(d)]
    return {"summary": text.approve_summary(d), "indicator": "info", "detail": "\n".join(lines)}


def _alternative(d: Decision, hook_instance: str, delete_create: bool) -> dict:
    rule, study = d.alternative.rule, d.alternative_study
    lines = [f"**{rule.label}.** {rule.reason.rstrip('.')}.", "", f"> {text.cite(rule)}", "",
             *text.evidence_lines(d.alternative.result), "", text.program_note(d)]
    if delete_create:
        actions = [{"type": "delete", "description": f"Remove the draft order for {d.order.study.display}",
                    "resourceId": d.order.reference},
                   {"type": "create", "description": f"Order {study.display}",
                    "resource": replacement_order(d.order.resource, study, hook_instance)}]
    else:   # one update of the draft (CRD "Propose Alternate Request"): what the sandbox's PAMA screen applies
        actions = [{"type": "update", "description": f"Change the draft order to {study.display}",
                    "resource": switched_order(d, study, hook_instance)}]
    suggestion = {
        "label": f"Order {study.display} instead of {d.order.study.display}",
        "uuid": stable_uuid(hook_instance, d.order.reference, "suggestion", study.cpt),
        "isRecommended": True,
        "actions": actions,
    }
    return {"summary": text.alternative_summary(d), "indicator": "warning", "detail": "\n".join(lines),
            "selectionBehavior": "at-most-one", "suggestions": [suggestion]}


def switched_order(d: Decision, study, hook_instance: str) -> dict:
    """The draft order itself (same id, reasons, everything) with the alternative's CPT code; where
    no Coverage is in play (PAMA), rated appropriate for the study it now names."""
    order = dict(d.order.resource)   # a new top level: the draft is never mutated
    order["code"] = {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": study.cpt, "display": study.display}],
                     "text": study.display}
    return order if d.route.coverage is not None else rated(order, "appropriate", hook_instance, f"{d.order.reference}|{study.cpt}")


def replacement_order(draft: dict, study, hook_instance: str) -> dict:
    """A new draft ServiceRequest for ``study``, keeping the draft's subject, reasons and requester."""
    order = {"resourceType": "ServiceRequest",
             "id": stable_uuid(hook_instance, str(draft.get("id")), study.cpt),
             "status": "draft", "intent": draft.get("intent") if draft.get("intent") in ("order", "plan", "proposal") else "order",
             "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": study.cpt, "display": study.display}],
                      "text": study.display}}
    for key in ("subject", "encounter", "requester", "reasonCode", "reasonReference", "insurance", "authoredOn"):
        if draft.get(key):
            order[key] = draft[key]
    return order


def _documentation(d: Decision, _hook: str, base_url: str) -> dict:
    lines = []
    if d.blocking_gates:
        gate = d.blocking_gates[0]
        lines += [f"**{d.indication.rule.label}** is documented, but this request also needs: **{gate.rule.label}**", "",
                  f"> {text.cite(gate.rule)}", ""]
    elif d.indication:
        lines += [f"Nearest indication: **{d.indication.rule.label}**", "", f"> {text.cite(d.indication.rule)}", ""]
    lines += ["To meet it, record:", *text.checklist(_missing(d))] if d.indication else [
        "No indication of this guideline is documented.", "",
        f"Neither the order's reasons nor the record match any of the {len(d.guideline.indications)} indications of "
        f"{d.guideline.title}. Record the clinical reason for this study as a problem or as the order's reason."]
    found = text.evidence_lines(d.indication.result) if d.indication else []
    if found:
        lines += ["", "Already in the record:", *found]
    others = [r.rule.label for r in d.nearest[1:]] if d.indication else []
    if others:
        lines += ["", "Other indications that could apply: " + "; ".join(others) + "."]
    lines += ["", text.program_note(d)]
    card = {"summary": text.documentation_summary(d), "indicator": "warning", "detail": "\n".join(lines)}
    rule = questionnaires.target(d)  # a DTR-style questionnaire: attesting it satisfies `documented` criteria
    url = questionnaires.questionnaire_url(base_url, d.guideline.id, rule.id) if rule else None
    found = questionnaires.answered_by_notes(d, rule) if url else []
    if found:
        url += "?found=" + ",".join(found)   # the form opens with these answered yes (DTR pre-population)
    if url:
        card["links"] = [{"label": text.shorten(f"Document it: {rule.label}", 80), "url": url, "type": "absolute"}]
    return card


def _incomplete(d: Decision, _hook: str, _base_url: str) -> dict:
    """Part of the record could not be read: say so, say what was read, never guess."""
    lines = [f"spine-cds could not read part of the patient's record from the EHR "
             f"({', '.join(d.data_gaps)}), so whether this {d.order.study.display} meets "
             f"{d.guideline.title} is **not known**. Nothing was concluded from the incomplete record.", "",
             "Re-open or re-sign the order to try again. If this keeps happening, the EHR's FHIR server may be "
             "slow or down: tell your EHR administrator."]
    if d.indication:
        lines += ["", f"From the part that was read, the nearest indication is **{d.indication.rule.label}**.",
                  *text.evidence_lines(d.indication.result)]
    lines += ["", text.program_note(d)]
    return {"summary": text.incomplete_summary(d), "indicator": "warning", "detail": "\n".join(lines)}


def _no_policy(d: Decision, _hook: str, _base_url: str) -> dict:
    detail = (f"{d.route.program.name} has no encoded guideline for {d.order.study.display}; "
              f"spine-cds makes no decision for this order.\n\n{text.program_note(d)}")
    return {"summary": text.no_policy_summary(d), "indicator": "info", "detail": detail}
