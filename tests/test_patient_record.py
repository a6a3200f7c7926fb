"""Prefetch-first gathering with a FHIR fallback, against a real HTTP stub on 127.0.0.1."""
from __future__ import annotations

import logging
import socket
import threading
import time

import pytest
import requests

from cds_service.record.cache import PatientDataCache
from cds_service.runtime.shared_cache import InProcessCache
from cds_service.errors import CdsBadRequest, CdsPreconditionFailed, FhirUnavailable
from cds_service.record.fhir_client import FhirClient, check_fhir_server_allowed, is_public_address
from cds_service.model import HookRequest
from cds_service.record.patient_record import RecordGatherer
from cds_service.record.prefetch import (
    FETCHED_KEYS, KEY_TYPES, PREFETCH, PREFETCH_ONLY, REQUIRED_KEYS, fill_template, normalise_prefetch,
)
from cds_service.runtime.settings import load_settings
from fhir_stub import FhirStub, closed_port_url

PATIENT_ID = "pat-7f3a"
USER = "Practitioner/doc-1"
TOKEN = "tok-secret-1234"
SEARCH_TYPES = {key: types[0] for key, types in KEY_TYPES.items() if key != "patient"}


def ref(rtype: str, rid: str) -> dict:
    return {"reference": f"{rtype}/{rid}"}


def record_resources() -> list[dict]:
    """Two resources of every searched type, a Coverage with its payer, one other patient."""
    items = [{"resourceType": "Patient", "id": PATIENT_ID, "birthDate": "1970-01-01"},
             {"resourceType": "Organization", "id": "payer-1", "name": "Payer"},
             {"resourceType": "Condition", "id": "other", "subject": ref("Patient", "someone-else")}]
    for rtype in SEARCH_TYPES.values():
        field = "beneficiary" if rtype == "Coverage" else "subject"
        for n in (1, 2):
            item = {"resourceType": rtype, "id": f"{rtype.lower()}-{n}", field: ref("Patient", PATIENT_ID)}
            if rtype == "Coverage":
                item["payor"] = [ref("Organization", "payer-1")]
            items.append(item)
    return items


def bundle(resources: list[dict], next_url: str | None = None) -> dict:
    links = [{"relation": "next", "url": next_url}] if next_url else []
    return {"resourceType": "Bundle", "type": "searchset", "link": links,
            "entry": [{"resource": r} for r in resources]}


def of_type(rtype: str) -> list[dict]:
    return [r for r in record_resources() if r["resourceType"] == rtype and r["id"] != "other"]


def full_prefetch() -> dict:
    prefetch = {key: bundle(of_type(rtype)) for key, rtype in SEARCH_TYPES.items()}
    prefetch["coverage"]["entry"].append({"resource": of_type("Organization")[0]})
    prefetch["patient"] = of_type("Patient")[0]
    return prefetch


def make_hook(server: str | None, prefetch: dict | None = None, **overrides) -> HookRequest:
    values = dict(hook="order-select", hook_instance="d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
                  context={"patientId": PATIENT_ID, "userId": USER}, patient_id=PATIENT_ID,
                  user_id=USER, draft_orders=(), selections=(), fhir_server=server,
                  access_token=TOKEN, prefetch=prefetch or {})
    return HookRequest(**(values | overrides))


@pytest.fixture
def stub():
    with FhirStub(token=TOKEN) as server:
        server.add(*record_resources())
        yield server


@pytest.fixture
def session():
    with requests.Session() as shared:
        yield shared


@pytest.fixture
def make_gatherer(stub, session, tmp_path):
    """Build gatherers whose settings allow the stub, with a cache of this test's own; all are
    closed after the test."""
    made = []

    def make(**env) -> RecordGatherer:
        settings = load_settings({"SPINE_CDS_ALLOWED_FHIR_SERVERS": stub.url, "SPINE_CDS_DATA_DIR": str(tmp_path), **env})
        made.append(RecordGatherer(settings, session))
        return made[-1]

    yield make
    for gatherer in made:
        gatherer.close()


