"""The no-prefetch path end to end, against a real FHIR search engine: Medplum's FhirRouter over
its MemoryRepository (tests/fhir_server/), loaded with the synthetic patients by transaction.

Every test posts hook requests with no prefetch, only ``fhirServer`` and ``fhirAuthorization``,
through the real Flask app, and checks the cards and what the FHIR server saw (its request log,
tokens and the most requests in flight).  Nothing is timed: slowness is made by the server's
control endpoint and judged by counts and content.  Timeouts are generous except in the slow
server test, so a loaded machine cannot fail the others.
"""
from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass

import medplum as harness
import pytest
from cds_service.tools.patients import as_prefetch, describe, hook_request, load_bundle, local_ids, patient_files
from medplum import TOKENS, USERS, MedplumServer, decisions, start_medplum

from cds_service.record.prefetch import FETCHED_KEYS, PREFETCH

GENEROUS = {"SPINE_CDS_FHIR_TIMEOUT_S": "20", "SPINE_CDS_DEADLINE_S": "60", "SPINE_CDS_REPEAT_WINDOW_S": "0"}
ALICE, BOB, ALICE_RENEWED = TOKENS
GAP_LINE = "Could not read from the EHR"


@dataclass
class Loaded:
    """The running server and, per patient file stem, its Bundle and server ids."""

    server: MedplumServer
    patients: dict[str, tuple[dict, dict[str, str]]]

    def patient(self, stem: str) -> tuple[dict, dict[str, str]]:
        return self.patients[stem]


@pytest.fixture(scope="module")
def medplum():
    server = start_medplum()
    try:
        patients = {}
        for path in patient_files():
            bundle = load_bundle(path)
            patients[path.stem] = (bundle, server.load(bundle))
        yield Loaded(server, patients)
    finally:
        server.stop()


@pytest.fixture
def fhir(medplum):
    """The loaded server, its delay and failure switched off and its counters reset."""
    medplum.server.control()
    yield medplum
    medplum.server.control()


def service(make_app, server: MedplumServer, **settings):
    return make_app(SPINE_CDS_ALLOWED_FHIR_SERVERS=server.url, **{**GENEROUS, **settings}).test_client()


