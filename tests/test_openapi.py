"""cds_service/protocol/openapi.json is valid OpenAPI 3.1, matches the Flask routes, and tells the truth.

Validity: the OpenAPI 3.1 meta-schema (the copy schemathesis ships and checks with), plus every
Schema Object against the JSON Schema 2020-12 meta-schema, which the OpenAPI one leaves unchecked.
Truth: real answers of the app (every sample request, every error status) validate against the
documented status codes, media types and schemas, and every documented response is produced at
least once here, so an undocumented status or a dead one fails this file.
"""
from __future__ import annotations

import json
import re
from importlib.resources import files
from pathlib import Path

import jsonschema_rs
import pytest
import schemathesis

from cds_service.cards.card import TOPICS
from cds_service.protocol.discovery import SERVICES
from cds_service.store.feedback import OUTCOMES
from cds_service.protocol.hook_request import HOOKS
from jwt_helpers import JwksServer

SAMPLES = Path(__file__).resolve().parent.parent / "cds_service" / "samples"
METHODS = {"get", "post", "put", "patch", "delete"}
SELECT = "/cds-services/spine-imaging-order-select"


@pytest.fixture(scope="module")
def document() -> dict:
    return json.loads(files("cds_service.protocol").joinpath("openapi.json").read_text())


def test_document_is_valid_openapi_3_1(document):
    assert document["openapi"].startswith("3.1.")
    schemathesis.openapi.from_dict(json.loads(json.dumps(document))).validate()  # raises with the JSON path


def test_every_schema_object_is_valid_json_schema_2020_12(document):
    for name, schema in document["components"]["schemas"].items():
        jsonschema_rs.meta.validate({"$schema": "https://json-schema.org/draft/2020-12/schema", **schema})
        _validator(document, f"#/components/schemas/{name}")  # every $ref in it resolves


def test_served_document_is_the_packaged_file(client, document):
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_json() == document


def _routes(app) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint != "static":
            path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
            routes |= {(path, method.lower()) for method in rule.methods if method.lower() in METHODS}
    return routes


def test_every_route_is_documented_and_every_documented_operation_exists(app, document):
    documented = {(path, method) for path, item in document["paths"].items() for method in item if method in METHODS}
    assert _routes(app) == documented


def test_enums_are_the_code_s(document):
    schemas = document["components"]["schemas"]
    assert set(document["components"]["parameters"]["ServiceId"]["schema"]["enum"]) == set(SERVICES)
    assert set(schemas["HookRequest"]["properties"]["hook"]["enum"]) == set(HOOKS)
    assert set(schemas["Decision"]["properties"]["outcome"]["enum"]) == set(TOPICS)
    assert tuple(schemas["FeedbackItem"]["properties"]["outcome"]["enum"]) == OUTCOMES


# --- real responses against the document ---------------------------------------------------------

def _validator(document: dict, ref: str) -> jsonschema_rs.Validator:
    return jsonschema_rs.Draft202012Validator({"$ref": ref, "components": document["components"]}, validate_formats=True)


class Checker:
    """Validates responses against the operation they answer and remembers which (operation,
    status) pairs were seen."""

    def __init__(self, document: dict):
        self.document, self.seen = document, set()

    def check(self, path: str, method: str, response) -> None:
        responses = self.document["paths"][path][method]["responses"]
        status = str(response.status_code)
        assert status in responses, f"{method.upper()} {path} answered an undocumented {status}: {response.data[:300]!r}"
        spec = responses[status]
        if "$ref" in spec:
            spec = self.document["components"]["responses"][spec["$ref"].rsplit("/", 1)[1]]
        media = spec["content"]
        assert response.mimetype in media, (path, status, response.mimetype, list(media))
        schema = media[response.mimetype]["schema"]
        if response.mimetype.endswith("json"):
            body = response.get_json(force=True)
            validator = jsonschema_rs.Draft202012Validator({**schema, "components": self.document["components"]},
                                                           validate_formats=True)
            errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(body)]
            assert not errors, (method, path, status, errors[:5])
        else:
            assert isinstance(response.get_data(as_text=True), str) and response.data
        self.seen.add((path, method, status))

    def documented(self) -> set[tuple[str, str, str]]:
        return {(path, method, status) for path, item in self.document["paths"].items()
                for method, op in item.items() if method in METHODS for status in op["responses"]}


def _samples() -> list[dict]:
    bodies = [json.loads(p.read_text()) for p in sorted(SAMPLES.glob("*.json"))]
    return [b for b in bodies if isinstance(b, dict) and b.get("hook") in HOOKS]


SPINE_SELECT = json.loads((SAMPLES / "radiculopathy-conservative-care-failed.json").read_text())