def test_templates_are_cds_hooks_2_0_and_cover_the_keys():
    assert set(PREFETCH) == set(KEY_TYPES) == {
        "patient", "coverage", "conditions", "observations", "procedures", "imagingStudies",
        "medicationRequests", "medicationStatements", "devices", "diagnosticReports", "serviceRequests",
        "questionnaireResponses", "userRole", "documentReferences"}
    assert REQUIRED_KEYS == {"patient", "conditions", "procedures", "medicationRequests",
                             "observations", "imagingStudies"}
    assert PREFETCH["patient"] == "Patient/{{context.patientId}}"
    assert "_include=Coverage:payor" in PREFETCH["coverage"]
    assert "_sort=-authored" in PREFETCH["serviceRequests"]
    for key in FETCHED_KEYS:
        assert "{{context.patientId}}" in PREFETCH[key] and "draftOrders" not in PREFETCH[key]
    assert PREFETCH_ONLY == {"userRole"} and PREFETCH["userRole"] == "PractitionerRole/{{userPractitionerRoleId}}"


def test_full_prefetch_makes_no_http_call(stub, make_gatherer):
    record = make_gatherer().gather(make_hook(stub.url, full_prefetch()))
    assert stub.requests == [] and stub.connections == 0
    assert set(record.sources.values()) == {"prefetch"}
    assert record.patient["id"] == PATIENT_ID
    assert len(record.of_type("Condition")) == 2
    assert [o["id"] for o in record.of_type("Organization")] == ["payer-1"]


def test_omitted_keys_are_fetched_in_parallel(stub, make_gatherer):
    stub.hold_until_in_flight = 3   # each request waits until three are in flight at once
    record = make_gatherer().gather(make_hook(stub.url))
    assert len(stub.requests) == len(FETCHED_KEYS)
    assert stub.max_in_flight >= 3
    assert set(record.sources.values()) == {"fhir"}
    assert record.patient["id"] == PATIENT_ID
    assert {c["id"] for c in record.of_type("Condition")} == {"condition-1", "condition-2"}
    assert [o["id"] for o in record.of_type("Organization")] == ["payer-1"]  # via _include


def test_null_key_means_no_data_and_no_fetch(stub, make_gatherer):
    prefetch = full_prefetch() | {"conditions": None, "coverage": None}
    record = make_gatherer().gather(make_hook(stub.url, prefetch))
    assert stub.requests == []
    assert record.sources["conditions"] == record.sources["coverage"] == "null"
    assert record.of_type("Condition") == ()


def test_operation_outcome_key_is_fetched(stub, make_gatherer):
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
    record = make_gatherer().gather(make_hook(stub.url, full_prefetch() | {"conditions": outcome}))
    assert [path.split("?")[0] for path in stub.requests] == ["/Condition"]
    assert record.sources["conditions"] == "fhir"
    assert len(record.of_type("Condition")) == 2


@pytest.mark.parametrize("junk", ["text", 42, [], {"no": "type"}, {"resourceType": "Bundle", "entry": 5}])
def test_junk_prefetch_value_is_failed_then_fetched(stub, make_gatherer, junk):
    assert normalise_prefetch(junk).state == "failed"
    record = make_gatherer().gather(make_hook(stub.url, full_prefetch() | {"procedures": junk}))
    assert record.sources["procedures"] == "fhir" and len(record.of_type("Procedure")) == 2


def test_normalise_prefetch_reads_bundles_defensively():
    condition = {"resourceType": "Condition", "id": "c1"}
    value = {"resourceType": "Bundle", "entry": [
        {"resource": condition}, {"resourceType": "Condition", "id": "c2"},
        {"search": {"mode": "outcome"}, "resource": {"resourceType": "Basic"}},
        {"resource": {"resourceType": "OperationOutcome"}}, {"fullUrl": "x"}, "junk"]}
    got = normalise_prefetch(value)
    assert got.state == "ok" and [r["id"] for r in got.resources] == ["c1", "c2"]
    assert normalise_prefetch(condition).resources == (condition,)
    assert normalise_prefetch(None).state == "null"
    assert normalise_prefetch({"resourceType": "Bundle"}).state == "ok"  # empty search (3.0 style)


