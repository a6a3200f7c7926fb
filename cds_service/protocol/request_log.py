"""Request ids and access lines for every HTTP request (the Flask side of ``runtime/logs.py``).

Each request gets a random id (or its hookInstance, when that is safe to echo), the
``X-Request-Id`` response header and one access line with the route *template* — never the raw
path or query string, which could carry patient ids.  The id lives in a context variable that
the formatters read, so every log line of a call carries it.
"""
from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, g, has_request_context, request

from cds_service.protocol.discovery import SERVICES
from cds_service.runtime.logs import current_request_id

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
QUIET_ROUTES = frozenset({"/health", "/metrics"})   # probes and scrapes: access lines at DEBUG
# hookInstance becomes the request id only when it is safe in a header and a log line.
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_KNOWN_SERVICES = frozenset(SERVICES)

access_log = logging.getLogger("cds_service.access")


def init_request_logging(app: Flask) -> None:
    """Request id and access line for every request.  Register before any ``before_request`` hook
    that may answer early (the CORS preflight), so the clock and the id are always set."""
    app.before_request(_start_request)
    app.after_request(_finish_request)
    app.teardown_request(_end_request)


def bind_request_id(hook_instance: str) -> None:
    """Use the call's hookInstance as its request id (when it is safe to echo in a header)."""
    if has_request_context() and _SAFE_ID.fullmatch(hook_instance):
        g.spine_cds_request_id = hook_instance
        current_request_id.set(hook_instance)


def request_id() -> str | None:
    return g.get("spine_cds_request_id") if has_request_context() else None


def elapsed_s() -> float:
    """Seconds since the request started (0 when the start was not recorded)."""
    started = g.get("spine_cds_started")
    return time.perf_counter() - started if started is not None else 0.0


def route_template() -> str:
    """The matched route's template (``/cds-services/<service_id>``), never the raw path."""
    return request.url_rule.rule if request.url_rule is not None else "unmatched"


def request_method() -> str:
    """The HTTP method, or ``OTHER`` for a made-up one (a client chooses it: keep it bounded)."""
    return request.method if request.method in METHODS else "OTHER"


def _start_request() -> None:
    g.spine_cds_started = time.perf_counter()
    g.spine_cds_request_id = uuid.uuid4().hex
    current_request_id.set(g.spine_cds_request_id)


def _finish_request(response):
    rid = request_id()
    if rid:
        response.headers["X-Request-Id"] = rid
    route, method, status = route_template(), request_method(), response.status_code
    latency_ms = round(elapsed_s() * 1000, 1)
    fields = {"method": method, "route": route, "status": status, "latency_ms": latency_ms}
    service = (request.view_args or {}).get("service_id")
    if service in _KNOWN_SERVICES:
        fields["service"] = service
    access_log.log(logging.DEBUG if route in QUIET_ROUTES else logging.INFO,
                   "%s %s %d %.0f ms", method, route, status, latency_ms, extra=fields)
    return response


def _end_request(_exc=None) -> None:
    """Lines logged after the request (by another request of this thread) carry no stale id."""
    current_request_id.set(None)
