"""HTTP edges: discovery, the hook services, feedback, health.  Thin: parse, call, answer."""
from __future__ import annotations

import json
import logging
import math
import re
import time
import uuid
from datetime import date, datetime, timedelta, timezone

import orjson
from flask import Blueprint, current_app, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from cds_service.store.audit import decision_rows, failed_call_record, hook_call_record
from cds_service.protocol import arrival
from cds_service.protocol.audience import audiences
from cds_service.protocol.discovery import SERVICES, discovery_document
from cds_service.errors import CdsBadRequest, CdsError, CdsNotFound
from cds_service.model import Caller
from cds_service.store.feedback import parse_feedback
from cds_service.protocol.hook_request import parse_hook_request
from cds_service.protocol.hooks import orders_in_scope, respond
from cds_service.protocol.request_log import bind_request_id
from cds_service.protocol.metrics import metrics_of
from cds_service.cards.questionnaires import base_url_for
from cds_service.store.repeats import drop_repeats

bp = Blueprint("cds", __name__)
log = logging.getLogger(__name__)


def state():
    return current_app.extensions["spine_cds"]


@bp.get("/cds-services")
def discovery():
    return discovery_document()


@bp.get("/health")
def health():
    """Up, with the encoded guidelines; 503 when the store could not take a hook call's records."""
    guidelines = sorted(g.id for g in state().registry.guidelines.values() if g.encoded)
    if problem := state().store.problem():
        return {"status": "unavailable", "store": problem, "guidelines": guidelines}, 503
    return {"status": "ok", "store": "ok", "guidelines": guidelines}


@bp.post("/cds-services/<service_id>")
def call_service(service_id: str):
    service = _service(service_id)
    arrived = _not_too_late()
    caller = authenticate_client()
    started, body = time.perf_counter(), None
    try:
        body = _json_body()
        hook, response, decisions, shown = _decide(body, service["hook"], caller, arrived)
    except Exception as exc:
        _audit_failure(service_id, body, exc, started)
        raise
    _remember(service_id, hook, response, decisions, shown, started, caller)
    return response


def _not_too_late() -> float:
    """The call's arrival (arrival.py); a call that already waited the whole SPINE_CDS_DEADLINE_S
    for a worker is shed with 503 + Retry-After: its answer would come too late for the EHR, and
    deciding it would only make the calls behind it wait longer (finding 10)."""
    arrived = arrival.arrived(request.environ)
    deadline = state().settings.deadline_s
    waited = time.monotonic() - arrived
    if waited >= deadline:
        log.warning("hook call shed: it waited %.0f ms for a worker, past SPINE_CDS_DEADLINE_S=%s s", waited * 1000, deadline)
        raise CdsError(f"The service is overloaded: this call waited {waited:.1f} s for a worker, past its "
                       f"{deadline:g} s deadline (SPINE_CDS_DEADLINE_S). Retry after the Retry-After seconds; "
                       "if this persists, the operator should add workers or instances.",
                       status=503, code="transient", headers={"Retry-After": str(max(1, math.ceil(deadline)))})
    return arrived


def _decide(body: object, hook_name: str, caller: Caller, arrived: float):
    """Validate, gather and decide: (the hook request, the response, the decisions behind it,
    the fingerprints of the cards shown to store with the call)."""
    hook = parse_hook_request(body, hook_name)
    bind_request_id(hook.hook_instance)
    st = state()
    in_scope, _ = orders_in_scope(hook, st.registry)
    if not in_scope:
        log.info("hook=%s instance=%s spine_orders=0", hook.hook, hook.hook_instance)
        return hook, {"cards": []}, [], None
    record = st.gatherer.gather(hook, arrived=arrived)
    response, decisions = respond(hook, record, st.registry, st.settings.default_program, _today(),
                                  compare_programs=st.settings.compare_programs,
                                  base_url=base_url_for(st.settings.public_base_url, request.url_root),
                                  delete_create=st.settings.alternative_delete_create,
                                  notes=st.settings.note_limits, mention_cache=st.mentions)
    metrics_of(current_app).record_decisions(hook.hook, record.sources, decisions)
    response, shown = drop_repeats(hook, response, decisions, st.shown, caller)
    return hook, response, decisions, shown


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str):
    _service(service_id)
    caller = authenticate_client()
    items = parse_feedback(_json_body())
    now = datetime.now(timezone.utc)
    _only_cards_issued_to(caller, service_id, items, now)
    metrics_of(current_app).record_feedback(service_id, items)
    stored = sum(state().store.record_feedback(service_id, item, now.isoformat(), caller.issuer) for item in items)
    log.info("feedback service=%s items=%d new=%d", service_id, len(items), stored)
    return {"received": len(items), "stored": stored}


