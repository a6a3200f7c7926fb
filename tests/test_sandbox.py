"""The public CDS Hooks sandbox's "PAMA Imaging" tab, replayed exactly as it calls us.

What the sandbox does (cds-hooks/sandbox: ``src/components/Pama/pama.jsx``, ``service-exchange.js``,
``jwt-generator.js``), and what these tests therefore send:

- ``order-select`` with one draft ServiceRequest ``example-request-id``: ``intent`` ``plan``,
  ``code.coding`` = the picked CPT coding (on load an empty pick: ``{"coding": [{}]}``),
  ``reasonCode`` = one CodeableConcept per picked SNOMED CT reason (on load ``[]``); no requester,
  authoredOn, encounter or Coverage; ``draftOrders`` has no ``type``; a fresh hookInstance per call.
- Its FHIR server is open, so no ``fhirAuthorization``; prefetch is whatever its FHIR server
  answered for our templates (searchset Bundles, empty ones included), or no ``prefetch`` at all.
- Every call (feedback too) carries an ES384 JWT: header ``kid``/``jku`` of the sandbox, claims
  ``iss``, ``aud`` (the exact URL called), ``exp`` = ``iat`` + 300, ``jti``; ``iat`` is rounded to
  the nearest second, so up to 0.5 s in the future.  Here ``iat`` is 0.5-1.5 s ahead (harder).
- It shows a rating only from ``response.extension.systemActions`` (Argonaut PAMA extension).

The service runs with its shipped ``SPINE_CDS_TRUSTED_ISSUERS`` (the sandbox, with its JWKS URL);
the JWKS request to that URL is answered in-process with a test key pair standing in for the
sandbox's, so the token's ``jku`` is the real one.  Fixtures: ``fixtures/sandbox/`` (how they were
shaped: ``fixtures/sandbox/README.md``).
"""
from __future__ import annotations

import copy
import json
import math
import time
import uuid
from pathlib import Path

import jwt
import pytest

from cds_service import close_app
from cds_service import create_app
from cds_service.cards.pama import RATING_SYSTEM, RATING_URL, RATINGS
from contract import assert_card_contract
from fhir_stub import FhirStub
from cds_service.protocol.jwks import parse_jwks
from jwt_helpers import public_jwk

FIXTURES = Path(__file__).parent / "fixtures" / "sandbox"
ORIGIN, ISS = "https://sandbox.cds-hooks.org", "https://sandbox.cds-hooks.org"
JKU, KID = "https://sandbox.cds-hooks.org/.well-known/jwks.json", "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"
SELECT = "/cds-services/spine-imaging-order-select"
FEEDBACK = SELECT + "/feedback"
BASE = "http://localhost"  # where Flask's test client says it was called
TEST_SETTINGS = {"SPINE_CDS_AUTH": "on", "SPINE_CDS_TODAY": "2026-11-22"}  # trusted issuers: the shipped default


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


PICKS = load("pama-pick-lists.json")
STUDIES = {s["code"]: s for s in PICKS["studies"] if s["code"] != "72159"}
MRA = next(s for s in PICKS["studies"] if s["code"] == "72159")  # offered by the sandbox, not a CT/MRI
REASONS = {r["code"]: r for r in PICKS["reasons"]}
LUMBAR = {"72131": "nia-lumbar-spine-ct", "72132": "nia-lumbar-spine-ct", "72133": "nia-lumbar-spine-ct",
          "72148": "nia-lumbar-spine-mri", "72149": "nia-lumbar-spine-mri", "72158": "nia-lumbar-spine-mri"}


class SandboxJwks:
    """Answers the sandbox's JWKS URL in-process (no network), counting the requests."""

    def __init__(self, jwks: dict):
        self.jwks, self.urls = jwks, []

    def fetch(self, url: str) -> dict | None:
        self.urls.append(url)
        return parse_jwks(self.jwks) if url == JKU else None


