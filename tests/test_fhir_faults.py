"""A hook call whose data must come from a failing FHIR server, through the Flask app.

Every fault ends in HTTP 200 with a card that is not an approval and says data could not be
read (412 only where patient_record's rule says so), never a 500 or a hang.  No assert here
measures time: the deadline tests use a 1 s deadline and a server that would answer in full
after 5 s with a 30 s request timeout, so a non-approval can only come from the deadline.
"""
from __future__ import annotations

import json
import re

import pytest

from cds_service.record.prefetch import FETCHED_KEYS
from cds_service.tools.cli import SAMPLES
from fhir_stub import FhirStub, closed_port_url, resources_in, without_prefetch

SELECT = "/cds-services/spine-imaging-order-select"
SAMPLE = "radiculopathy-conservative-care-failed"  # approves with its full record
TOKEN = "tok-faults-5c1e"
SLOW = 5.0


def sample() -> dict:
    return json.loads((SAMPLES / f"{SAMPLE}.json").read_text())


@pytest.fixture
def stub():
    """The sample's record on a stub FHIR server, plus a third procedure so Procedure has 3 pages of 1."""
    with FhirStub(token=TOKEN) as server:
        server.add(*resources_in(sample()["prefetch"]))
        server.add({"resourceType": "Procedure", "id": "proc-extra", "status": "completed",
                    "subject": {"reference": "Patient/demo-ana"}, "code": {"text": "Flu shot"}})
        yield server


@pytest.fixture
def call(make_app):
    """POST the sample without prefetch to a fresh app reading from ``server``."""
    def post(server: str, **settings):
        config = {"SPINE_CDS_ALLOWED_FHIR_SERVERS": server, "SPINE_CDS_DEADLINE_S": "1",
                  "SPINE_CDS_FHIR_TIMEOUT_S": "30"} | settings
        return make_app(**config).test_client().post(SELECT, json=without_prefetch(sample(), server, TOKEN))
    return post


def outcome(card: dict) -> str | None:
    return card.get("extension", {}).get("spine-cds.decision", {}).get("outcome")


def assert_check_incomplete(response) -> dict:
    """200, one card, not an approval, saying the EHR's data could not be read."""
    assert response.status_code == 200, response.get_json()
    [card] = response.get_json()["cards"]
    assert outcome(card) != "approve"
    assert re.search(r"could not (be )?(read|complete)", card["detail"], re.IGNORECASE), card["detail"]
    return card


def test_a_healthy_server_is_searched_in_parallel_and_the_order_approved(stub, call):
    stub.hold_until_in_flight = 2   # each request waits until a second one is in flight
    response = call(stub.url)
    [card] = response.get_json()["cards"]
    assert outcome(card) == "approve" and "Could not read" not in card["detail"]
    assert stub.max_in_flight >= 2
    assert len(stub.requests) == len(FETCHED_KEYS) and set(stub.authorization) == {f"Bearer {TOKEN}"}


def test_a_server_slower_than_the_deadline_is_abandoned(stub, call):
    stub.delay = SLOW
    card = assert_check_incomplete(call(stub.url))
    assert "procedures" in card["detail"] and "conditions" in card["detail"]


def test_a_slow_third_page_is_cut_off_by_the_deadline(stub, call):
    stub.delay_when = lambda path: SLOW if path.startswith("/Procedure") and "_offset=2" in path else 0.0
    card = assert_check_incomplete(call(stub.url, SPINE_CDS_FHIR_PAGE_SIZE="1"))
    assert "procedures" in card["detail"] and "conditions" not in card["detail"]


def test_endless_next_links_stop_at_the_deadline_not_the_page_cap(stub, call):
    stub.endless_next = True
    stub.delay_when = lambda path: 0.01 if "_offset" in path else 0.0
    assert_check_incomplete(call(stub.url, SPINE_CDS_FHIR_MAX_PAGES="2000"))


def test_a_server_that_is_down(call):
    assert_check_incomplete(call(closed_port_url()))


@pytest.mark.parametrize("status", [500, 503, 404])
def test_a_server_answering_an_error_status(stub, call, status):
    stub.fail_status = status
    assert_check_incomplete(call(stub.url))


def test_a_refused_token_is_a_data_gap_not_a_401_to_the_ehr(stub, call):
    stub.token = "someone-elses-token"
    assert_check_incomplete(call(stub.url))
    assert set(stub.authorization) == {f"Bearer {TOKEN}"}


@pytest.mark.parametrize("mode", ["declared", "endless"])
def test_a_huge_page_is_refused_without_reading_it(stub, call, caplog, mode):
    stub.huge_body, stub.huge_body_for = mode, "/Procedure"
    card = assert_check_incomplete(call(stub.url, SPINE_CDS_MAX_REQUEST_BYTES="200000",
                                        SPINE_CDS_DEADLINE_S="10"))
    assert "procedures" in card["detail"] and "conditions" not in card["detail"]
    assert "larger than 200000 bytes" in caplog.text
    # socket buffers hold a few MiB; a client reading on would take the 256 MiB safety net
    assert stub.body_bytes_sent < 32 << 20


@pytest.mark.parametrize("answer", [
    b'{"resourceType": "Bundle", "entry": [',                         # broken JSON
    b"[" * 100_000 + b"]" * 100_000,                                  # too deep for the parser
    "<html>Please log in</html>",                                     # an HTML page
    {"resourceType": "OperationOutcome", "issue": []},                # 200 but not a Bundle
    {"resourceType": "Bundle", "type": "searchset",                   # a Bundle of the wrong type
     "entry": [{"resource": {"resourceType": "Observation", "id": "o1", "status": "final"}}]},
], ids=["broken-json", "deep-json", "html", "not-a-bundle", "wrong-resource-type"])
def test_a_nonsense_answer(stub, call, answer):
    stub.answer_with = answer
    card = assert_check_incomplete(call(stub.url))
    assert "procedures" in card["detail"]


def test_412_only_when_a_required_key_has_neither_prefetch_nor_server(make_app):
    body = {k: v for k, v in sample().items() if k not in ("prefetch", "fhirServer")}
    response = make_app().test_client().post(SELECT, json=body)
    assert response.status_code == 412
    outcome_json = response.get_json()
    assert outcome_json["resourceType"] == "OperationOutcome"
    assert "prefetch" in outcome_json["issue"][0]["diagnostics"]
