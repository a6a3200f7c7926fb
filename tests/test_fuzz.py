"""Fuzzing every endpoint of cds_service/protocol/openapi.json in-process: ≥ 10,000 generated requests, no 5xx.

Four kinds of generated requests, all seeded (``derandomize``) so CI replays the same ones:

* schemathesis' coverage phase: boundary values, missing and wrong-typed members, undeclared
  methods, for every documented operation (auth off, then auth on);
* schemathesis' hypothesis strategies, positive and negative, for every operation; hook calls are
  also re-sent with ``hook`` matching the service, so more of them get past the first 400;
* near-valid requests (near_valid.py): real samples with a few random mutations each, most on
  small records, some on a record of a few hundred resources, and a valid feedback body;
* random and JWT-shaped garbage in ``Authorization`` with auth on.

Every response must be below 500; errors must be a JSON OperationOutcome whose diagnostics say
something; schemathesis also checks status codes, content types and bodies against the document,
and near-valid answers are validated against the documented response schemas.  Each test counts
the requests it sent and asserts its quota, and the quotas must add up to 10,000, so the claim
cannot silently shrink.  The apps keep their store in SQLite ``:memory:`` (same SQL, no fsync per
call) and log at WARNING, to fit the volume in about half a minute.
"""
from __future__ import annotations

import json
import socket
import time

import jsonschema_rs
import pytest
import schemathesis
from cds_service.errors import AUTH_FAILED
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (content_type_conformance, not_a_server_error, response_headers_conformance,
                                 response_schema_conformance, status_code_conformance, unsupported_method)


from cds_service.protocol.report_access import denied
from near_valid import FEEDBACK, LARGE, SERVICE_OF_HOOK, SMALL, mutation_runs

QUOTA = {"coverage": 800, "schemathesis": 280, "near_valid_small": 4_650, "near_valid_large": 140, "near_valid_feedback": 1_650,
         "auth": 2_500}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance, unsupported_method]
EXAMPLES = {"POST /cds-services/{service_id}": 55, "POST /cds-services/{service_id}/feedback": 20,
            "GET /questionnaires/{guideline_id}/{rule_id}": 40}
ISSUER = "https://ehr.example.org"
PROTECTED = ("/cds-services/spine-imaging-order-select", "/cds-services/spine-imaging-order-select/feedback", "/report")


def fuzz_settings(max_examples: int) -> settings:
    """Seeded, no example database, no deadline (never timed asserts), no shrinking (the failure
    message already names the request)."""
    return settings(max_examples=max_examples, derandomize=True, database=None, deadline=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much, HealthCheck.large_base_example])


def assert_answered(status: int, content_type: str, body: bytes, what: str) -> None:
    """The house rule for every request: below 500, and an error is an OperationOutcome saying what to do."""
    assert status < 500, f"{what}: HTTP {status} {body[:600]!r}"
    if status >= 400:
        assert content_type.startswith("application/json"), (what, status, content_type)
        issue = json.loads(body)["issue"][0]
        assert json.loads(body)["resourceType"] == "OperationOutcome" and issue["diagnostics"].strip(), (what, body)
    elif body and content_type.startswith(("application/json", "application/fhir+json")):
        json.loads(body)


@pytest.fixture(scope="module")
def document():
    from importlib.resources import files
    return json.loads(files("cds_service.protocol").joinpath("openapi.json").read_text())


def validator(document: dict, name: str) -> jsonschema_rs.Validator:
    schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return jsonschema_rs.Draft202012Validator(schema, validate_formats=True)


@pytest.fixture
def open_app(make_app):
    return make_app(SPINE_CDS_DATABASE=":memory:", SPINE_CDS_LOG_LEVEL="WARNING")


@pytest.fixture
def secured_app(make_app, jwks):
    return make_app(SPINE_CDS_DATABASE=":memory:", SPINE_CDS_LOG_LEVEL="WARNING", SPINE_CDS_AUTH="on",
                    SPINE_CDS_TRUSTED_ISSUERS=json.dumps({ISSUER: jwks.url + "/jwks.json"}))


def operations(schema) -> list:
    return [result.ok() for result in schema.get_all_operations()]


def send(case, app, what: str) -> None:
    """Call the app in-process, check the response against the document and the house rule."""
    response = case.call(app=app)
    case.validate_response(response, checks=CHECKS)
    if case.method.upper() != "HEAD":
        assert_answered(response.status_code, response.headers.get("content-type", [""])[0], response.content, what)


