"""The HTTP contract end to end through Flask's test client, with real ES384 tokens.

A throwaway P-384 key signs every call; its JWKS is served to the app from a local server, as
the trusted issuer's allowlisted URL.  These tests pin CDS Hooks 2.0 behaviour (discovery,
CORS, errors, cards) and the decision contract external checks depend on.
"""
from __future__ import annotations

import copy
import json
import time
import uuid
from pathlib import Path

import jwt
import pytest
from cds_service.errors import AUTH_FAILED

from contract import assert_card_contract, assert_coverage_information, assert_no_empty_values
from jwt_helpers import JwksServer, public_jwk

FIXTURES = Path(__file__).parent / "fixtures" / "hook_requests"
ISSUER = "https://ehr.example.org"
SELECT = "/cds-services/spine-imaging-order-select"
SIGN = "/cds-services/spine-imaging-order-sign"


@pytest.fixture
def secured(make_app, jwks):
    app = make_app(SPINE_CDS_AUTH="on", SPINE_CDS_TRUSTED_ISSUERS=json.dumps({ISSUER: jwks.url + "/jwks.json"}))
    return app.test_client()


@pytest.fixture
def token(key):
    def sign(path: str, **claims) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": f"http://localhost{path}", "exp": now + 300, "iat": now,
                   "jti": str(uuid.uuid4()), **claims}
        return jwt.encode(payload, key, algorithm="ES384", headers={"kid": "k1", "typ": "JWT"})
    return sign


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def post(client, token, path, body):
    return client.post(path, json=body, headers={"Authorization": f"Bearer {token(path)}"})


def test_discovery_lists_both_hooks_with_2_0_prefetch_tokens(client):
    response = client.get("/cds-services")
    assert response.status_code == 200
    services = response.get_json()["services"]
    assert sorted(s["hook"] for s in services) == ["order-select", "order-sign"]
    assert_no_empty_values(response.get_json())
    for service in services:
        assert service["id"] and service["title"] and service["description"]
        assert service["extension"]["davinci-crd.version"] == ["2.2"]
        for template in service["prefetch"].values():
            tokens = {t.split("}}")[0] for t in template.split("{{")[1:]}
            assert tokens <= {"context.patientId", "userPractitionerRoleId"}, template   # both CDS Hooks 2.0 tokens
        assert {"patient", "coverage", "conditions", "observations", "procedures", "imagingStudies",
                "medicationRequests", "diagnosticReports", "serviceRequests"} <= service["prefetch"].keys()
        assert "_include=Coverage:payor" in service["prefetch"]["coverage"]


@pytest.mark.parametrize("path", ["/cds-services", SELECT, SELECT + "/feedback"])
def test_cors_preflight_needs_no_token(secured, path):
    response = secured.options(path, headers={"Origin": "https://sandbox.cds-hooks.org",
                                              "Access-Control-Request-Method": "POST",
                                              "Access-Control-Request-Headers": "authorization,content-type"})
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert {"Authorization", "Content-Type"} <= {h.strip() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


def test_missing_token_is_401_without_detail_and_with_cors(secured):
    response = secured.post(SELECT, json=load("order-select-lumbar-mri.json"), headers={"Origin": "https://sandbox.cds-hooks.org"})
    assert response.status_code == 401
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.get_json()["issue"][0]["diagnostics"] == AUTH_FAILED


def test_token_for_another_endpoint_is_refused(secured, token):
    response = secured.post(SELECT, json=load("order-select-lumbar-mri.json"),
                            headers={"Authorization": f"Bearer {token('/cds-services')}"})
    assert response.status_code == 401


def test_replayed_token_is_refused(secured, token):
    body, bearer = load("order-select-lumbar-mri.json"), token(SELECT)
    assert secured.post(SELECT, json=body, headers={"Authorization": f"Bearer {bearer}"}).status_code == 200
    assert secured.post(SELECT, json=body, headers={"Authorization": f"Bearer {bearer}"}).status_code == 401


def test_unknown_service_is_404_json(client):
    response = client.post("/cds-services/nope", json={})
    assert response.status_code == 404 and response.get_json()["resourceType"] == "OperationOutcome"


def _mutations():
    def drop(path):
        def apply(body):
            target = body
            for part in path[:-1]:
                target = target[part]
            del target[path[-1]]
        return apply

    def setter(path, value):
        def apply(body):
            target = body
            for part in path[:-1]:
                target = target[part]
            target[path[-1]] = value
        return apply

    return {
        "no hookInstance": (drop(["hookInstance"]), "hookInstance"),
        "no context": (drop(["context"]), "context"),
        "wrong hook": (setter(["hook"], "patient-view"), "hook"),
        "no patientId": (drop(["context", "patientId"]), "patientId"),
        "no draftOrders": (drop(["context", "draftOrders"]), "draftOrders"),
        "selection not in draftOrders": (setter(["context", "selections"], ["ServiceRequest/other"]), "selections"),
        "selections not a list": (setter(["context", "selections"], "ServiceRequest/sr-mri"), "selections"),
        "token without server": (lambda b: (b.pop("fhirServer"), b.update(fhirAuthorization={"access_token": "x", "token_type": "Bearer"})), "fhirServer"),
        "prefetch not an object": (setter(["prefetch"], []), "prefetch"),
        "order without id": (lambda b: b["context"]["draftOrders"]["entry"][0]["resource"].pop("id"), "id"),
        "entry without resource": (setter(["context", "draftOrders", "entry"], [{"fullUrl": "x"}]), "resource"),
    }


@pytest.mark.parametrize("name", sorted(_mutations()))
def test_invalid_request_is_400_naming_the_field(client, name):
    mutate, field = _mutations()[name]
    body = load("order-select-lumbar-mri.json")
    mutate(body)
    response = client.post(SELECT, json=body)
    assert response.status_code == 400, response.get_json()
    assert field in response.get_json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"null", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000])