def call(client, body: dict) -> dict:
    response = client.post(f"/cds-services/spine-imaging-{body['hook']}", json=body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def patient_id(ids: dict[str, str], bundle: dict) -> str:
    return ids[bundle["entry"][0]["fullUrl"]].split("/")[1]


def expected_paths(pid: str) -> set[str]:
    """The path of each prefetch template's read or search for this patient."""
    return {"/" + template.split("?")[0].replace("{{context.patientId}}", pid) for template in (PREFETCH[k] for k in FETCHED_KEYS)}


def test_every_read_carries_exactly_the_token_the_ehr_gave_us(fhir, make_app):
    bundle, ids = fhir.patient("nia-radiculopathy-conservative-care")
    client = service(make_app, fhir.server)
    response = call(client, hook_request(bundle, ids, fhir_server=fhir.server.url, token=ALICE))
    stats = fhir.server.stats()
    assert stats["byToken"] == {ALICE: len(FETCHED_KEYS)}, "one read or search per prefetch key, each with our token"
    assert {r["path"] for r in stats["requests"]} == expected_paths(patient_id(ids, bundle))
    assert all(f"patient={patient_id(ids, bundle)}" in r["query"] for r in stats["requests"] if r["query"])
    assert stats["byStatus"] == {"200": len(FETCHED_KEYS)}
    [decision] = decisions(response)
    assert (decision["outcome"], decision["program"], decision["routedBy"]) == ("approve", "nia", "payer")


@pytest.mark.parametrize("token, fail_status", [(None, None), (ALICE, 401), (ALICE, 500)],
                         ids=["no-fhirAuthorization", "token-refused-401", "server-error-500"])
def test_a_refusing_or_failing_server_gives_a_200_card_that_approves_nothing(fhir, make_app, token, fail_status):
    bundle, ids = fhir.patient("nia-radiculopathy-conservative-care")
    fhir.server.control(fail_status=fail_status)
    client = service(make_app, fhir.server)
    response = call(client, hook_request(bundle, ids, fhir_server=fhir.server.url, token=token))
    stats = fhir.server.stats()
    assert stats["byToken"] == {token or "(none)": len(FETCHED_KEYS)}
    assert stats["byStatus"] == {str(fail_status or 401): len(FETCHED_KEYS)}, "without a token the server answers 401"
    [card] = response["cards"]
    assert card["extension"]["spine-cds.decision"]["outcome"] != "approve"
    assert GAP_LINE in card["detail"]


def test_every_page_is_read_and_decides_as_the_full_prefetch_does(fhir, make_app):
    bundle, ids = fhir.patient("healthhelp-spine-infection-labs")
    observations = sum(e["resource"]["resourceType"] == "Observation" for e in bundle["entry"])
    client = service(make_app, fhir.server, SPINE_CDS_FHIR_PAGE_SIZE="10", SPINE_CDS_FHIR_MAX_PAGES="20")
    via_server = call(client, hook_request(bundle, ids, fhir_server=fhir.server.url, token=ALICE))
    stats = fhir.server.stats()
    assert stats["byPath"]["/Observation"] == math.ceil(observations / 10) > 2
    assert stats["byToken"] == {ALICE: stats["total"]}, "next links are followed with the same token"
    via_prefetch = call(client, hook_request(bundle, local_ids(bundle), prefetch=as_prefetch(bundle)))
    assert decisions(via_server, ids) == decisions(via_prefetch, local_ids(bundle))
    assert decisions(via_server)[0]["outcome"] == describe(bundle)["expect"]["outcome"] == "approve"


def test_the_decisive_labs_are_only_on_later_pages(fhir, make_app):
    """The paging test above means something: stop after 2 pages and the labs are never seen."""
    bundle, ids = fhir.patient("healthhelp-spine-infection-labs")
    client = service(make_app, fhir.server, SPINE_CDS_FHIR_PAGE_SIZE="10", SPINE_CDS_FHIR_MAX_PAGES="2")
    response = call(client, hook_request(bundle, ids, fhir_server=fhir.server.url, token=ALICE))
    assert fhir.server.stats()["byPath"]["/Observation"] == 2
    assert decisions(response)[0]["outcome"] != "approve"


def test_searches_for_one_call_run_in_parallel(fhir, make_app):
    bundle, ids = fhir.patient("nia-radiculopathy-conservative-care")
    fhir.server.control(delay_s=0.3)
    client = service(make_app, fhir.server)
    response = call(client, hook_request(bundle, ids, fhir_server=fhir.server.url, token=ALICE))
    stats = fhir.server.stats()
    assert stats["total"] == len(FETCHED_KEYS)
    assert stats["maxInFlight"] >= 2, "searches were sent one after another"
    assert decisions(response)[0]["outcome"] == "approve"


def test_a_repeated_order_select_and_the_order_sign_after_it_read_nothing_new(fhir, make_app):
    bundle, ids = fhir.patient("nia-radiculopathy-conservative-care")
    client = service(make_app, fhir.server)
    first = call(client, hook_request(bundle, ids, fhir_server=fhir.server.url, token=ALICE))
    assert fhir.server.stats()["total"] == len(FETCHED_KEYS)
    fhir.server.control()
    again = call(client, hook_request(bundle, ids, fhir_server=fhir.server.url, token=ALICE))
    sign = call(client, hook_request(bundle, ids, hook="order-sign", fhir_server=fhir.server.url, token=ALICE))
    assert fhir.server.stats()["total"] == 0, "order-select warms the cache that order-sign uses"
    assert decisions(first) == decisions(again) == decisions(sign)


@pytest.mark.parametrize("user, token", [(USERS["bob"], BOB), (USERS["alice"], ALICE_RENEWED)],
                         ids=["another-user", "same-user-new-token"])
def test_another_users_or_tokens_call_reads_for_itself(fhir, make_app, user, token):
    bundle, ids = fhir.patient("nia-radiculopathy-conservative-care")
    client = service(make_app, fhir.server)
    call(client, hook_request(bundle, ids, fhir_server=fhir.server.url, token=ALICE))
    fhir.server.control()
    response = call(client, hook_request(bundle, ids, fhir_server=fhir.server.url, token=token, user=user))
    assert fhir.server.stats()["byToken"] == {token: len(FETCHED_KEYS)}, "a cache entry served another caller"
    assert decisions(response)[0]["outcome"] == "approve"


def test_a_server_slower_than_the_timeout_gives_a_200_card_saying_what_could_not_be_read(fhir, make_app):
    bundle, ids = fhir.patient("nia-radiculopathy-conservative-care")
    fhir.server.control(delay_s=1.0)
    client = service(make_app, fhir.server, SPINE_CDS_FHIR_TIMEOUT_S="0.3")
    response = call(client, hook_request(bundle, ids, fhir_server=fhir.server.url, token=ALICE))
    [card] = response["cards"]
    assert card["extension"]["spine-cds.decision"]["outcome"] != "approve"
    assert GAP_LINE in card["detail"]
    assert fhir.server.stats()["total"] >= 1


@pytest.mark.parametrize("stem", [path.stem for path in patient_files()])
def test_each_patient_decides_the_same_from_the_server_as_from_a_full_prefetch(fhir, make_app, stem):
    bundle, ids = fhir.patient(stem)
    client = service(make_app, fhir.server)
    via_server = call(client, hook_request(bundle, ids, fhir_server=fhir.server.url, token=BOB, user=USERS["bob"]))
    via_prefetch = call(client, hook_request(bundle, local_ids(bundle), prefetch=as_prefetch(bundle)))
    assert decisions(via_server, ids) == decisions(via_prefetch, local_ids(bundle))
    assert decisions(via_server)[0]["outcome"] == describe(bundle)["expect"]["outcome"]
    assert GAP_LINE not in via_server["cards"][0]["detail"]


@pytest.mark.parametrize("ci", ["", "1"])
@pytest.mark.parametrize("node", ["missing", "v18.19.0"])
def test_without_a_usable_node_these_tests_skip_locally_but_fail_in_ci(monkeypatch, ci, node):
    if node == "missing":
        monkeypatch.setattr(harness.shutil, "which", lambda name: None)
    else:
        monkeypatch.setattr(harness.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, node + "\n"))
    monkeypatch.setenv("SPINE_CDS_CI", ci)
    with pytest.raises(pytest.fail.Exception if ci else pytest.skip.Exception, match="npm ci --prefix tests/fhir_server"):
        harness.start_medplum()