def test_quotas_add_up_to_ten_thousand_requests():
    assert sum(QUOTA.values()) >= 10_000


@pytest.mark.parametrize("auth", ["off", "on"])
def test_schemathesis_coverage_phase(request, auth):
    app = request.getfixturevalue("open_app" if auth == "off" else "secured_app")
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    sent = 0
    for operation in operations(schema):
        config = schema.config.generation_for(operation=operation)
        for case in schema.iter_coverage_cases(operation, generation_modes=list(GenerationMode), generation_config=config):
            send(case, app, f"coverage, auth {auth}: {case.method} {case.formatted_path}")
            sent += 1
    assert sent >= QUOTA["coverage"] // 2


def test_schemathesis_positive_and_negative_cases(open_app):
    schema = schemathesis.openapi.from_wsgi("/openapi.json", open_app)
    client, sent = open_app.test_client(), 0
    for operation in operations(schema):
        negatable = operation.query or operation.headers or operation.body  # a path parameter cannot be negated
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if negatable else (GenerationMode.POSITIVE,):
            @fuzz_settings(EXAMPLES.get(operation.label, 10))
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case):
                nonlocal sent
                send(case, open_app, f"{mode.value}: {case.method} {case.formatted_path}")
                sent += 1
                service = (case.path_parameters or {}).get("service_id")
                if operation.label == "POST /cds-services/{service_id}" and isinstance(case.body, dict) and service:
                    hook = {v: k for k, v in SERVICE_OF_HOOK.items()}.get(service, "order-select")
                    response = client.post(case.formatted_path, json={**case.body, "hook": hook})
                    assert_answered(response.status_code, response.content_type, response.data, f"aligned {case.body!r}"[:300])
                    sent += 1
            run()
    assert sent >= QUOTA["schemathesis"]


def _near_valid(app, answer: jsonschema_rs.Validator, names: list[str], examples: int, max_mutations: int) -> int:
    """Send each drawn run's bodies; a 200 must match the documented answer schema."""
    client, sent = app.test_client(), 0

    @fuzz_settings(examples)
    @given(run=mutation_runs(names, max_mutations))
    def run(run):
        nonlocal sent
        for body in run.bodies:
            response = client.post(run.url, data=body, content_type="application/json")
            assert_answered(response.status_code, response.content_type, response.data, run.label)
            assert response.status_code in (200, 400, 412), (run.label, response.status_code)
            if response.status_code == 200:
                errors = [e.message for e in answer.iter_errors(response.get_json())]
                assert not errors, (run.label, errors[:3])
            sent += 1
    run()
    return sent


def _near_valid_feedback(app, answer: jsonschema_rs.Validator, names: list[str], examples: int, max_mutations: int,
                         statuses: tuple[int, ...]) -> int:
    """:func:`_near_valid` for feedback, where a card id never issued is a 422.  A copy rather
    than a parameter of it: hypothesis seeds each test from its source, and the hook tests'
    quotas are counted for their seed."""
    client, sent = app.test_client(), 0

    @fuzz_settings(examples)
    @given(run=mutation_runs(names, max_mutations))
    def run(run):
        nonlocal sent
        for body in run.bodies:
            response = client.post(run.url, data=body, content_type="application/json")
            assert_answered(response.status_code, response.content_type, response.data, run.label)
            assert response.status_code in statuses, (run.label, response.status_code)
            if response.status_code == 200:
                errors = [e.message for e in answer.iter_errors(response.get_json())]
                assert not errors, (run.label, errors[:3])
            sent += 1
    run()
    return sent


def test_near_valid_hook_requests_on_small_records(open_app, document):
    sent = _near_valid(open_app, validator(document, "HookResponse"), SMALL, examples=1_320, max_mutations=6)
    assert sent >= QUOTA["near_valid_small"]


def test_near_valid_hook_requests_on_a_large_record(open_app, document):
    sent = _near_valid(open_app, validator(document, "HookResponse"), list(LARGE), examples=50, max_mutations=5)
    assert sent >= QUOTA["near_valid_large"]