def test_malformed_bodies_are_400(client, raw):
    response = client.post(SELECT, data=raw, content_type="application/json")
    assert response.status_code == 400 and response.get_json()["resourceType"] == "OperationOutcome"


def test_body_over_the_limit_is_413(make_app):
    client = make_app(SPINE_CDS_MAX_REQUEST_BYTES="1000").test_client()
    response = client.post(SELECT, data=b" " * 5000, content_type="application/json")
    assert response.status_code == 413 and response.get_json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("size,status", [(5000, 413), (900, 400)])
def test_a_chunked_body_without_content_length_is_held_to_the_limit_too(make_app, size, status):
    """routes._raw_body reads a body with a Content-Length in one call; one without (chunked)
    goes through werkzeug's limited stream, so the limit holds either way."""
    import io

    from werkzeug.test import EnvironBuilder
    client = make_app(SPINE_CDS_MAX_REQUEST_BYTES="1000").test_client()
    environ = EnvironBuilder(path=SELECT, method="POST", input_stream=io.BytesIO(b"[" + b" " * (size - 2) + b"]"),
                             content_type="application/json", environ_overrides={"wsgi.input_terminated": True}).get_environ()
    del environ["CONTENT_LENGTH"]
    response = client.open(environ)
    assert response.status_code == status and response.get_json()["resourceType"] == "OperationOutcome"


def test_one_decision_card_per_selected_spine_order(secured, token):
    response = post(secured, token, SELECT, load("order-select-lumbar-mri.json"))
    assert response.status_code == 200
    [card] = response.get_json()["cards"]
    decision = assert_card_contract(card)
    assert decision["order"] == "ServiceRequest/sr-mri"
    assert (decision["program"], decision["guideline"], decision["routedBy"]) == ("nia", "nia-lumbar-spine-mri", "payer")
    assert card["source"]["label"] == "Example Health Plan (NIA)"   # CRD: the insurer the patient knows
    assert "National Imaging Associates (NIA)" in card["detail"]     # the benefit manager, in the detail


def test_order_sign_annotates_each_decided_order_with_coverage_information(secured, token):
    body = load("order-select-lumbar-mri.json")
    body["hook"] = "order-sign"
    del body["context"]["selections"]
    response = post(secured, token, SIGN, body).get_json()
    [card] = response["cards"]
    decision = assert_card_contract(card)
    [action] = response["systemActions"]
    assert action["type"] == "update" and action["resource"]["id"] == "sr-mri"
    parts = assert_coverage_information(action["resource"], "order-sign")
    assert parts["coverage"] == [{"reference": "Coverage/cov1"}]
    if decision["outcome"] == "approve":
        assert parts["pa-needed"] == ["satisfied"] and parts["satisfied-pa-id"]
    else:
        assert parts["doc-needed"] == ["clinical"]
    draft = body["context"]["draftOrders"]["entry"][0]["resource"]
    assert {k: v for k, v in action["resource"].items() if k != "extension"} == draft  # only the extension differs


def test_order_select_never_asks_for_clinical_documentation_in_coverage_information(client):
    body = load("order-select-lumbar-mri.json")
    body["prefetch"]["procedures"] = None  # no conservative care: documentation outcome
    response = client.post(SELECT, json=body).get_json()
    assert response["cards"][0]["extension"]["spine-cds.decision"]["outcome"] == "documentation"
    for action in response["systemActions"]:
        assert_coverage_information(action["resource"], "order-select")