def test_paged_prefetch_bundle_fetches_the_remaining_pages(stub, make_gatherer):
    conditions = [{"resourceType": "Condition", "id": f"c{n}", "subject": ref("Patient", PATIENT_ID)}
                  for n in range(5)]
    stub.resources["Condition"] = conditions
    first = bundle(conditions[:2], f"{stub.url}/Condition?patient={PATIENT_ID}&_count=2&_offset=2")
    record = make_gatherer().gather(make_hook(stub.url, full_prefetch() | {"conditions": first}))
    assert len(stub.requests) == 2  # pages 2 and 3
    assert record.sources["conditions"] == "fhir"
    assert [c["id"] for c in record.of_type("Condition")] == [f"c{n}" for n in range(5)]


def test_paged_prefetch_without_server_is_partial_not_412(make_gatherer):
    first = bundle(of_type("Condition"), "https://ehr.example/fhir/Condition?page=2")
    record = make_gatherer().gather(make_hook(None, full_prefetch() | {"conditions": first}))
    assert record.sources["conditions"] == "partial"
    assert len(record.of_type("Condition")) == 2


def test_paged_prefetch_with_foreign_next_link_stays_partial(stub, make_gatherer):
    with FhirStub() as foreign:
        first = bundle(of_type("Condition"), f"{foreign.url}/Condition?patient={PATIENT_ID}&_offset=2")
        record = make_gatherer().gather(make_hook(stub.url, full_prefetch() | {"conditions": first}))
        assert foreign.connections == 0
    assert record.sources["conditions"] == "partial" and len(record.of_type("Condition")) == 2


def test_next_links_are_followed_up_to_the_page_cap(stub, make_gatherer):
    stub.endless_next = True
    record = make_gatherer(SPINE_CDS_FHIR_MAX_PAGES="3").gather(
        make_hook(stub.url, full_prefetch() | {"conditions": None, "procedures": {"resourceType": "OperationOutcome"}}))
    assert len(stub.requests) == 3
    assert record.sources["procedures"] == "partial"


def test_newest_n_service_requests_read_one_page_only(stub, make_gatherer):
    stub.endless_next = True
    prefetch = full_prefetch()
    del prefetch["serviceRequests"]
    record = make_gatherer().gather(make_hook(stub.url, prefetch))
    assert len(stub.requests) == 1 and "_sort=-authored" in stub.requests[0]
    assert record.sources["serviceRequests"] == "fhir"
    paged = bundle(of_type("ServiceRequest"), f"{stub.url}/ServiceRequest?_offset=50")
    record = make_gatherer().gather(make_hook(stub.url, full_prefetch() | {"serviceRequests": paged}))
    assert len(stub.requests) == 1 and record.sources["serviceRequests"] == "prefetch"


def test_cross_origin_next_link_is_ignored(stub, session):
    settings = load_settings({"SPINE_CDS_FHIR_PAGE_SIZE": "1"})
    with FhirStub(token=TOKEN) as foreign:
        stub.next_base = foreign.url
        result = FhirClient(stub.url, TOKEN, session, settings).search_result(f"Condition?patient={PATIENT_ID}")
        assert foreign.connections == 0
    assert not result.complete and len(result.resources) == 1
    assert len(stub.requests) == 1 and "_count=1" in stub.requests[0]


def test_token_is_sent_as_bearer(stub, make_gatherer):
    make_gatherer().gather(make_hook(stub.url, full_prefetch() | {"patient": None, "conditions": None} |
                                     {"coverage": {"resourceType": "OperationOutcome"}}))
    assert stub.authorization == [f"Bearer {TOKEN}"]


