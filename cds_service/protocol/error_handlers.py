"""The one place that turns errors into JSON responses (FHIR OperationOutcome bodies).

Every :class:`~cds_service.errors.CdsError` keeps its status and message; a werkzeug HTTP error
(404, 405, 413 …) keeps its status and headers; anything unexpected becomes a logged 500 — never
an empty card list.  Authentication failures are logged with their reason and answered without it.
"""
from __future__ import annotations

import logging

from werkzeug.exceptions import HTTPException

from cds_service.errors import CdsAuthError, CdsError, operation_outcome

log = logging.getLogger(__name__)


def register_error_handlers(app) -> None:
    """Shape every error the app can raise as an OperationOutcome JSON response."""

    @app.errorhandler(CdsError)
    def _cds_error(exc: CdsError):
        if isinstance(exc, CdsAuthError):
            log.warning("authentication failed: %s", exc.reason)
        return operation_outcome(exc.status, exc.code, exc.message), exc.status, exc.headers

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        message = exc.description or exc.name
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]  # e.g. Allow on 405 (RFC 9110)
        return operation_outcome(exc.code or 500, "processing", message), exc.code or 500, headers

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unexpected error while handling a request")
        message = "Internal error; the request was logged by its hookInstance. Retry, or report it to the service operator."
        return operation_outcome(500, "exception", message), 500