def test_configuration_options_are_honoured(client):
    body = load("order-select-lumbar-mri.json")
    body["extension"] = {"davinci-crd.configuration": {"coverage-info": False, "max-cards": 0, "unknown": 1}}
    response = client.post(SELECT, json=body).get_json()
    assert response == {"cards": []}


def test_orders_that_are_not_spine_ct_or_mri_get_no_card(client):
    body = load("order-select-lumbar-mri.json")
    body["context"]["selections"] = ["MedicationRequest/mr-draft"]
    assert client.post(SELECT, json=body).get_json() == {"cards": []}


def test_sandbox_on_load_call_with_empty_coding_gets_no_card(client):
    body = load("sandbox-pama-order-select.json")
    order = body["context"]["draftOrders"]["entry"][0]["resource"]
    order["code"], order["reasonCode"] = {"coding": [{}]}, []
    assert client.post(SELECT, json=body).get_json() == {"cards": []}


def test_sandbox_call_without_coverage_uses_the_default_program_and_says_so(client):
    response = client.post(SELECT, json=load("sandbox-pama-order-select.json")).get_json()
    [card] = response["cards"]
    decision = assert_card_contract(card)
    assert (decision["program"], decision["routedBy"]) == ("nia", "default")
    assert "default program" in card["detail"] and "no Coverage" in card["detail"]
    assert "systemActions" not in response  # no Coverage: no CRD coverage-information


@pytest.mark.parametrize("cpt,payer", [("72146", "nia"), ("72141", "healthhelp"), ("72131", "cohere")])
def test_study_without_an_encoded_guideline_is_no_policy(client, cpt, payer):
    body = load("order-select-lumbar-mri.json")
    body["context"]["draftOrders"]["entry"][0]["resource"]["code"]["coding"][0]["code"] = cpt
    body["prefetch"]["coverage"]["entry"][1]["resource"]["identifier"][0]["value"] = payer
    [card] = client.post(SELECT, json=body).get_json()["cards"]
    decision = assert_card_contract(card)
    assert (decision["outcome"], decision["program"], decision["indication"]) == ("no-policy", payer, None)


def test_missing_required_prefetch_without_fhir_server_is_412(client):
    body = load("order-select-lumbar-mri.json")
    del body["fhirServer"], body["prefetch"]["conditions"]
    response = client.post(SELECT, json=body)
    assert response.status_code == 412 and "conditions" in response.get_json()["issue"][0]["diagnostics"]


def test_feedback_round_trip_is_idempotent(secured, token):
    path = SELECT + "/feedback"
    card = post(secured, token, SELECT, load("order-select-lumbar-mri.json")).get_json()["cards"][0]
    item = {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-22T10:00:00Z",
            "overrideReason": {"reason": {"system": "https://spine-cds.example.org/fhir/CodeSystem/override-reason",
                                          "code": "clinical-judgment"}, "userComment": "urgent"}}
    first = post(secured, token, path, {"feedback": [item]})
    second = post(secured, token, path, {"feedback": [copy.deepcopy(item)]})
    assert first.status_code == second.status_code == 200
    assert (first.get_json()["stored"], second.get_json()["stored"]) == (1, 0)


def test_feedback_for_a_card_never_issued_to_the_caller_is_refused(make_app, jwks, key, token):
    """#14 finding 11: any client could store feedback for made-up card uuids (or another client's
    cards) and skew /report.  Feedback is taken only for cards issued to the caller's issuer."""
    other = "https://other-ehr.example.org"
    app = make_app(SPINE_CDS_AUTH="on", SPINE_CDS_TRUSTED_ISSUERS=json.dumps({ISSUER: jwks.url + "/jwks.json",
                                                                              other: jwks.url + "/jwks.json"}))
    client, path = app.test_client(), SELECT + "/feedback"
    card = post(client, token, SELECT, load("order-select-lumbar-mri.json")).get_json()["cards"][0]
    item = {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-22T10:00:00Z",
            "overrideReason": {"userComment": "seen"}}
    made_up = post(client, token, path, {"feedback": [item | {"card": str(uuid.uuid4())}]})
    assert made_up.status_code == 422 and "is not a card this service" in made_up.get_json()["issue"][0]["diagnostics"]
    foreign = client.post(path, json={"feedback": [item]},
                          headers={"Authorization": f"Bearer {token(path, iss=other)}"})
    assert foreign.status_code == 422
    other_service = post(client, token, "/cds-services/spine-imaging-order-sign/feedback", {"feedback": [item]})
    assert other_service.status_code == 422
    assert app.extensions["spine_cds"].store.count_feedback() == 0
    assert post(client, token, path, {"feedback": [item]}).get_json() == {"received": 1, "stored": 1}