def test_refused_token_marks_keys_failed_without_crash(stub, make_gatherer, session, caplog):
    hook = make_hook(stub.url, {"patient": of_type("Patient")[0]}, access_token="wrong-token")
    record = make_gatherer().gather(hook)
    assert record.sources["patient"] == "prefetch"
    assert {v for k, v in record.sources.items() if k != "patient"} == {"failed"}
    with pytest.raises(FhirUnavailable, match="the access token was refused") as info:
        FhirClient(stub.url, "wrong-token", session, load_settings({})).search("Condition")
    assert "wrong-token" not in info.value.message and "wrong-token" not in caplog.text


@pytest.mark.parametrize("mode", ["fail_status", "not_json"])
def test_server_errors_mark_keys_failed(stub, make_gatherer, mode):
    setattr(stub, mode, 500 if mode == "fail_status" else True)
    record = make_gatherer().gather(make_hook(stub.url, full_prefetch() | {"conditions": None} |
                                              {"observations": {"resourceType": "OperationOutcome"}}))
    assert record.sources["observations"] == "failed" and record.sources["conditions"] == "null"


def test_slow_server_times_out_and_marks_failed(stub, make_gatherer):
    stub.delay = 5  # the data would arrive after 5 s: "failed" proves the 0.2 s timeout worked
    record = make_gatherer(SPINE_CDS_FHIR_TIMEOUT_S="0.2").gather(make_hook(stub.url))
    assert set(record.sources.values()) == {"failed"}
    assert record.patient is None


class StuckCache(PatientDataCache):
    """Stores only once released: a search stuck after its last request, which no timeout ends."""

    def __init__(self):
        super().__init__(InProcessCache(max_bytes=1 << 20), ttl_s=60)
        self.release = threading.Event()

    def put(self, key, value) -> None:
        self.release.wait(30)
        super().put(key, value)


def test_searches_running_at_the_deadline_are_abandoned(stub, session, caplog):
    cache = StuckCache()
    settings = load_settings({"SPINE_CDS_ALLOWED_FHIR_SERVERS": stub.url, "SPINE_CDS_DEADLINE_S": "0.3"})
    try:
        with RecordGatherer(settings, session, cache=cache) as gatherer:
            record = gatherer.gather(make_hook(stub.url, full_prefetch() | {"conditions": {}, "procedures": {}}))
            cache.release.set()
    finally:
        cache.release.set()
    assert record.sources["conditions"] == record.sources["procedures"] == "failed"
    assert record.sources["patient"] == "prefetch" and len(stub.requests) == 2
    assert caplog.text.count("abandoned at the hook's deadline") == 2


def test_searches_still_queued_at_the_deadline_are_never_sent(stub, make_gatherer):
    stub.delay = 5
    gatherer = make_gatherer(SPINE_CDS_DEADLINE_S="0.3", SPINE_CDS_FHIR_TIMEOUT_S="30",
                             SPINE_CDS_FHIR_WORKERS="1")
    record = gatherer.gather(make_hook(stub.url))
    gatherer.close()  # waits for the one running search
    assert set(record.sources.values()) == {"failed"}
    assert len(stub.requests) < len(FETCHED_KEYS)


def test_threads_stay_bounded_when_every_call_times_out(stub, make_gatherer):
    stub.delay = 5
    gatherer = make_gatherer(SPINE_CDS_DEADLINE_S="0.2", SPINE_CDS_FHIR_WORKERS="3")
    for _ in range(4):
        assert set(gatherer.gather(make_hook(stub.url)).sources.values()) == {"failed"}
    assert sum(t.name.startswith("fhir-search") for t in threading.enumerate()) <= 3


def test_a_hanging_dns_lookup_is_bounded_by_the_deadline(monkeypatch, session, caplog):
    release = threading.Event()
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: release.wait(30) and [])
    settings = load_settings({"SPINE_CDS_DEADLINE_S": "0.2"})
    try:
        with RecordGatherer(settings, session) as gatherer:
            record = gatherer.gather(make_hook("https://ehr.example/fhir", full_prefetch() | {"conditions": {}}))
            release.set()
    finally:
        release.set()
    assert record.sources["conditions"] == "failed" and record.sources["patient"] == "prefetch"
    assert "not resolved before the hook's deadline" in caplog.text


