"""Prometheus metrics, served at ``GET /metrics`` in the Prometheus text format.

What is counted: HTTP requests and their latency per endpoint, one decision per decided spine
order by hook, program, guideline and outcome, where each prefetch key's data came from
(prefetch | fhir | cache | partial | failed | null), and feedback items by outcome.

Labels are bounded: route templates (never the raw path, which a client chooses), a fixed set
of methods, status codes, ids from mappings/ and validated enumerations — never patient data,
tokens or free text.  /metrics carries no PHI and needs no JWT; operators should still keep it
off the public internet (scrape it from the internal network, block it at the proxy).

Why a registry per app: the test suite (and ``spine-cds evaluate``) creates many apps in one
process; metrics registered on prometheus_client's global registry would collide on their
names, and each app's counts would leak into the next.  Each app owns a CollectorRegistry.

Why multiprocess mode: gunicorn runs several worker processes and a scrape reaches one of them.
With ``PROMETHEUS_MULTIPROC_DIR`` set (server.py and docker/gunicorn.conf.py set it before any
worker imports prometheus_client), every worker writes its values to files there and /metrics
merges the files of all workers, dead ones included, so counters never go backwards.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from flask import Flask, current_app
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

from cds_service.errors import CdsConfigError
from cds_service.protocol.request_log import elapsed_s, request_method, route_template

EXTENSION = "spine_cds.metrics"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# What generate_latest writes: the classic text format every Prometheus version scrapes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Hook calls must answer within the EHR's few seconds; the FHIR deadline is ~2.8 s, so the
# buckets are fine between 0.5 s and 3 s and coarse beyond (a call that slow has failed anyway).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 10.0)


class Metrics:
    """One app's metrics; ``multiprocess_dir`` set means: expose the merged files of all workers."""

    def __init__(self, multiprocess_dir: str | None = None):
        self.multiprocess_dir = multiprocess_dir
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("spine_cds_http_requests", "HTTP requests by route template, method and status.",
                                ["endpoint", "method", "status"], registry=registry)
        self.latency = Histogram("spine_cds_http_request_duration_seconds",
                                 "Time to answer an HTTP request, by route template and method.",
                                 ["endpoint", "method"], buckets=LATENCY_BUCKETS, registry=registry)
        self.decisions = Counter("spine_cds_decisions", "Decided spine orders (one per order, shown or not) "
                                 "by hook, program, guideline ('none' when no guideline covers it) and outcome.",
                                 ["hook", "program", "guideline", "outcome"], registry=registry)
        self.sources = Counter("spine_cds_record_sources", "Prefetch keys of gathered patient records by where "
                               "their data came from: prefetch, fhir, cache, partial, failed, null.",
                               ["key", "source"], registry=registry)
        self.feedback = Counter("spine_cds_feedback_items", "Feedback items received by service and outcome "
                                "(an item sent again counts again).", ["service", "outcome"], registry=registry)

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint, method).observe(seconds)

    def record_decisions(self, hook: str, sources: Mapping[str, str], decisions: Iterable) -> None:
        """Count one hook call's record sources and decisions (``hooks.respond``'s Decision values)."""
        for key, source in sources.items():
            self.sources.labels(key, source).inc()
        for d in decisions:
            self.decisions.labels(hook, d.route.program.id, d.guideline.id if d.guideline else "none", d.outcome).inc()

    def record_feedback(self, service: str, items: Iterable) -> None:
        for item in items:
            self.feedback.labels(service, item.outcome).inc()

    def exposition(self) -> bytes:
        """The Prometheus text format: this app's registry, or every worker's files merged."""
        if self.multiprocess_dir:
            merged = CollectorRegistry()
            MultiProcessCollector(merged, path=self.multiprocess_dir)
            return generate_latest(merged)
        return generate_latest(self.registry)


def init_metrics(app: Flask) -> Metrics:
    """Give ``app`` its metrics, count every response, and serve ``GET /metrics`` (no JWT)."""
    metrics = Metrics(multiprocess_dir())
    app.extensions[EXTENSION] = metrics

    @app.after_request
    def _observe(response):
        metrics.observe_request(route_template(), request_method(), response.status_code, elapsed_s())
        return response

    app.add_url_rule("/metrics", "metrics", _serve_metrics, methods=["GET"])
    return metrics


def metrics_of(app: Flask) -> Metrics:
    return app.extensions[EXTENSION]


def multiprocess_dir() -> str | None:
    """The folder of multiprocess mode, or None; refuses a half-configured process.

    prometheus_client picks its value store when it is first imported: the variable set after
    that would leave every worker counting alone while /metrics claimed to merge them.
    """
    path = os.environ.get(MULTIPROC_ENV) or None
    multiprocess = bool(getattr(values.ValueClass, "_multiprocess", False))
    if path and not multiprocess:
        raise CdsConfigError(f"{MULTIPROC_ENV} was set after prometheus_client was imported, so metrics would "
                             "not be merged across workers. Set it in the environment before the process starts "
                             "(spine-cds serve and docker/gunicorn.conf.py do this for you), or unset it.")
    if multiprocess and not path:
        raise CdsConfigError(f"{MULTIPROC_ENV} was unset after prometheus_client was imported in multiprocess "
                             "mode; keep it set for the life of the process.")
    if path and not os.path.isdir(path):
        raise CdsConfigError(f"{MULTIPROC_ENV}={path!r} is not a folder; create it (empty) before starting, "
                             "or unset it to count in this process only.")
    return path


def _serve_metrics():
    body = metrics_of(current_app).exposition()
    return body, 200, {"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"}

