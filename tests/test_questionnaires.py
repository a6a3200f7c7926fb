"""Documentation Questionnaires (DTR-style): served per indication or gate, linked from the
documentation card, named in CRD coverage-information, and read back as attestations that
satisfy ``documented`` criteria."""
from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from casebuilder import build_case
from cds_service.cards.card import card_for
from cds_service.cards.coverage_info import coverage_action
from cds_service.protocol.fhir_models import Questionnaire, QuestionnaireResponse, ServiceRequest, validation_problems
from cds_service.engine.evaluation import evaluate_node
from cds_service.engine.facts import extract_facts
from cds_service.protocol.hooks import decide_orders, orders_in_scope
from cds_service.record.prefetch import KEY_TYPES, NOT_A_DATA_GAP, PREFETCH, REQUIRED_KEYS
from cds_service.cards.questionnaires import (
    base_url_for, build_questionnaire, canonical, documented_leaves, link_id, questionnaire_id,
    questionnaire_url,
)
from contract import assert_card_contract, assert_coverage_information
from test_cases import check_case

ROOT = Path(__file__).resolve().parent.parent
CASES = json.loads((ROOT / "tests" / "cases" / "nia-lumbar-spine-mri.json").read_text())
GUIDELINE, FOLLOW_UP, GATE = "nia-lumbar-spine-mri", "post-treatment-follow-up", "overlapping-imaging-3-months"
PATH = f"/questionnaires/{GUIDELINE}/{FOLLOW_UP}"
MEDICAL_REASON = ("Medical reason why follow-up imaging of this area is needed (routine post-op surveillance "
                  "without symptoms is not covered)")


def case_named(name: str) -> dict:
    return copy.deepcopy(next(c for c in CASES["cases"] if c["name"] == name))


FOLLOW_UP_CASE = "follow-up 183 days after microdiscectomy: medical reason needed"
GATE_CASE = "lumbar MRI 90 days ago: overlapping imaging needs a reason"


def response_to(questionnaire: dict, authored: str, answer: bool | dict[str, bool] = True, rid: str = "qr1") -> dict:
    """A completed QuestionnaireResponse answering every boolean question (or those in ``answer``)."""
    items = []
    for item in questionnaire["item"]:
        if item["type"] == "boolean" and (isinstance(answer, bool) or item["linkId"] in answer):
            value = answer if isinstance(answer, bool) else answer[item["linkId"]]
            items.append({"linkId": item["linkId"], "text": item["text"], "answer": [{"valueBoolean": value}]})
    return {"resourceType": "QuestionnaireResponse", "id": rid, "questionnaire": questionnaire["url"],
            "status": "completed", "subject": {"reference": "Patient/case-patient"}, "authored": authored, "item": items}


def decide(case: dict, registry):
    hook, record = build_case(case, CASES["defaults"])
    [decision] = decide_orders(hook, record, registry, CASES["program"], date.fromisoformat(CASES["today"]))
    return decision


def rule_status(case: dict, rule_id: str, registry) -> str:
    """The three-valued status of one indication for a case (the decision keeps only the nearest)."""
    hook, record = build_case(case, CASES["defaults"])
    [order], _ = orders_in_scope(hook, registry)
    guideline = registry.guidelines[GUIDELINE]
    facts = extract_facts(record, order, (), registry.tagger, date.fromisoformat(CASES["today"]))
    rule = next(r for r in guideline.indications if r.id == rule_id)
    return evaluate_node(rule.criteria, facts, guideline).status.value


# --- the Questionnaire resource and its route ----------------------------------------------------------