def deadline_client(stub, session, seconds: float, **env) -> FhirClient:
    settings = load_settings({"SPINE_CDS_FHIR_TIMEOUT_S": "30", **env})
    return FhirClient(stub.url, TOKEN, session, settings, deadline=time.monotonic() + seconds)


def test_a_request_timeout_never_outlasts_the_deadline(stub, session):
    stub.delay = 5  # a 30 s timeout would wait and get the data; the deadline leaves 0.3 s
    with pytest.raises(FhirUnavailable, match="in time"):
        deadline_client(stub, session, 0.3).search(f"Condition?patient={PATIENT_ID}")
    assert len(stub.requests) == 1


def test_paging_stops_at_the_deadline(stub, session):
    stub.endless_next = True
    stub.delay_when = lambda path: 0.01
    client = deadline_client(stub, session, 0.3, SPINE_CDS_FHIR_MAX_PAGES="2000")
    with pytest.raises(FhirUnavailable, match="in time"):
        client.search(f"Condition?patient={PATIENT_ID}")
    assert len(stub.requests) < 2000


def test_a_trickling_body_stops_at_the_deadline(stub, session):
    stub.huge_body, stub.huge_body_pause = "endless", 0.02  # 20 MB would take 6 s to reach the cap
    with pytest.raises(FhirUnavailable, match="in time|part-way"):
        deadline_client(stub, session, 0.3).search(f"Condition?patient={PATIENT_ID}")


def test_no_request_starts_after_the_deadline(stub, session):
    with pytest.raises(FhirUnavailable, match="in time"):
        deadline_client(stub, session, -1).read("Patient", PATIENT_ID)
    assert stub.requests == []


@pytest.mark.parametrize("mode", ["declared", "endless"])
def test_a_body_over_the_cap_is_refused(stub, session, mode):
    stub.huge_body = mode
    settings = load_settings({"SPINE_CDS_MAX_REQUEST_BYTES": "100000"})
    with pytest.raises(FhirUnavailable, match="larger than 100000 bytes"):
        FhirClient(stub.url, TOKEN, session, settings).search("Condition")
    assert stub.body_bytes_sent < 32 << 20


def test_the_size_cap_holds_for_the_whole_search_not_each_page(stub, session):
    stub.resources["Condition"] = [{"resourceType": "Condition", "id": f"c{n}", "note": [{"text": "x" * 5000}],
                                    "subject": ref("Patient", PATIENT_ID)} for n in range(10)]
    settings = load_settings({"SPINE_CDS_MAX_REQUEST_BYTES": "20000", "SPINE_CDS_FHIR_PAGE_SIZE": "2",
                              "SPINE_CDS_FHIR_MAX_PAGES": "10"})
    with pytest.raises(FhirUnavailable, match="larger than"):
        FhirClient(stub.url, TOKEN, session, settings).search(f"Condition?patient={PATIENT_ID}")
    assert 1 < len(stub.requests) < 5  # each page of ~10 kB fits; the third does not


def test_a_server_that_is_down_marks_keys_failed(session):
    url = closed_port_url()
    with RecordGatherer(load_settings({"SPINE_CDS_ALLOWED_FHIR_SERVERS": url}), session) as gatherer:
        record = gatherer.gather(make_hook(url, full_prefetch() | {"conditions": {}}))
    assert record.sources["conditions"] == "failed" and record.sources["procedures"] == "prefetch"


def test_resources_of_the_wrong_type_fail_the_key(stub, make_gatherer, caplog):
    stub.answer_with = bundle(of_type("Observation"))
    record = make_gatherer().gather(make_hook(stub.url))
    assert record.sources["observations"] == "fhir"
    assert record.sources["conditions"] == record.sources["procedures"] == "failed"
    assert record.of_type("Condition") == () and len(record.of_type("Observation")) == 2
    assert "answered the conditions search with 2 resource(s) of a type it cannot return" in caplog.text