class Sandbox:
    """Signs and sends requests the way the sandbox does, against one app."""

    def __init__(self, app, key):
        self.app, self.client, self.key = app, app.test_client(), key
        self.jwks = SandboxJwks({"keys": [public_jwk(key, KID, "ES384")]})
        app.extensions["spine_cds"].authenticator.key_sets.fetch = self.jwks.fetch

    def token(self, url: str) -> str:
        iat = math.ceil(time.time() + 0.5)
        claims = {"iss": ISS, "aud": url, "exp": iat + 300, "iat": iat, "jti": str(uuid.uuid4())}
        return jwt.encode(claims, self.key, algorithm="ES384", headers={"typ": "JWT", "kid": KID, "jku": JKU})

    def post(self, path: str, body: dict, aud: str | None = None):
        headers = {"Accept": "application/json", "Origin": ORIGIN,
                   "Authorization": f"Bearer {self.token(aud or BASE + path)}"}
        return self.client.post(path, json=body, headers=headers)

    @property
    def store(self):
        return self.app.extensions["spine_cds"].store


@pytest.fixture(scope="module")
def sandbox(key, tmp_path_factory):
    """One app for the module (the 72 study x reason calls would otherwise build 72 apps)."""
    app = create_app({**TEST_SETTINGS, "SPINE_CDS_DATABASE": str(tmp_path_factory.mktemp("sandbox") / "db.sqlite3")})
    yield Sandbox(app, key)
    close_app(app)


def pick(study: dict, reasons: list[dict], prefetch: dict | None = None) -> dict:
    """The request the PAMA tab sends after picking ``study`` and ``reasons`` (its generateContext)."""
    body = load("order-select-lumbar-mri-low-back-pain.json")
    body["hookInstance"] = str(uuid.uuid4())
    order = body["context"]["draftOrders"]["entry"][0]["resource"]
    order["code"] = {"coding": [study], "text": study["display"]}
    order["reasonCode"] = [{"coding": [r], "text": r["display"]} for r in reasons]
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


def answer(sandbox: Sandbox, body: dict) -> dict:
    response = sandbox.post(SELECT, body)
    assert response.status_code == 200, response.get_json()
    assert response.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN)
    return response.get_json()


def assert_rating(response: dict, decision: dict, draft: dict) -> None:
    """Argonaut PAMA: a rating for approve/alternative/no-policy, none when data are insufficient."""
    assert "systemActions" not in response, "no Coverage in the request: no CRD coverage information"
    if decision["outcome"] not in RATINGS:
        assert "extension" not in response, "a documentation outcome must not be rated (Argonaut PAMA)"
        return
    [action] = response["extension"]["systemActions"]
    assert action["type"] == "update" and action["resource"]["id"] == draft["id"]
    [rating] = [e for e in action["resource"]["extension"] if e["url"] == RATING_URL]
    assert rating["valueCodeableConcept"]["coding"] == [{"system": RATING_SYSTEM, "code": RATINGS[decision["outcome"]]}]
    assert {k: v for k, v in action["resource"].items() if k != "extension"} == draft, "no semantic change"


def test_the_on_load_call_with_nothing_picked_gets_no_cards(sandbox):
    before = sandbox.store.count_decisions()
    assert answer(sandbox, load("order-select-on-load.json")) == {"cards": []}  # no order code: nothing to decide
    assert sandbox.store.count_decisions() == before