def test_questionnaire_of_a_real_indication_is_r4b_valid_with_one_boolean_per_documented_leaf(client, registry):
    response = client.get(PATH)
    assert response.status_code == 200 and response.mimetype == "application/fhir+json"
    q = response.get_json()
    assert validation_problems(Questionnaire, q) == []
    rule = next(r for r in registry.guidelines[GUIDELINE].indications if r.id == FOLLOW_UP)
    assert (q["resourceType"], q["status"], q["title"]) == ("Questionnaire", "active", rule.label)
    assert q["url"] == f"https://spine-cds.example.org/fhir/Questionnaire/{GUIDELINE}--{FOLLOW_UP}" == canonical(GUIDELINE, FOLLOW_UP)
    assert q["id"] == f"{GUIDELINE}--{FOLLOW_UP}"
    booleans = [i for i in q["item"] if i["type"] == "boolean"]
    assert [(i["linkId"], i["text"]) for i in booleans] == [(link_id(MEDICAL_REASON), MEDICAL_REASON)]
    assert q["item"][0]["type"] == "display" and rule.source["section"] in q["item"][0]["text"]
    [record] = [i for i in q["item"] if i["type"] == "group"]
    assert [i["type"] for i in record["item"]] == ["display"]
    assert "Spine treatment, procedure, intervention or surgery in the last 6 months" in record["item"][0]["text"]


def test_a_gate_has_a_questionnaire_too(client):
    q = client.get(f"/questionnaires/{GUIDELINE}/{GATE}").get_json()
    assert validation_problems(Questionnaire, q) == []
    assert [i["text"] for i in q["item"] if i["type"] == "boolean"] == [
        "Prior study inconclusive or shows a need for additional or follow-up imaging",
        "Office notes document why overlapping imaging is needed and how it will change management",
        "Both bony and soft-tissue involvement"]   # the combination exemption: a CT then this MRI for a malignant process


def test_coded_alternatives_to_a_question_are_worded_as_alternatives(registry):
    guideline = registry.guidelines[GUIDELINE]
    rule = next(r for r in guideline.indications if r.id == "pediatric-back-pain-red-flags")
    lines = [i["text"] for i in build_questionnaire(guideline, rule)["item"][-1]["item"]]
    assert "Patient younger than 18" in lines
    assert any(line.startswith("Or, instead of a yes above: one of: age 5 or younger") for line in lines)
    assert "Age 5 or younger" not in lines  # never listed as if it were also required


def test_every_indication_and_gate_of_every_guideline_builds_a_valid_questionnaire(registry):
    ids = set()
    for guideline in registry.guidelines.values():
        for rule in (*guideline.indications, *guideline.gates):
            q = build_questionnaire(guideline, rule)
            assert validation_problems(Questionnaire, q) == [], (guideline.id, rule.id)
            links = [i["linkId"] for i in q["item"]] + [c["linkId"] for i in q["item"] for c in i.get("item", [])]
            assert len(links) == len(set(links)), (guideline.id, rule.id)
            assert q["id"] == questionnaire_id(guideline.id, rule.id) and len(q["id"]) <= 64 and q["id"] not in ids
            ids.add(q["id"])
            assert q["url"] == canonical(guideline.id, rule.id)