def test_a_resource_type_the_server_made_up_is_never_echoed_into_a_log_line(stub, make_gatherer, caplog):
    """#14 finding 12: the type name is the FHIR server's text; a log line counts it, never quotes it."""
    stub.answer_with = bundle([{"resourceType": "Evil\nFORGED log line user=admin", "id": "x"}])
    record = make_gatherer().gather(make_hook(stub.url))
    assert record.sources["conditions"] == "failed"
    assert "FORGED" not in caplog.text and "Evil" not in caplog.text
    assert "1 resource(s) of a type it cannot return" in caplog.text


def test_a_failed_search_is_not_cached(stub, make_gatherer):
    gatherer = make_gatherer()
    stub.fail_status = 500
    gatherer.gather(make_hook(stub.url))
    stub.fail_status = None
    record = gatherer.gather(make_hook(stub.url))
    assert set(record.sources.values()) == {"fhir"} and len(stub.requests) == 2 * len(FETCHED_KEYS)


def test_cache_serves_same_user_and_token_only(stub, make_gatherer):
    gatherer = make_gatherer()
    gatherer.gather(make_hook(stub.url))
    first = len(stub.requests)
    record = gatherer.gather(make_hook(stub.url))
    assert len(stub.requests) == first
    assert set(record.sources.values()) == {"cache"} and len(record.of_type("Condition")) == 2
    stub.token = "tok-other"
    gatherer.gather(make_hook(stub.url, access_token="tok-other"))
    assert len(stub.requests) == 2 * first
    gatherer.gather(make_hook(stub.url, access_token="tok-other", user_id="Practitioner/doc-2"))
    assert len(stub.requests) == 3 * first


def test_prefetched_data_is_not_cached(stub, make_gatherer):
    gatherer = make_gatherer()
    gatherer.gather(make_hook(stub.url, full_prefetch()))
    gatherer.gather(make_hook(stub.url))
    assert len(stub.requests) == len(FETCHED_KEYS)


def test_missing_required_key_without_server_is_412(make_gatherer):
    prefetch = full_prefetch()
    del prefetch["conditions"], prefetch["procedures"]
    with pytest.raises(CdsPreconditionFailed) as info:
        make_gatherer().gather(make_hook(None, prefetch))
    assert "conditions, procedures" in info.value.message and "fhirServer" in info.value.message
    assert info.value.status == 412


def test_missing_optional_key_without_server_is_failed(make_gatherer):
    prefetch = full_prefetch()
    del prefetch["coverage"]
    record = make_gatherer().gather(make_hook(None, prefetch))
    assert record.sources["coverage"] == "failed" and record.sources["conditions"] == "prefetch"


def test_loopback_server_not_allowlisted_is_refused_without_connecting(stub, session):
    with RecordGatherer(load_settings({}), session) as gatherer:
        with pytest.raises(CdsBadRequest, match="SPINE_CDS_ALLOWED_FHIR_SERVERS"):
            gatherer.gather(make_hook(stub.url))
        https_url = stub.url.replace("http://", "https://")
        with pytest.raises(CdsBadRequest, match="loopback, private"):
            gatherer.gather(make_hook(https_url))
    assert stub.connections == 0


@pytest.fixture
def resolves_to(monkeypatch):
    """Make every host resolve to the given addresses."""
    def install(*addresses: str) -> None:
        def fake(host, port, *args, **kwargs):
            return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                     (a, port)) for a in addresses]
        monkeypatch.setattr(socket, "getaddrinfo", fake)
    return install