def _only_cards_issued_to(caller: Caller, service_id: str, items, now: datetime) -> None:
    """Refuse the whole feedback call (422, nothing stored) when an item names a card this
    service did not issue to the caller's client within SPINE_CDS_FEEDBACK_WINDOW_S: feedback
    for made-up cards, or for another client's, would skew /report (issue #14, finding 11)."""
    window = state().settings.feedback_window_s
    since = (now - timedelta(seconds=window)).isoformat()
    for index, item in enumerate(items):
        if not state().store.card_issued(item.card, service_id, caller.issuer, since):
            log.info("feedback refused service=%s: item %d names a card not issued to this client", service_id, index)
            raise CdsError(f"feedback[{index}].card is not a card this service ({service_id}) issued to your client "
                           f"in the last {window:g} s, so no feedback was stored. Send feedback only with the uuid of "
                           "a card this service returned to you, to the feedback URL of the service that returned it.",
                           status=422, code="not-found")
        _only_suggestions_of_the_card(state().store, item, index)


def _only_suggestions_of_the_card(store, item, index: int) -> None:
    """An accepted suggestion must be one the card offered: /report counts which suggestion
    (x-ray first, CT instead of MRI...) clinicians take, and a made-up one would skew it."""
    if not item.accepted_suggestions:
        return
    offered = set((store.decision(item.card) or {}).get("suggestion_uuids") or ())
    if unknown := [s for s in item.accepted_suggestions if s not in offered]:
        raise CdsError(f"feedback[{index}].acceptedSuggestions names {len(unknown)} suggestion(s) the card did not offer, "
                       "so no feedback was stored. List only the uuid of a suggestion of that card "
                       f"({len(offered)} offered).", status=422, code="not-found")


def _service(service_id: str) -> dict:
    service = SERVICES.get(service_id)
    if service is None:
        raise CdsNotFound(f"No CDS service {service_id!r}; GET /cds-services lists the services.")
    return service


def authenticate_client() -> Caller:
    """The verified caller; with SPINE_CDS_AUTH=off every call is the same anonymous client."""
    st = state()
    if not st.settings.auth:
        return Caller("")
    path = request.path if st.settings.public_base_url else request.script_root + request.path
    claims = st.authenticator.verify(request.headers.get("Authorization"),
                                     audiences(request.environ, path, st.settings.public_base_url, st.settings.trusted_proxies))
    user = claims.get("fhirUser")
    return Caller(claims["iss"], user if isinstance(user, str) else None)


def _json_body() -> object:
    """The JSON body of a hook or feedback call.  Only a JSON media type is read: a browser may
    send ``text/plain`` (or no type) across origins without a CORS preflight, so such a body is
    refused with 415 rather than parsed."""
    mimetype = request.mimetype or ""
    if mimetype != "application/json" and not (mimetype.startswith("application/") and mimetype.endswith("+json")):
        raise CdsError("Send the request as JSON with 'Content-Type: application/json' "
                       f"(got {'no Content-Type' if not mimetype else 'another media type'}).",
                       status=415, code="not-supported")
    return parse_json(_raw_body() or b"null")


