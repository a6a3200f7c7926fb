"""The error hierarchy a client or an operator can cause, and the body they get.

Every error a client can cause is a :class:`CdsError` with an HTTP status and a message that
says what to do next.  The body is a FHIR OperationOutcome (CDS Hooks 3.0 asks for one on
non-2xx; 2.0 allows any body).  Authentication failures carry no detail, as the CDS Hooks
best-practices page asks.  ``protocol/error_handlers.py`` turns them into responses; anything unexpected
becomes a logged 500 there — never an empty card list.  Pure: every layer may raise these.
"""
from __future__ import annotations


class CdsError(Exception):
    """Base class: an error with an HTTP status and a client-facing message."""

    status = 500
    code = "exception"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})   # e.g. Retry-After on a 503
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code


class CdsBadRequest(CdsError):
    """The request is malformed or violates CDS Hooks (HTTP 400)."""

    status = 400
    code = "invalid"


AUTH_FAILED = (
    "Authentication failed. Send 'Authorization: Bearer <JWT>' signed (ES384 or RS384) with a key of an issuer "
    "this service trusts (SPINE_CDS_TRUSTED_ISSUERS), aud the URL of this endpoint as the operator configured it "
    "(SPINE_CDS_PUBLIC_BASE_URL, else the address the server listens on, not the Host you send), a current iat "
    "and exp and a jti never used before; the service's log says which check failed.")
"""The same text for every authentication failure, so it reveals nothing about why (the reason is logged)."""


class CdsAuthError(CdsError):
    """The CDS client could not be authenticated (HTTP 401, no detail to the caller)."""

    status = 401
    code = "login"

    def __init__(self, reason: str):
        super().__init__(AUTH_FAILED)
        self.reason = reason  # for the log only; never sent to the caller


class CdsNotFound(CdsError):
    """Unknown service id or path (HTTP 404)."""

    status = 404
    code = "not-found"


class CdsPreconditionFailed(CdsError):
    """Required data is neither in prefetch nor obtainable from the FHIR server (HTTP 412)."""

    status = 412
    code = "incomplete"


class CdsConfigError(CdsError):
    """A setting or a mapping file is invalid; raised at start-up."""

    code = "exception"
    label = "configuration error"   # how the spine-cds command introduces the message


class CdsNoSpace(CdsConfigError):
    """The disk where the store lives is full, found at start: not a configuration mistake, so the
    command says "cannot start" rather than "configuration error"."""

    label = "cannot start"


class FhirUnavailable(CdsError):
    """The EHR's FHIR server could not be read (down, slow, refused, or answered an error)."""

    status = 502
    code = "transient"


def operation_outcome(status: int, code: str, message: str) -> dict:
    """A FHIR R4 OperationOutcome carrying one issue."""
    severity = "error" if status < 500 else "fatal"
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": message}],
    }