@pytest.mark.parametrize("address", [
    "10.1.2.3", "172.16.0.9", "192.168.1.1", "127.0.0.1", "169.254.169.254", "0.0.0.0",
    "100.64.0.1", "224.0.0.1", "240.0.0.1", "::1", "::", "fe80::1%eth0", "fc00::1", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:7f00:1::1"])
def test_https_server_on_non_public_address_is_refused(resolves_to, address):
    resolves_to(address)
    assert not is_public_address(address)
    with pytest.raises(CdsBadRequest, match="SPINE_CDS_ALLOWED_FHIR_SERVERS"):
        check_fhir_server_allowed("https://ehr.example/fhir", load_settings({}))


def test_https_server_on_public_addresses_is_allowed(resolves_to):
    resolves_to("93.184.216.34", "2606:2800:220:1::1")
    check_fhir_server_allowed("https://ehr.example/fhir", load_settings({}))
    resolves_to("93.184.216.34", "10.0.0.1")  # one private answer is enough to refuse
    with pytest.raises(CdsBadRequest):
        check_fhir_server_allowed("https://ehr.example/fhir", load_settings({}))


def test_allowlist_and_scheme_rules(resolves_to):
    resolves_to("127.0.0.1")
    settings = load_settings({"SPINE_CDS_ALLOWED_FHIR_SERVERS": "http://LOCALHOST:8080/fhir/"})
    check_fhir_server_allowed("http://localhost:8080/fhir", settings)
    check_fhir_server_allowed("http://localhost:8080/fhir/", settings)
    for url in ("http://ehr.example/fhir", "ftp://ehr.example/fhir", "not a url", "http://localhost:8080/other"):
        with pytest.raises(CdsBadRequest):
            check_fhir_server_allowed(url, settings)


def test_unresolvable_host_marks_keys_failed(monkeypatch, session):
    def fail(*args, **kwargs):
        raise socket.gaierror("no such host")
    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with RecordGatherer(load_settings({}), session) as gatherer:
        record = gatherer.gather(make_hook("https://nowhere.example/fhir", full_prefetch() | {"conditions": {}}))
    assert record.sources["conditions"] == "failed" and record.sources["patient"] == "prefetch"


def test_fill_template_quotes_values_and_needs_every_token():
    assert fill_template("Patient/{{context.patientId}}", {"patientId": "a/b?c"}) == "Patient/a%2Fb%3Fc"
    assert fill_template("Encounter/{{context.encounterId}}", {"patientId": "p"}) is None
    assert fill_template("x?p={{userPractitionerId}}", {"userId": "Practitioner/u1"}) == "x?p=u1"


def test_duplicate_resources_are_kept_once(make_gatherer):
    prefetch = full_prefetch()
    prefetch["conditions"]["entry"] *= 2
    record = make_gatherer().gather(make_hook(None, prefetch))
    assert [c["id"] for c in record.of_type("Condition")] == ["condition-1", "condition-2"]


def test_logs_hold_no_patient_id_or_token(stub, make_gatherer, caplog):
    caplog.set_level(logging.INFO)
    stub.endless_next = True
    make_gatherer(SPINE_CDS_FHIR_MAX_PAGES="2").gather(make_hook(stub.url))
    assert "patient record in" in caplog.text
    assert PATIENT_ID not in caplog.text and TOKEN not in caplog.text



def test_the_payer_organization_is_read_when_the_server_ignores_include(stub, make_gatherer):
    """#14 finding 15: Medplum's engine ignores ``_include=Coverage:payor``; the payer, which routes
    the order to its program, must then be read by reference (one extra read)."""
    stub.ignore_include = True
    record = make_gatherer().gather(make_hook(stub.url))
    assert [o["id"] for o in record.of_type("Organization")] == ["payer-1"]
    assert stub.requests.count("/Organization/payer-1") == 1 and len(stub.requests) == len(FETCHED_KEYS) + 1


def test_a_payer_organization_that_cannot_be_read_leaves_the_payer_unknown(stub, make_gatherer):
    stub.ignore_include = True
    stub.resources["Organization"] = []   # the reference leads nowhere: 404
    record = make_gatherer().gather(make_hook(stub.url))
    assert record.of_type("Organization") == () and record.sources["coverage"] == "fhir"
