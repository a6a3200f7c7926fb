"""What the store keeps of one hook call: its decision rows and its audit record.  Pure, no PHI.

Why: CRD ``found-37`` asks a CRD server to keep an audit trail of what it was asked and what it
answered, so a payer or a clinician can later see why a card said what it said.  The record
answers "which call, from which EHR, about which orders, decided how, by which guideline rule,
on which record entries, how fast" — and nothing more:

* references only (``Condition/123``, ``ServiceRequest/sr-1``), never resource content, names,
  free text, the patient id or a token; the user as its resource type (``Practitioner``);
* the FHIR server as its origin (``https://ehr.example.org``), which says which EHR without
  the path, where some servers put tenant or patient identifiers;
* for calls that failed after authentication, the HTTP status and the OperationOutcome code,
  never the message (it may quote what the client sent).

Everything is passed in (the id, the time, the latency), so this is testable without a clock.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from cds_service.engine.decision import Decision
from cds_service.model import HookRequest, Status
from cds_service.store.repeats import order_of

RECORD_VERSION = 1
# A FHIR reference "Type/id" (R4 id: 1–64 of [A-Za-z0-9-.]); anything else is not kept.
_REFERENCE = re.compile(r"[A-Z][A-Za-z]{1,63}/[A-Za-z0-9\-.]{1,64}(#char=\d{1,9},\d{1,9})?")
"""... optionally with the RFC 5147 character range of a quote read in a note (offsets, never text)."""
_HOOK_INSTANCE = re.compile(r"[A-Za-z0-9\-._:]{1,256}")


def decision_rows(response: dict, decisions: Iterable[Decision], service_id: str, hook: HookRequest,
                  created_at: str, issuer: str | None = None) -> list[dict]:
    """One decisions-table row per card returned, with the client it was issued to (feedback is
    taken only from that client, joined by card uuid)."""
    by_order = {d.order.reference: d for d in decisions}
    rows = []
    for card in response["cards"]:
        d = by_order[order_of(card)]
        rows.append({"card_uuid": card["uuid"], "service_id": service_id, "hook": hook.hook,
                     "hook_instance": hook.hook_instance, "order_ref": d.order.reference,
                     "program": d.route.program.id, "guideline": d.guideline.id if d.guideline else None,
                     "indication": d.indication_id, "outcome": d.outcome,
                     "suggestion_uuids": [s["uuid"] for s in card.get("suggestions", [])], "created_at": created_at,
                     "issuer": issuer})
    return rows


def hook_call_record(*, audit_id: str, at: str, service_id: str, hook: HookRequest, response: dict,
                     decisions: Iterable[Decision], latency_ms: float) -> dict:
    """The audit record of a call that was answered 200 (with or without spine orders)."""
    cards_by_order = {order_of(card): card["uuid"] for card in response["cards"]}
    orders = [_order_entry(d, cards_by_order.get(d.order.reference)) for d in decisions]
    return {
        **_header(audit_id, at, service_id, hook.hook, hook.hook_instance, hook.fhir_server, hook.user_id),
        "status": 200,
        "result": "decided" if orders else "no-spine-order",
        "orders": orders,
        "cards": [card["uuid"] for card in response["cards"]],
        "systemActions": len(response.get("systemActions", [])),
        "latencyMs": round(latency_ms, 1),
    }


def failed_call_record(*, audit_id: str, at: str, service_id: str, body: object, status: int, code: str,
                       latency_ms: float) -> dict:
    """The audit record of a call that failed after authentication (400, 412, 413, 502, 500...).

    The body may be anything the client sent, so only well-formed identifying fields are kept.
    """
    body = body if isinstance(body, dict) else {}
    context = body.get("context") if isinstance(body.get("context"), dict) else {}
    hook = body.get("hook") if body.get("hook") in ("order-select", "order-sign") else None
    instance = body.get("hookInstance")
    instance = instance if isinstance(instance, str) and _HOOK_INSTANCE.fullmatch(instance) else None
    server = body.get("fhirServer") if isinstance(body.get("fhirServer"), str) else None
    user = context.get("userId") if isinstance(context.get("userId"), str) else None
    return {
        **_header(audit_id, at, service_id, hook, instance, server, user),
        "status": status,
        "result": "error",
        "error": code,
        "orders": [],
        "cards": [],
        "latencyMs": round(latency_ms, 1),
    }


def _header(audit_id: str, at: str, service_id: str, hook: str | None, hook_instance: str | None,
            fhir_server: str | None, user_id: str | None) -> dict:
    return {"auditId": audit_id, "version": RECORD_VERSION, "time": at, "service": service_id, "hook": hook,
            "hookInstance": hook_instance, "fhirServer": fhir_origin(fhir_server), "userType": user_type(user_id)}


def _order_entry(d: Decision, card_uuid: str | None) -> dict:
    """One decided order: the rule ids that decided it and the record entries they rest on."""
    rules = [r for r in (d.indication, d.alternative) if r is not None]
    return {
        "order": d.order.reference,
        "study": d.order.study.cpt,
        "program": d.route.program.id,
        "routedBy": d.route.routed_by,
        "guideline": d.guideline.id if d.guideline else None,
        "outcome": d.outcome,
        "indication": d.indication_id,
        "alternative": d.alternative.rule.id if d.alternative else None,
        "criteriaMet": [r.rule.id for r in rules if r.status == Status.MET],
        "blockingGates": [g.rule.id for g in d.blocking_gates],
        "evidence": references(ref for r in rules for ref in r.result.evidence),
        "dataGaps": list(d.data_gaps),
        "card": card_uuid,  # None: decided but not shown (repeat, card-type switch, max-cards)
    }


def references(candidates: Iterable[str]) -> list[str]:
    """Distinct ``Type/id`` references, in order; the Patient (its id is PHI) and non-references dropped."""
    kept = (ref for ref in candidates if isinstance(ref, str) and _REFERENCE.fullmatch(ref))
    return list(dict.fromkeys(ref for ref in kept if not ref.startswith("Patient/")))


def fhir_origin(url: str | None) -> str | None:
    """``scheme://host[:port]`` of a FHIR base URL; None if absent, not an http(s) URL, or
    ambiguous (a backslash: parsers disagree on its host, so naming one would be a guess — such
    a ``fhirServer`` is refused with a 400 anyway).  Credentials in the URL are never kept."""
    if isinstance(url, str) and "\\" in url:
        return None
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
        port = parts.port if parts else None
    except ValueError:
        return None
    if not parts or parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return f"{parts.scheme}://{parts.hostname}" + (f":{port}" if port else "")


def user_type(user_id: str | None) -> str | None:
    """The resource type of ``context.userId`` (``Practitioner/123`` → ``Practitioner``)."""
    kind = user_id.split("/", 1)[0] if isinstance(user_id, str) and "/" in user_id else None
    return kind if kind and re.fullmatch(r"[A-Z][A-Za-z]{1,63}", kind) else None
