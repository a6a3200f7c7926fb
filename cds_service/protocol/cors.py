"""CORS for browser-based CDS clients (the public CDS Hooks sandbox, web EHRs).

Preflights are answered before authentication, and the headers go on every response —
errors included, or the browser hides the error body from the integrator.  Tokens travel in the
Authorization header, never cookies, so credentials are not allowed.
"""
from __future__ import annotations

from flask import Flask, request

ALLOWED_HEADERS = "Authorization, Content-Type, Accept"
ALLOWED_METHODS = "GET, POST, OPTIONS"


def init_cors(app: Flask, origins: tuple[str, ...]) -> None:
    """Register the preflight answer and the response headers on ``app``."""

    def allowed_origin() -> str | None:
        origin = request.headers.get("Origin")
        if "*" in origins:
            return "*"
        return origin if origin and origin.rstrip("/") in origins else None

    @app.before_request
    def _preflight():
        if request.method == "OPTIONS":
            return app.response_class(status=204)
        return None

    @app.after_request
    def _headers(response):
        origin = allowed_origin()
        if origin:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
            response.headers["Access-Control-Max-Age"] = "600"
            if origin != "*":
                response.headers["Vary"] = "Origin"
        return response
