"""Parse and validate a CDS Hooks 2.0 order-select / order-sign request into a HookRequest.

Everything malformed becomes a 400 whose message names the field and what it should be, so an
EHR integrator can fix the call from the response alone.  Unknown fields and extensions are
ignored (CRD ``hook-23``); omitted optional elements are not errors (``conf-12``).
"""
from __future__ import annotations

from urllib.parse import urlsplit

from cds_service.errors import CdsBadRequest
from cds_service.model import FHIR_ID, HookRequest

HOOKS = ("order-select", "order-sign")
MAX_ORDER_DEPTH = 64  # FHIR resources nest a dozen levels; far deeper is an attack, and breaks copying
ORDER_TYPES = frozenset({"ServiceRequest", "MedicationRequest", "DeviceRequest", "NutritionOrder",
                         "VisionPrescription", "CommunicationRequest", "Procedure", "MedicationDispense"})


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise CdsBadRequest(message)


def _text(value: object, max_len: int = 4096) -> bool:
    """A non-blank string; never with NUL, which ids don't hold and PostgreSQL text cannot store."""
    return isinstance(value, str) and 0 < len(value.strip()) <= max_len and "\x00" not in value


def parse_hook_request(body: object, expected_hook: str) -> HookRequest:
    """Validate ``body`` as a call of ``expected_hook``; raise CdsBadRequest on any problem."""
    _require(isinstance(body, dict), "The request body must be a JSON object (a CDS Hooks request).")
    _require(body.get("hook") == expected_hook,
             f"'hook' must be {expected_hook!r} for this service (got {body.get('hook')!r}).")
    _require(_text(body.get("hookInstance"), 256), "'hookInstance' is required: a UUID string for this call.")
    context = body.get("context")
    _require(isinstance(context, dict), "'context' is required and must be an object.")
    _require(_text(context.get("patientId"), 256), "'context.patientId' is required: the FHIR id of the patient.")
    _require(FHIR_ID.fullmatch(context["patientId"]) is not None,
             "'context.patientId' must be a FHIR resource id: 1-64 letters, digits, '-' or '.', no spaces "
             "(the same id is queried and cached, so it is never trimmed or altered).")
    _require(context.get("userId") is None or _text(context.get("userId"), 512),
             "'context.userId' must be a string such as 'Practitioner/123'.")
    server, token = _fhir_access(body)
    orders = _draft_orders(context.get("draftOrders"))
    selections = _selections(context, orders, expected_hook)
    prefetch = body.get("prefetch")
    _require(prefetch is None or isinstance(prefetch, dict), "'prefetch' must be an object of key -> resource or null.")
    extension = body.get("extension")
    return HookRequest(
        hook=expected_hook, hook_instance=body["hookInstance"].strip(), context=context,
        patient_id=context["patientId"], user_id=context.get("userId"),
        draft_orders=tuple(orders), selections=tuple(selections), fhir_server=server, access_token=token,
        prefetch=dict(prefetch or {}), extension=extension if isinstance(extension, dict) else {})


def _has_host(url: str) -> bool:
    """True when ``url`` parses with a host (urlsplit raises on e.g. an unclosed '[' IPv6 literal)."""
    try:
        return bool(urlsplit(url).hostname)
    except ValueError:
        return False


def _depth_at_most(value: object, limit: int) -> bool:
    """True when JSON ``value`` nests at most ``limit`` levels (iterative: no recursion to overflow)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth >= limit:
                return False
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return True


def _fhir_access(body: dict) -> tuple[str | None, str | None]:
    server, auth = body.get("fhirServer"), body.get("fhirAuthorization")
    _require(server is None or (_text(server, 2048) and server.startswith(("http://", "https://")) and _has_host(server)),
             "'fhirServer' must be the base URL of the EHR's FHIR server (https://...).")
    if auth is None:
        return (server.rstrip("/") if server else None), None
    _require(isinstance(auth, dict), "'fhirAuthorization' must be an object with access_token and token_type.")
    _require(server is not None, "'fhirAuthorization' was sent without 'fhirServer': send both or neither.")
    _require(_text(auth.get("access_token"), 16384), "'fhirAuthorization.access_token' is required.")
    _require(str(auth.get("token_type", "Bearer")).lower() == "bearer", "'fhirAuthorization.token_type' must be 'Bearer'.")
    return server.rstrip("/"), auth["access_token"].strip()


def _draft_orders(bundle: object) -> list[dict]:
    _require(isinstance(bundle, dict) and bundle.get("resourceType") == "Bundle",
             "'context.draftOrders' is required and must be a FHIR Bundle of the draft orders.")
    entries = bundle.get("entry") or []
    _require(isinstance(entries, list), "'context.draftOrders.entry' must be a list.")
    orders = []
    for i, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        _require(isinstance(resource, dict) and isinstance(resource.get("resourceType"), str),
                 f"'context.draftOrders.entry[{i}].resource' must be a FHIR resource.")
        _require(_text(resource.get("id"), 256),
                 f"'context.draftOrders.entry[{i}].resource.id' is required so cards can refer to the order.")
        _require(_depth_at_most(resource, MAX_ORDER_DEPTH),
                 f"'context.draftOrders.entry[{i}].resource' nests deeper than {MAX_ORDER_DEPTH} levels; send the FHIR resource as is.")
        orders.append(resource)
    return orders


def _selections(context: dict, orders: list[dict], hook: str) -> list[str]:
    known = {f"{o['resourceType']}/{o['id']}" for o in orders}
    if hook == "order-sign":
        return sorted(known)
    selections = context.get("selections")
    _require(isinstance(selections, list) and all(isinstance(s, str) for s in selections),
             "'context.selections' is required for order-select: a list like ['ServiceRequest/123'].")
    unknown = [s for s in selections if s not in known]
    _require(not unknown, f"'context.selections' {unknown} are not in context.draftOrders.")
    return selections
