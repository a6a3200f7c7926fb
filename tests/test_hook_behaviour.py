"""Behaviour across calls and options: don't nag twice, card-type switches, the sandbox's PAMA
rating, and the comparison with other programs."""
from __future__ import annotations

import copy
import json
import time

import pytest

from cds_service.cards.card import TOPICS
from cds_service.tools.cli import SAMPLES
from cds_service.cards.pama import RATING_URL

SELECT, SIGN = "/cds-services/spine-imaging-order-select", "/cds-services/spine-imaging-order-sign"


def sample(name: str) -> dict:
    return json.loads((SAMPLES / f"{name}.json").read_text())


def as_sign(body: dict) -> dict:
    body = copy.deepcopy(body)
    body["hook"] = "order-sign"
    body["context"].pop("selections", None)
    return body


def test_order_sign_does_not_repeat_the_card_shown_at_order_select(client):
    select = sample("radiculopathy-conservative-care-failed")
    assert len(client.post(SELECT, json=select).get_json()["cards"]) == 1
    signed = client.post(SIGN, json=as_sign(select)).get_json()
    assert signed["cards"] == []
    assert signed["systemActions"][0]["resource"]["id"] == "sr-ana"  # coverage information still comes


def test_a_changed_order_is_decided_and_shown_again(client):
    select = sample("radiculopathy-conservative-care-failed")
    client.post(SELECT, json=select)
    changed = as_sign(select)
    changed["context"]["draftOrders"]["entry"][0]["resource"]["code"]["coding"][0]["code"] = "72149"
    [card] = client.post(SIGN, json=changed).get_json()["cards"]
    assert card["extension"]["spine-cds.decision"]["outcome"] == "approve"


def test_order_sign_without_a_prior_select_shows_the_card(client):
    assert len(client.post(SIGN, json=as_sign(sample("radiculopathy-conservative-care-failed"))).get_json()["cards"]) == 1


def test_the_repeat_window_expires(make_app):
    client = make_app(SPINE_CDS_REPEAT_WINDOW_S="0.05").test_client()
    select = sample("radiculopathy-conservative-care-failed")
    client.post(SELECT, json=select)
    time.sleep(0.2)
    assert len(client.post(SIGN, json=as_sign(select)).get_json()["cards"]) == 1


def test_every_card_type_has_a_configuration_switch(client):
    [service] = [s for s in client.get("/cds-services").get_json()["services"] if s["hook"] == "order-select"]
    codes = {o["code"] for o in service["extension"]["davinci-crd.configuration-options"]}
    assert {code for code, _ in TOPICS.values()} | {"coverage-info", "max-cards"} <= codes


@pytest.mark.parametrize("name,code,kept", [
    ("radiculopathy-conservative-care-failed", "appropriate-use", False),
    ("radiculopathy-conservative-care-failed", "guideline", True),
    ("infant-sacral-dimple", "therapy-alternatives-opt", False),
    ("low-back-pain-care-in-progress", "guideline", False),
])
def test_card_type_switches_are_honoured(client, name, code, kept):
    body = sample(name)
    body["extension"] = {"davinci-crd.configuration": {code: False}}
    assert len(client.post(SELECT, json=body).get_json()["cards"]) == (1 if kept else 0)


@pytest.mark.parametrize("name,rating", [
    ("cauda-equina-snomed-only", "appropriate"),
    ("sandbox-style-low-back-pain", None),          # documentation: Argonaut forbids a rating
])
def test_plain_cds_hooks_callers_get_the_pama_rating(client, name, rating):
    response = client.post(SELECT, json=sample(name)).get_json()
    if rating is None:
        assert "extension" not in response
        return
    [action] = response["extension"]["systemActions"]
    assert action["type"] == "update" and action["resource"]["id"] == "sr-carl"
    [ext] = [e for e in action["resource"]["extension"] if e["url"] == RATING_URL]
    assert ext["valueCodeableConcept"]["coding"][0]["code"] == rating
    assert "systemActions" not in response  # no Coverage: no CRD coverage information


def test_crd_callers_get_coverage_information_not_a_pama_rating(client):
    response = client.post(SELECT, json=sample("radiculopathy-conservative-care-failed")).get_json()
    assert "extension" not in response and response["systemActions"]


def test_the_card_names_other_programs_whose_criteria_the_order_meets(make_app):
    body = sample("physical-therapy-alone-nia")
    [card] = make_app().test_client().post(SELECT, json=body).get_json()["cards"]
    assert card["extension"]["spine-cds.decision"]["outcome"] == "documentation"
    assert "the same record meets the criteria of: HealthHelp" in card["detail"]
    [quiet] = make_app(SPINE_CDS_COMPARE_PROGRAMS="off").test_client().post(SELECT, json=body).get_json()["cards"]
    assert "HealthHelp" not in quiet["detail"]


def test_a_zero_repeat_window_turns_the_check_off(make_app):
    client = make_app(SPINE_CDS_REPEAT_WINDOW_S="0").test_client()
    select = sample("radiculopathy-conservative-care-failed")
    client.post(SELECT, json=select)
    assert len(client.post(SIGN, json=as_sign(select)).get_json()["cards"]) == 1


@pytest.mark.parametrize("name,hook", [("radiculopathy-conservative-care-failed", "order-select"),  # PAMA rating
                                       ("order-sign-with-coverage", "order-sign")])               # CRD coverage info
def test_system_actions_never_change_the_draft_orders_they_update(registry, name, hook):
    """coverage_info and pama copy only the order's top level and replace its extension list."""
    from datetime import date

    from cds_service.protocol.hook_request import parse_hook_request
    from cds_service.protocol.hooks import respond
    from cds_service.record.patient_record import build_record, read_prefetch
    body = sample(name)
    for entry in body["context"]["draftOrders"]["entry"]:
        entry["resource"]["extension"] = [{"url": "http://example.org/keep", "valueString": "x"}]
    request = parse_hook_request(body, hook)
    before = copy.deepcopy(request.draft_orders)
    record = build_record(request.patient_id, read_prefetch(request.prefetch)[0])
    response, _ = respond(request, record, registry, "nia", date(2026, 11, 22))
    actions = response.get("systemActions", []) + response.get("extension", {}).get("systemActions", [])
    assert actions
    assert request.draft_orders == before
    for action in actions:
        urls = [e["url"] for e in action["resource"]["extension"]]
        assert urls[0] == "http://example.org/keep" and len(urls) > 1