def test_near_valid_feedback(open_app, document):
    """The cards the feedback names were issued to this (anonymous) client, so valid bodies reach
    the store; a mutated card id is one never issued: 422."""
    from datetime import datetime, timezone
    store = open_app.extensions["spine_cds"].store
    for item in FEEDBACK["feedback"]["feedback"]:
        store.record_decision(item["card"], "spine-imaging-order-sign", "order-sign", "hi", "ServiceRequest/sr", "nia",
                              "g", "i", "approve", [], datetime.now(timezone.utc).isoformat(), issuer="")
    sent = _near_valid_feedback(open_app, validator(document, "FeedbackReceipt"), list(FEEDBACK), examples=600,
                                max_mutations=6, statuses=(200, 400, 422))
    assert sent >= QUOTA["near_valid_feedback"]


# --- auth on: garbage in Authorization ----------------------------------------------------------

def _b64(data: bytes) -> str:
    import base64
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


JUNK = st.none() | st.integers() | st.text(max_size=20) | st.booleans() | st.lists(st.integers(), max_size=2)


@st.composite
def jwt_shaped(draw, jkus: list[str], plausible: bool):
    """header.payload.signature, never validly signed.  Plausible ones look like a trusted client's
    (ES384/RS384, a kid, our issuer or another, a jku) so they reach the key lookup and signature
    check; the others put random values of any type in every header field and claim."""
    pick = (lambda *values: st.sampled_from(values)) if plausible else (lambda *values: st.sampled_from(values) | JUNK)
    now = int(time.time())
    header = draw(st.fixed_dictionaries({"alg": pick("ES384", "RS384") if plausible else pick("ES384", "none", "HS256", ""),
                                         "kid": pick("k1", "unknown")},
                                        optional={"typ": pick("JWT", "at+jwt"), "jku": pick(*jkus)}))
    claims = draw(st.fixed_dictionaries(
        {"iss": pick(ISSUER, "https://evil.example")},
        optional={"aud": pick(*(f"http://localhost{p}" for p in PROTECTED)), "exp": pick(now + 300, now - 3600, 2**63),
                  "iat": pick(now, now + 3600), "jti": st.uuids().map(str) if plausible else JUNK}))
    signature = draw(st.binary(max_size=96))
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}.{_b64(signature)}"


LATIN1 = st.characters(min_codepoint=0x20, max_codepoint=0xFF) | st.sampled_from("\t")


def authorizations(jkus: list[str]):
    token_chars = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=", max_size=300)
    scheme = st.sampled_from(["Bearer ", "bearer ", "BEARER  ", "Basic ", "Bearer\t", ""])
    return (st.text(alphabet=LATIN1, max_size=200)
            | st.tuples(scheme, token_chars).map("".join)
            | st.tuples(scheme, jwt_shaped(jkus, plausible=False)).map("".join)
            | st.tuples(st.just("Bearer "), jwt_shaped(jkus, plausible=True)).map("".join))


def test_garbage_authorization_is_always_401_and_never_fetches_a_foreign_jku(secured_app, jwks, monkeypatch):
    looked_up = []
    guarded = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: (looked_up.append(host), guarded(host, *a, **k))[1])
    client, sent = secured_app.test_client(), 0
    sample = json.dumps({"hook": "order-select", "hookInstance": "x", "context": {}})
    with socket.socket() as evil:
        evil.bind(("127.0.0.1", 0))
        evil.listen(8)
        evil.setblocking(False)
        jkus = [f"http://127.0.0.1:{evil.getsockname()[1]}/jwks.json", "https://evil.example/jwks.json",
                jwks.url + "/other/jwks.json", jwks.url + "/jwks.json"]

        @fuzz_settings(520)
        @given(authorization=authorizations(jkus))
        def run(authorization):
            nonlocal sent
            headers = {"Authorization": authorization}
            for path in PROTECTED:
                response = (client.get(path, headers=headers) if path == "/report" else
                            client.post(path, data=sample, content_type="application/json", headers=headers))
                assert response.status_code == 401, (authorization, path, response.data[:300])
                # One fixed sentence whatever was wrong: the hooks' bare one, the report's says how
                # an operator gets in (report_access.py), never why this token failed.
                expected = denied("").message if path == "/report" else AUTH_FAILED
                assert response.get_json()["issue"][0]["diagnostics"] == expected
            for path in ("/cds-services", "/health"):
                assert client.get(path, headers=headers).status_code == 200
            sent += len(PROTECTED) + 2
        run()
        with pytest.raises(BlockingIOError):
            evil.accept()  # nobody ever connected to the untrusted jku
    assert "evil.example" not in looked_up
    assert jwks.requests >= 1, "no token got as far as the trusted key set: the generator is too shallow"
    assert sent >= QUOTA["auth"]