def test_no_token_needed_and_cors_applies(make_app):
    secured = make_app(SPINE_CDS_AUTH="on").test_client()
    response = secured.get(PATH, headers={"Origin": "https://sandbox.cds-hooks.org"})
    assert response.status_code == 200 and response.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("path", [
    f"/questionnaires/no-such-guideline/{FOLLOW_UP}",
    f"/questionnaires/{GUIDELINE}/no-such-rule",
    f"/questionnaires/{GUIDELINE}/mri-contraindicated-ct",  # an alternative: nothing to document
    f"/questionnaires/{GUIDELINE}",
])
def test_unknown_guideline_or_rule_is_404_operation_outcome(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.get_json()["resourceType"] == "OperationOutcome"


# --- question ids ------------------------------------------------------------------------------------------

def test_link_ids_are_stable_readable_and_whitespace_insensitive():
    assert link_id("How imaging will change management") == "how-imaging-will-change-management-ef8985ef"
    assert link_id(MEDICAL_REASON) == "medical-reason-why-follow-up-imaging-of-this-7412a819"
    assert link_id("  How imaging   will change\nmanagement ") == link_id("How imaging will change management")
    assert link_id("Saddle anesthesia") != link_id("Saddle anaesthesia")


def test_link_ids_never_collide_and_one_label_is_one_question_across_guidelines(registry):
    seen: dict[str, str] = {}
    for guideline in registry.guidelines.values():
        for rule in (*guideline.indications, *guideline.gates):
            for leaf in documented_leaves(rule, guideline.definitions):
                key, label = link_id(leaf["label"]), " ".join(leaf["label"].split())
                assert seen.setdefault(key, label) == label
                assert len(key) <= 64
    assert len(seen) > 100


# --- the card link -------------------------------------------------------------------------------------

def test_documentation_card_links_to_the_questionnaire_and_the_link_resolves(client, registry):
    decision = decide(case_named(FOLLOW_UP_CASE), registry)
    assert (decision.outcome, decision.indication_id) == ("documentation", FOLLOW_UP)
    card = card_for(decision, "hook-1", base_url="http://localhost/")
    assert_card_contract(card)
    [link] = card["links"]
    assert link["type"] == "absolute" and link["label"].startswith("Document it: Follow-up after spine treatment")
    assert link["url"] == f"http://localhost{PATH}"
    fetched = client.get(urlsplit(link["url"]).path).get_json()
    assert fetched["url"] == canonical(GUIDELINE, FOLLOW_UP)


def test_blocking_gate_card_links_to_the_gate_questionnaire(registry):
    decision = decide(case_named(GATE_CASE), registry)
    assert decision.blocking_gates and decision.blocking_gates[0].rule.id == GATE
    [link] = card_for(decision, "hook-1", base_url="https://cds.example.org")["links"]
    assert link["url"] == f"https://cds.example.org/questionnaires/{GUIDELINE}/{GATE}"


def test_no_link_without_an_absolute_base_url_or_without_documented_criteria(registry):
    decision = decide(case_named(FOLLOW_UP_CASE), registry)
    assert "links" not in card_for(decision, "hook-1")            # hooks.py's call today
    assert "links" not in card_for(decision, "hook-1", base_url="/relative")
    coded_only = {"name": "lbp, no care", "reasons": ["icd10|M54.50"], "record": [],
                  "expect": {"outcome": "documentation"}}
    decision = decide(coded_only, registry)
    assert decision.outcome == "documentation" and decision.indication_id == "conservative-care-failed"
    assert "links" not in card_for(decision, "hook-1", base_url="https://cds.example.org")


def test_base_url_prefers_the_configured_public_url():
    assert base_url_for("https://cds.example.org/", "http://10.0.0.5:8080/") == "https://cds.example.org"
    assert base_url_for("", "http://localhost/") == "http://localhost"
    assert questionnaire_url("https://cds.example.org/base/", GUIDELINE, FOLLOW_UP) == f"https://cds.example.org/base{PATH}"
    assert questionnaire_url("", GUIDELINE, FOLLOW_UP) is None


# --- attestations close the loop ---------------------------------------------------------------------

def attested_case(client, name: str, rule_id: str, authored: str, answer=True, **expect) -> dict:
    """The named case plus a QuestionnaireResponse to the rule's Questionnaire (fetched over HTTP)."""
    q = client.get(f"/questionnaires/{GUIDELINE}/{rule_id}").get_json()
    qr = response_to(q, authored, answer)
    assert validation_problems(QuestionnaireResponse, qr) == []
    case = case_named(name)
    case["record"].append({"fhir": qr})
    case["expect"] = expect
    return case


def test_attesting_the_questionnaire_turns_documentation_into_approve(client, registry):
    case = attested_case(client, FOLLOW_UP_CASE, FOLLOW_UP, "2026-11-21T16:05:00-05:00", True, outcome="approve",
                         indication=FOLLOW_UP, evidence_includes=["Procedure/p0", "QuestionnaireResponse/qr1"])
    check_case(CASES, case, registry)


def test_attesting_the_gate_lets_the_met_indication_through(client, registry):
    office_notes = link_id("Office notes document why overlapping imaging is needed and how it will change management")
    case = attested_case(client, GATE_CASE, GATE, "2026-11-22", {office_notes: True},
                         outcome="approve", indication="neuro-deficit")
    assert len(case["record"][-1]["fhir"]["item"]) == 1  # one of the gate's two questions is enough
    check_case(CASES, case, registry)


def test_a_no_answer_does_not_approve(client, registry):
    case = attested_case(client, FOLLOW_UP_CASE, FOLLOW_UP, "2026-11-21", False, outcome="documentation")
    check_case(CASES, case, registry)
    assert rule_status(case, FOLLOW_UP, registry) == "not-met"  # the clinician says it is not so


def test_a_stale_attestation_is_unknown_again(client, registry):
    case = attested_case(client, FOLLOW_UP_CASE, FOLLOW_UP, "2026-05-01", True, outcome="documentation",
                         indication=FOLLOW_UP, missing_includes=["Medical reason"])
    check_case(CASES, case, registry)
    assert rule_status(case, FOLLOW_UP, registry) == "unknown"
    card = card_for(decide(case, registry), "hook-1", base_url="http://localhost")
    assert "attest it again" in card["detail"] and card["links"]


def test_a_response_to_someone_elses_questionnaire_says_nothing(client, registry):
    case = attested_case(client, FOLLOW_UP_CASE, FOLLOW_UP, "2026-11-21", True, outcome="documentation",
                         indication=FOLLOW_UP)
    case["record"][-1]["fhir"]["questionnaire"] = "https://payer.example.org/Questionnaire/" + FOLLOW_UP
    check_case(CASES, case, registry)


# --- prefetch and the HTTP round trip -------------------------------------------------------------------

def test_questionnaire_responses_are_an_optional_prefetch_key():
    assert PREFETCH["questionnaireResponses"].startswith("QuestionnaireResponse?patient={{context.patientId}}&status=completed")
    assert "questionnaireResponses" not in REQUIRED_KEYS
    assert KEY_TYPES["questionnaireResponses"] == ("QuestionnaireResponse",)
    assert "questionnaireResponses" in NOT_A_DATA_GAP  # hooks.py may leave it out of the card's gap line


def test_prefetched_attestation_approves_through_the_hook(client):
    body = json.loads((ROOT / "tests" / "fixtures" / "hook_requests" / "order-select-lumbar-mri.json").read_text())
    discectomy = {"resourceType": "Procedure", "id": "px", "status": "completed", "subject": {"reference": "Patient/pat1"},
                  "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "63030"}]},
                  "performedDateTime": "2026-07-01"}
    body["prefetch"]["procedures"] = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": discectomy}]}
    body["prefetch"]["questionnaireResponses"] = None
    before = client.post("/cds-services/spine-imaging-order-select", json=body).get_json()
    assert before["cards"][0]["extension"]["spine-cds.decision"]["outcome"] == "documentation"
    qr = response_to(client.get(PATH).get_json(), "2026-11-20")
    qr["subject"] = {"reference": "Patient/pat1"}
    body["prefetch"]["questionnaireResponses"] = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": qr}]}
    body["hookInstance"] = "b0b5a0a4-9c59-4b8e-9b7e-1f2a4e0c9d11"
    after = client.post("/cds-services/spine-imaging-order-select", json=body).get_json()
    decision = after["cards"][0]["extension"]["spine-cds.decision"]
    assert (decision["outcome"], decision["indication"]) == ("approve", FOLLOW_UP)
    assert "QuestionnaireResponse/qr1" in decision["evidence"]


# --- CRD coverage-information --------------------------------------------------------------------------

def test_coverage_information_names_the_questionnaire_only_beside_doc_needed(registry):
    decision = decide(case_named(FOLLOW_UP_CASE), registry)
    decision = replace(decision, route=replace(decision.route, coverage="Coverage/cov1", routed_by="payer"))
    sign = coverage_action(decision, "order-sign", "hook-1", date(2026, 11, 22))["resource"]
    parts = assert_coverage_information(sign, "order-sign")
    assert parts["questionnaire"] == [canonical(GUIDELINE, FOLLOW_UP)] and parts["doc-needed"] == ["clinical"]
    assert validation_problems(ServiceRequest, sign) == []
    select = coverage_action(decision, "order-select", "hook-1", date(2026, 11, 22))["resource"]
    assert "questionnaire" not in assert_coverage_information(select, "order-select")


def test_coverage_information_has_no_questionnaire_when_nothing_is_to_be_attested(client, registry):
    approved = decide(attested_case(client, FOLLOW_UP_CASE, FOLLOW_UP, "2026-11-21", True, outcome="approve"), registry)
    coded_only = decide({"name": "lbp", "reasons": ["icd10|M54.50"], "record": [], "expect": {}}, registry)
    for decision in (approved, coded_only):
        decision = replace(decision, route=replace(decision.route, coverage="Coverage/cov1", routed_by="payer"))
        parts = assert_coverage_information(
            coverage_action(decision, "order-sign", "hook-1", date(2026, 11, 22))["resource"], "order-sign")
        assert "questionnaire" not in parts


# --- a page a browser shows (#15 §4) -------------------------------------------------------------

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"


def test_a_browser_gets_a_readable_form_with_the_quote_the_questions_and_the_coded_record(client, registry):
    guideline = registry.guidelines[GUIDELINE]
    rule = next(r for r in guideline.indications if r.id == FOLLOW_UP)
    response = client.get(PATH, headers={"Accept": BROWSER})
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert response.headers["Vary"] == "Accept" and "script-src" not in response.headers["Content-Security-Policy"]
    html = response.get_data(as_text=True)
    from markupsafe import escape  # how the templates escape
    assert escape(rule.label) in html and escape(guideline.title) in html
    assert escape(rule.source["quote"]) in html
    assert escape(MEDICAL_REASON) in html and 'type="radio"' in html
    assert "What the coded record must show instead" in html
    from cds_service.cards.questionnaires import coded_labels
    assert all(escape(line) in html for line in coded_labels(rule, guideline.definitions))
    assert f'href="http://localhost{PATH}?_format=json"' in html  # absolute, from the request without a base URL


@pytest.mark.parametrize("accept", [None, "*/*", "application/fhir+json", "application/json",
                                    "application/fhir+json, text/html;q=0.9", "text/html;q=0.5, application/json"])
def test_fhir_clients_and_curl_still_get_the_questionnaire_as_fhir_json(client, accept):
    response = client.get(PATH, headers={"Accept": accept} if accept else {})
    assert response.mimetype == "application/fhir+json"
    assert response.get_json()["resourceType"] == "Questionnaire"


def test_format_json_overrides_a_browsers_accept(client):
    response = client.get(PATH + "?_format=json", headers={"Accept": BROWSER})
    assert response.mimetype == "application/fhir+json"


def test_the_page_escapes_everything_it_shows(make_app, tmp_path, registry):
    import shutil
    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", mappings)
    path = mappings / f"{GUIDELINE}.json"
    data = json.loads(path.read_text())
    rule = next(r for r in data["indications"] if r["id"] == FOLLOW_UP)
    rule["label"] = "<script>alert(1)</script> & follow-up"
    rule["source"]["quote"] = '"><img src=x onerror=alert(2)>'
    path.write_text(json.dumps(data))
    client = make_app(SPINE_CDS_MAPPINGS_DIR=str(mappings)).test_client()
    html = client.get(PATH, headers={"Accept": BROWSER}).get_data(as_text=True)
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; follow-up" in html


def test_links_use_the_configured_public_base_url(make_app):
    client = make_app(SPINE_CDS_PUBLIC_BASE_URL="https://cds.example.org/spine").test_client()
    html = client.get(PATH, headers={"Accept": BROWSER}).get_data(as_text=True)
    assert f'href="https://cds.example.org/spine{PATH}?_format=json"' in html and "localhost" not in html


def offline_link(monkeypatch, base: str | None) -> str:
    from cds_service.tools.batch import offline_response
    if base is None:
        monkeypatch.delenv("SPINE_CDS_PUBLIC_BASE_URL", raising=False)
    else:
        monkeypatch.setenv("SPINE_CDS_PUBLIC_BASE_URL", base)
    body = json.loads((ROOT / "cds_service" / "samples" / "post-op-follow-up-needs-reason.json").read_text())
    status, response = offline_response(body, date(2026, 11, 22))
    [link] = [link for card in response["cards"] for link in card.get("links", [])]
    return link["url"]


def test_offline_evaluate_links_to_the_public_base_url_never_localhost(monkeypatch):
    assert offline_link(monkeypatch, "https://cds.example.org").startswith("https://cds.example.org/questionnaires/")
    assert offline_link(monkeypatch, None).startswith("http://127.0.0.1:8080/questionnaires/")  # serve's default