def _hook_calls(client, checker) -> list[str]:
    """Every sample through its service; returns the documentation cards' questionnaire links."""
    links = []
    for body in _samples():
        response = client.post(f"/cds-services/spine-imaging-{body['hook']}", json=body)
        checker.check("/cds-services/{service_id}", "post", response)
        assert response.status_code == 200
        links += [link["url"] for card in response.get_json()["cards"] for link in card.get("links", [])]
    return links


def _errors(client, checker) -> None:
    hook, feedback = "/cds-services/{service_id}", "/cds-services/{service_id}/feedback"
    checker.check(hook, "post", client.post(SELECT, data=b"{nope", content_type="application/json"))
    checker.check(hook, "post", client.post("/cds-services/nope", json=SPINE_SELECT))
    no_data = {**SPINE_SELECT, "prefetch": {}, "fhirServer": None}
    checker.check(hook, "post", client.post(SELECT, json=no_data))
    checker.check(feedback, "post", client.post(SELECT + "/feedback", json={"feedback": []}))
    checker.check(feedback, "post", client.post("/cds-services/nope/feedback", json={"feedback": []}))
    never_issued = {"feedback": [{"card": "never-issued", "outcome": "overridden",
                                  "outcomeTimestamp": "2026-11-22T10:00:00Z", "overrideReason": {"userComment": "x"}}]}
    checker.check(feedback, "post", client.post(SELECT + "/feedback", json=never_issued))
    as_text = json.dumps(SPINE_SELECT).encode()   # a browser's cross-origin "simple request": refused, never parsed
    checker.check(hook, "post", client.post(SELECT, data=as_text, content_type="text/plain"))
    checker.check(feedback, "post", client.post(SELECT + "/feedback", data=b'{"feedback": []}', content_type="text/plain"))
    checker.check("/questionnaires/{guideline_id}/{rule_id}", "get", client.get("/questionnaires/nope/nope"))
    from cds_service.protocol.arrival import ARRIVED   # a call that waited its whole deadline for a worker
    late = {ARRIVED: __import__("time").monotonic() - 60}
    checker.check(hook, "post", client.post(SELECT, json=SPINE_SELECT, environ_base=late))


def test_real_responses_match_the_document_and_every_documented_response_occurs(make_app, document):
    checker, client = Checker(document), make_app().test_client()
    links = _hook_calls(client, checker)
    assert links, "a sample should get a documentation card with a questionnaire link"
    checker.check("/questionnaires/{guideline_id}/{rule_id}", "get", client.get(links[0].split("localhost", 1)[1]))
    card = client.post(SELECT, json=SPINE_SELECT).get_json()["cards"][0]
    feedback = {"feedback": [{"card": card["uuid"], "outcome": "overridden",
                              "outcomeTimestamp": "2026-11-22T10:00:00Z", "overrideReason": {"userComment": "seen"}}]}
    checker.check("/cds-services/{service_id}/feedback", "post", client.post(SELECT + "/feedback", json=feedback))
    for path in ("/cds-services", "/health", "/report", "/metrics", "/openapi.json"):
        checker.check(path, "get", client.get(path))
    checker.check("/report", "get", client.get("/report", headers={"Accept": "application/json"}))
    checker.check("/questionnaires/{guideline_id}/{rule_id}", "get",
                  client.get(links[0].split("localhost", 1)[1], headers={"Accept": "text/html"}))
    full = make_app()   # a disk with no room left for a commit: /health says what every hook call would meet
    import cds_service.store.database as database
    original, database.MIN_FREE_BYTES = database.MIN_FREE_BYTES, 1 << 62
    try:
        checker.check("/health", "get", full.test_client().get("/health"))
    finally:
        database.MIN_FREE_BYTES = original
    _errors(client, checker)
    small = make_app(SPINE_CDS_MAX_REQUEST_BYTES="1000").test_client()
    checker.check("/cds-services/{service_id}", "post", small.post(SELECT, data=b" " * 5000, content_type="application/json"))
    checker.check("/cds-services/{service_id}/feedback", "post",
                  small.post(SELECT + "/feedback", data=b" " * 5000, content_type="application/json"))
    with JwksServer() as jwks:
        secured = make_app(SPINE_CDS_AUTH="on", SPINE_CDS_TRUSTED_ISSUERS=json.dumps({"https://ehr.test": jwks.url + "/jwks.json"}))
        for path, call in (("/cds-services/{service_id}", lambda c: c.post(SELECT, json=SPINE_SELECT)),
                           ("/cds-services/{service_id}/feedback", lambda c: c.post(SELECT + "/feedback", json=feedback)),
                           ("/report", lambda c: c.get("/report"))):
            checker.check(path, "post" if path != "/report" else "get", call(secured.test_client()))
        operator = make_app(SPINE_CDS_AUTH="on", SPINE_CDS_REPORT_TOKEN="t" * 32).test_client()
        checker.check("/report", "get", operator.get("/report?token=" + "t" * 32))
    assert checker.documented() - checker.seen == set()
