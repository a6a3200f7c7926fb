"""Who may open ``GET /report`` when token verification is on, and how a browser gets in.

Why: the report is for an operator, who opens it in a browser, and a browser cannot make a CDS
client JWT.  So besides the client JWT the page accepts an operator token
(``SPINE_CDS_REPORT_TOKEN``):

* ``Authorization: Bearer <token>`` — for curl and scripts;
* ``/report?token=<token>`` once — the answer is a redirect to the bare ``/report`` that sets an
  ``HttpOnly``, ``SameSite=Strict`` cookie scoped to ``/report`` (``Secure`` behind https), so the
  token leaves the address bar, the history and any ``Referer`` at once.  The cookie holds an
  HMAC of the token, never the token itself.

Comparisons are constant-time (:func:`hmac.compare_digest`).  Nothing here logs the token: the
access line names the route template only (request_log.py), never the query string.  With
``SPINE_CDS_AUTH=off`` the page is open, as every other endpoint is.
"""
from __future__ import annotations

import hashlib
import hmac

from cds_service.errors import CdsError

COOKIE = "spine_cds_report"
COOKIE_MAX_AGE_S = 8 * 3600   # a working day; then the operator opens the link again
_NO_ACCESS = ("The report needs the operator token: send 'Authorization: Bearer <SPINE_CDS_REPORT_TOKEN>', or open "
              "/report?token=<SPINE_CDS_REPORT_TOKEN> once in a browser (or a CDS client JWT).")
_NO_TOKEN_SET = ("The report needs a CDS client JWT while SPINE_CDS_AUTH=on; to open it in a browser, set "
                 "SPINE_CDS_REPORT_TOKEN (at least 32 characters) and open /report?token=<that token> once.")


class ReportAccessDenied(CdsError):
    """401 with what to send; it never says which part of a given token was wrong."""

    status = 401
    code = "login"


def cookie_value(token: str) -> str:
    """What the browser keeps: an HMAC of the token, so a leaked cookie does not reveal it."""
    return hmac.new(token.encode(), b"spine-cds report cookie v1", hashlib.sha256).hexdigest()


def same(given: str | None, expected: str) -> bool:
    """Constant-time equality of two strings (False for a missing one)."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def bearer(authorization: str | None) -> str | None:
    scheme, _, value = (authorization or "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def operator_allowed(report_token: str, authorization: str | None, cookie: str | None) -> bool:
    """The operator token in the Authorization header, or the cookie a ``?token=`` visit set."""
    return bool(report_token) and (same(bearer(authorization), report_token)
                                   or same(cookie, cookie_value(report_token)))


def denied(report_token: str) -> ReportAccessDenied:
    return ReportAccessDenied(_NO_ACCESS if report_token else _NO_TOKEN_SET)