@pytest.mark.parametrize("reason", sorted(REASONS))
@pytest.mark.parametrize("cpt", sorted(STUDIES))
def test_each_spine_study_with_each_lumbar_reason_gets_one_decision_card(sandbox, cpt, reason):
    body = pick(STUDIES[cpt], [REASONS[reason]])
    response = answer(sandbox, body)
    [card] = response["cards"]
    decision = assert_card_contract(card)
    assert (decision["program"], decision["routedBy"], decision["order"]) == ("nia", "default", "ServiceRequest/example-request-id")
    assert card["source"]["label"] == "National Imaging Associates (NIA)" and "default program" in card["detail"]
    if cpt in LUMBAR:
        guideline = sandbox.app.extensions["spine_cds"].registry.guidelines[LUMBAR[cpt]]
        assert decision["guideline"] == guideline.id and guideline.title in card["detail"]
        assert decision["indication"] is not None, "the SNOMED CT reason was not understood"
        assert "No indication of this guideline is documented" not in card["detail"]
        assert "back pain" in card["detail"].lower()
    else:  # NIA encodes lumbar guidelines only: a cervical or thoracic study is no-policy, and says so
        assert (decision["outcome"], decision["guideline"], decision["indication"]) == ("no-policy", None, None)
        assert "No National Imaging Associates (NIA) guideline covers" in card["summary"]
    assert_rating(response, decision, body["context"]["draftOrders"]["entry"][0]["resource"])


def test_a_reason_outside_the_guideline_is_not_mistaken_for_back_pain(sandbox):
    """Control for the test above: its 'reason understood' checks can fail."""
    hypertension = {"system": "http://snomed.info/sct", "code": "59621000", "display": "Essential hypertension"}
    [card] = answer(sandbox, pick(STUDIES["72148"], [hypertension]))["cards"]
    assert card["extension"]["spine-cds.decision"]["indication"] is None
    assert "No indication of this guideline is documented" in card["detail"]


@pytest.mark.parametrize("reason", sorted(REASONS))
def test_a_record_with_failed_conservative_care_rates_lumbar_mri_appropriate(sandbox, reason):
    body = pick(STUDIES["72148"], [REASONS[reason]], load("prefetch-conservative-care.json"))
    response = answer(sandbox, body)
    [card] = response["cards"]
    decision = assert_card_contract(card)
    assert (decision["outcome"], decision["guideline"]) == ("approve", "nia-lumbar-spine-mri")
    assert_rating(response, decision, body["context"]["draftOrders"]["entry"][0]["resource"])
    assert RATINGS["approve"] == "appropriate"


def test_lumbar_ct_when_mri_would_do_is_rated_not_appropriate_with_mri_suggested(sandbox):
    body = pick(STUDIES["72131"], [REASONS["128196005"]], load("prefetch-conservative-care.json"))
    response = answer(sandbox, body)
    [card] = response["cards"]
    decision = assert_card_contract(card)
    assert decision["outcome"] == "alternative" and card["suggestions"]
    assert_rating(response, decision, body["context"]["draftOrders"]["entry"][0]["resource"])
    draft = body["context"]["draftOrders"]["entry"][0]["resource"]
    [update] = [a for s in card["suggestions"] for a in s["actions"]]   # what the PAMA screen applies: one update
    assert update["type"] == "update" and update["resource"]["id"] == draft["id"]
    assert update["resource"]["code"]["coding"][0]["code"] in ("72148", "72149", "72158"), update
    ratings = [e["valueCodeableConcept"]["coding"][0]["code"] for e in update["resource"]["extension"]
               if e["url"] == "http://fhir.org/argonaut/Extension/pama-rating"]
    assert ratings == ["appropriate"]   # the screen reads the rating from the updated resource


def test_the_mr_angiography_the_sandbox_also_offers_is_not_ours(sandbox):
    assert answer(sandbox, pick(MRA, [REASONS["279039007"]])) == {"cards": []}


def test_every_spine_study_the_sandbox_offers_is_in_our_catalog(catalog):
    for cpt in STUDIES:
        study = catalog.by_cpt.get(cpt)
        assert study and study.modality in ("CT", "MR") and study.region in ("cervical", "thoracic", "lumbar"), cpt
    in_ranges = {str(c) for c in [*range(72125, 72134), *range(72141, 72159)]}
    # Numbers in 72141-72158 that are not CPT codes at all (the sandbox offers none of them):
    assert in_ranges - set(catalog.by_cpt) == {"72143", "72144", "72145", *map(str, range(72150, 72156))}
    assert in_ranges & set(catalog.by_cpt) == set(STUDIES)


