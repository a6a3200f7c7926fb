"""spine-cds: a CDS Hooks service deciding spine CT/MRI orders against payer imaging guidelines."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
from flask import Flask

from cds_service.protocol.auth import ClientAuthenticator
from cds_service.protocol.cors import init_cors
from cds_service.protocol.error_handlers import register_error_handlers
from cds_service.protocol.request_log import init_request_logging
from cds_service.runtime.logs import configure_logging
from cds_service.record.patient_record import RecordGatherer
from cds_service.engine.registry import Registry, load_registry
from cds_service.store.repeats import ShownDecisions
from cds_service.runtime.settings import Settings, load_settings
from cds_service.runtime.shared_cache import SharedCache, open_shared_cache
from cds_service.record.cache import make_cache
from cds_service.store.database import Store

log = logging.getLogger("cds_service")


@dataclass(frozen=True)
class AppState:
    """Long-lived, per-app objects: built once in :func:`create_app`, never mutated per request."""

    settings: Settings
    registry: Registry
    authenticator: ClientAuthenticator
    gatherer: RecordGatherer
    store: Store
    session: requests.Session
    shown: ShownDecisions
    shared_cache: SharedCache
    """JSON by key with a TTL, shared by every worker of the host (runtime/shared_cache.py)."""


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Create and configure the Flask application.

    :param config: setting names (``SPINE_CDS_*``) to values; ``None`` reads the environment.
    """
    settings = load_settings(config)
    configure_logging(settings)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    session = requests.Session()
    registry = load_registry(settings.mappings_dir, settings.valuesets_dir, settings.default_program)
    store = Store(settings.database_file)  # one connection per worker, shared with the repeat check
    shared_cache = open_shared_cache(settings)
    app.extensions["spine_cds"] = AppState(
        settings=settings, registry=registry,
        authenticator=ClientAuthenticator(settings, session=session, claim=store.claim_token),
        gatherer=RecordGatherer(settings, session, cache=make_cache(settings, shared_cache)), store=store,
        session=session, shown=ShownDecisions(store, settings.repeat_window_s), shared_cache=shared_cache)
    if not settings.auth:
        log.warning("SPINE_CDS_AUTH=off: CDS client JWTs are NOT verified. Use only for local development.")
    register_error_handlers(app)
    init_request_logging(app)  # before CORS: its preflight answer skips later before_request hooks
    from cds_service.protocol.metrics import init_metrics  # not at the top: prometheus_client must be imported after
    init_metrics(app)                  # server.py sets PROMETHEUS_MULTIPROC_DIR (metrics.py)
    init_cors(app, settings.cors_origins)
    from cds_service.protocol.routes import bp
    app.register_blueprint(bp)
    return app


def close_app(app: Flask) -> None:
    """Release the app's connections and threads (tests, graceful shutdown)."""
    state: AppState = app.extensions["spine_cds"]
    state.gatherer.close()
    state.store.close()
    state.shown.close()
    state.shared_cache.close()
    state.session.close()