def test_an_accepted_suggestion_the_card_did_not_offer_is_refused(secured, token):
    """The report counts which suggestion clinicians take: only the card's own suggestions count."""
    body = json.loads((Path(__file__).parents[1] / "cds_service" / "samples" / "pacemaker-mri-contraindicated.json").read_text())
    card = next(c for c in post(secured, token, SELECT, body).get_json()["cards"] if c.get("suggestions"))  # CT instead
    path, offered = SELECT + "/feedback", card["suggestions"][0]["uuid"]
    item = {"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-11-22T10:00:00Z"}
    made_up = post(secured, token, path, {"feedback": [item | {"acceptedSuggestions": [{"id": str(uuid.uuid4())}]}]})
    assert made_up.status_code == 422 and "did not offer" in made_up.get_json()["issue"][0]["diagnostics"]
    taken = post(secured, token, path, {"feedback": [item | {"acceptedSuggestions": [{"id": offered}]}]})
    assert taken.get_json() == {"received": 1, "stored": 1}


def test_invalid_feedback_is_400(secured, token):
    response = post(secured, token, SELECT + "/feedback", {"feedback": [{"card": "x", "outcome": "maybe"}]})
    assert response.status_code == 400 and "outcome" in response.get_json()["issue"][0]["diagnostics"]


def test_health(client):
    assert client.get("/health").get_json()["status"] == "ok"


SANDBOX_ISS, SANDBOX_KID = "https://sandbox.cds-hooks.org", "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"


@pytest.fixture
def sandbox_client(make_app, key):
    """The service trusting the sandbox issuer, whose JWKS a local server stands in for."""
    with JwksServer() as server:
        server.jwks = {"keys": [public_jwk(key, SANDBOX_KID, "ES384")]}
        jwks_url = server.url + "/.well-known/jwks.json"
        app = make_app(SPINE_CDS_AUTH="on", SPINE_CDS_TRUSTED_ISSUERS=json.dumps({SANDBOX_ISS: jwks_url}))
        yield app.test_client(), jwks_url


def _sandbox_token(key, jwks_url: str, path: str) -> str:
    """Signed the way the CDS Hooks sandbox signs: ES384, its kid and jku, iat slightly ahead, exp = iat + 300."""
    iat = int(time.time()) + 1
    claims = {"iss": SANDBOX_ISS, "aud": f"http://localhost{path}", "iat": iat, "exp": iat + 300, "jti": str(uuid.uuid4())}
    return jwt.encode(claims, key, algorithm="ES384", headers={"kid": SANDBOX_KID, "jku": jwks_url, "typ": "JWT"})


def test_a_call_shaped_like_the_cds_hooks_sandbox_is_answered(sandbox_client, key):
    client, jwks_url = sandbox_client
    body = load("sandbox-pama-order-select.json")
    response = client.post(SELECT, json=body, headers={"Authorization": f"Bearer {_sandbox_token(key, jwks_url, SELECT)}",
                                                       "Origin": "https://sandbox.cds-hooks.org"})
    assert response.status_code == 200 and response.headers["Access-Control-Allow-Origin"] == "*"
    [card] = response.get_json()["cards"]
    decision = assert_card_contract(card)
    assert (decision["program"], decision["routedBy"], decision["outcome"]) == ("nia", "default", "documentation")
    feedback = {"feedback": [{"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-22T10:00:00Z"}]}
    path = SELECT + "/feedback"
    answer = client.post(path, json={"feedback": [{**feedback["feedback"][0], "overrideReason": {"userComment": "seen"}}]},
                         headers={"Authorization": f"Bearer {_sandbox_token(key, jwks_url, path)}"})
    assert answer.status_code == 200 and answer.get_json()["stored"] == 1


def test_no_coverage_is_asserted_for_a_payer_that_was_never_identified(secured, token):
    """#14 finding 15: the default program still decides the order, but CRD coverage-information
    must not say covered/satisfied for a payer we could not identify; the card says why."""
    body = load("order-select-lumbar-mri.json")
    body["hook"] = "order-sign"
    del body["context"]["selections"]
    body["prefetch"]["coverage"]["entry"] = body["prefetch"]["coverage"]["entry"][:1]   # the Organization never came
    response = post(secured, token, SIGN, body).get_json()
    [card] = response["cards"]
    assert card["extension"]["spine-cds.decision"]["routedBy"] == "default" and "default program" in card["detail"]
    [action] = response["systemActions"]
    parts = assert_coverage_information(action["resource"], "order-sign")
    assert parts["covered"] == ["indeterminate"] and "pa-needed" not in parts and "satisfied-pa-id" not in parts