def test_the_jwks_is_read_from_the_sandbox_url_and_cached(sandbox):
    answer(sandbox, pick(STUDIES["72148"], [REASONS["279039007"]]))
    answer(sandbox, pick(STUDIES["72133"], [REASONS["18347007"]]))
    assert sandbox.jwks.urls == [JKU]


def test_without_prefetch_the_open_fhir_server_is_read_without_a_token(make_app, key):
    with_prefetch = load("order-select-lumbar-mri-low-back-pain.json")
    resources = [with_prefetch["prefetch"]["patient"]] + [
        e["resource"] for v in with_prefetch["prefetch"].values() if v.get("resourceType") == "Bundle"
        for e in v.get("entry", [])]
    with FhirStub() as server:
        server.add(*resources)
        sandbox = Sandbox(make_app(**TEST_SETTINGS, SPINE_CDS_ALLOWED_FHIR_SERVERS=server.url), key)
        body = copy.deepcopy(with_prefetch)
        body["fhirServer"] = server.url
        del body["prefetch"]
        response = answer(sandbox, body)
        expected = answer(sandbox, with_prefetch)
    assert "fhirAuthorization" not in body and set(server.authorization) == {None}
    searched = {path.split("?")[0] for path in server.requests}
    assert {"/Patient/smart-1288992", "/Condition", "/Procedure", "/MedicationRequest", "/Observation"} <= searched
    [card], [reference] = response["cards"], expected["cards"]
    assert card["extension"] == reference["extension"]  # the same decision as from the prefetch


@pytest.mark.parametrize("path", [SELECT, FEEDBACK])
def test_cors_preflight_as_the_browser_sends_it_for_the_sandbox(sandbox, path):
    response = sandbox.client.options(path, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                                                     "Access-Control-Request-Headers": "Authorization, Content-Type"})
    assert response.status_code in (200, 204)
    assert response.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN)
    allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed and "POST" in response.headers["Access-Control-Allow-Methods"]


def feedback_item(card: dict, outcome: str, **extra) -> dict:
    return {"feedback": [{"card": card["uuid"], "outcome": outcome, "outcomeTimestamp": "2026-11-22T10:00:00.000Z", **extra}]}


def test_dismiss_and_accept_feedback_signed_for_the_feedback_url_are_stored(sandbox):
    [documentation] = answer(sandbox, pick(STUDIES["72148"], [REASONS["23056005"]]))["cards"]
    [alternative] = answer(sandbox, pick(STUDIES["72131"], [REASONS["128196005"]],
                                         load("prefetch-conservative-care.json")))["cards"]
    reason = documentation["overrideReasons"][0]  # the sandbox echoes the picked reason's code and system
    dismiss = feedback_item(documentation, "overridden", overrideReason={
        "reason": {"code": reason["code"], "system": reason["system"]}, "userComment": "seen in clinic"})
    suggestion = alternative["suggestions"][0]["uuid"]
    accept = feedback_item(alternative, "accepted", acceptedSuggestions=[{"id": suggestion}])
    for body in (dismiss, accept):
        response = sandbox.post(FEEDBACK, body)
        assert response.status_code == 200 and response.get_json() == {"received": 1, "stored": 1}
        assert response.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN)
    [stored] = sandbox.store.feedback_for_card(documentation["uuid"])
    assert (stored["outcome"], stored["reason"]["code"], stored["reason"]["system"]) == ("overridden", reason["code"], reason["system"])
    [stored] = sandbox.store.feedback_for_card(alternative["uuid"])
    assert (stored["outcome"], stored["accepted_suggestions"]) == ("accepted", [suggestion])


def test_feedback_signed_for_the_service_url_is_refused(sandbox):
    [card] = answer(sandbox, pick(STUDIES["72149"], [REASONS["279039007"]]))["cards"]
    item = feedback_item(card, "overridden", overrideReason={"userComment": "x"})
    assert sandbox.post(FEEDBACK, item, aud=BASE + SELECT).status_code == 401
    assert sandbox.store.feedback_for_card(card["uuid"]) == []