def _raw_body() -> bytes:
    """The request body.  With a Content-Length within ``MAX_CONTENT_LENGTH`` it is read in one
    call: werkzeug's size-limited stream reads 64 KB at a time into a bytearray and copies it
    again, which under gunicorn cost a long chart about 0.3 ms.  A larger Content-Length is 413,
    as werkzeug would answer; without one (chunked), werkzeug's stream enforces the limit."""
    length, limit = request.content_length, current_app.config["MAX_CONTENT_LENGTH"]
    if length is None:
        return request.get_data(cache=False)
    if limit is not None and length > limit:
        raise RequestEntityTooLarge()
    return request.environ["wsgi.input"].read(length)


def parse_json(raw: bytes) -> object:
    """The parsed body.  orjson first: it parses a long chart about twice as fast as the standard
    library, and refuses anything unusual — NaN, lone surrogate escapes, UTF-16, nesting beyond
    1,024 levels — which then gets exactly the standard library's treatment as before (accepted,
    or a 400 naming the problem).  The one thing orjson reads differently, an integer beyond 64
    bits, becomes a float: no FHIR element we read holds such a number."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _strict_json(raw)


def _strict_json(raw: bytes) -> object:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise CdsBadRequest(f"The request body is not valid JSON ({type(exc).__name__}); send a CDS Hooks request object.") from exc
    if _SURROGATE_ESCAPE.search(raw) and not _is_unicode(body):
        raise CdsBadRequest("The request body has a string with an unpaired surrogate escape (\\ud800-\\udfff), which is "
                            "not Unicode text (RFC 8259 8.2); send the text as UTF-8 or as a complete surrogate pair.")
    return body


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _is_unicode(body: object) -> bool:
    """False when a string holds a lone surrogate: it can be neither stored, logged nor hashed as UTF-8.
    Iterative, so a deeply nested body cannot overflow the stack here."""
    stack = [body]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and not item.isascii():
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
    return True


def _today() -> date:
    fixed = state().settings.today
    return date.fromisoformat(fixed) if fixed else date.today()


def _remember(service_id: str, hook, response: dict, decisions, shown, started: float, caller: Caller) -> None:
    """Store what each card decided (no PHI) so feedback can be joined to it, the call's audit
    record (audit.py) and the shown cards' fingerprints (repeats.py), in one transaction
    committed before the response is sent."""
    now = datetime.now(timezone.utc).isoformat()
    record = hook_call_record(audit_id=str(uuid.uuid4()), at=now, service_id=service_id, hook=hook, response=response,
                              decisions=decisions, latency_ms=1000 * (time.perf_counter() - started))
    state().store.record_hook_call(decision_rows(response, decisions, service_id, hook, now, caller.issuer), record,
                                   shown)
    for d in decisions:
        log.info("hook=%s instance=%s order=%s program=%s guideline=%s outcome=%s indication=%s",
                 hook.hook, hook.hook_instance, d.order.reference, d.route.program.id,
                 d.guideline.id if d.guideline else None, d.outcome, d.indication_id)


def _audit_failure(service_id: str, body: object, exc: Exception, started: float) -> None:
    """Keep an audit record of a call that failed after authentication; never mask its error."""
    status, code = ((exc.status, exc.code) if isinstance(exc, CdsError) else
                    (exc.code or 500, "processing") if isinstance(exc, HTTPException) else (500, "exception"))
    record = failed_call_record(audit_id=str(uuid.uuid4()), at=datetime.now(timezone.utc).isoformat(),
                                service_id=service_id, body=body, status=status, code=code,
                                latency_ms=1000 * (time.perf_counter() - started))
    try:
        state().store.record_audit(record)
    except Exception as store_exc:  # the store is down too: the original error is what the client needs
        log.warning("audit record of a failed call not stored: %s", type(store_exc).__name__)


@bp.get("/openapi.json")
def openapi():
    """This service's OpenAPI 3.1 description (cds_service/protocol/openapi.json, shipped in the package),
    served as stored so what clients and the fuzz tests read is exactly the reviewed file."""
    from importlib.resources import files
    return files("cds_service.protocol").joinpath("openapi.json").read_bytes(), 200, {"Content-Type": "application/json"}
