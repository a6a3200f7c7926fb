"""The floor: the cheapest possible answer on the same stack.

Same Flask (whatever version the venv has), same route shape (``POST /cds-services/<service_id>``),
same JSON parsing (``json.loads(request.get_data())``), answering ``{"cards": []}``.  Whatever the
service costs above this is the service's own work; the ratio service/floor is the number the
performance issue asks about, and it is stable across machines where absolute milliseconds are not.

A second floor parses with orjson, as the service does (cds_service/protocol/routes.py): the service's
ratio to it is its own work with the parser's speed-up taken out, reported next to the first so
the faster parser cannot hide anything.
"""
from __future__ import annotations

import json

import orjson
from flask import Flask, request

PARSERS = {"json": json.loads, "orjson": orjson.loads}


def create_floor_app(parser: str = "json") -> Flask:
    """A minimal Flask app that parses the hook request and answers with no cards."""
    app = Flask("spine_cds_floor")
    loads = PARSERS[parser]

    @app.post("/cds-services/<service_id>")
    def call_service(service_id: str):
        body = loads(request.get_data())
        if not isinstance(body, dict):  # as cheap as it gets, but do look at the parsed body
            return {"error": "not an object"}, 400
        return {"cards": []}

    return app
