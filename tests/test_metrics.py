"""GET /metrics: what is counted, with which labels, per app.

In-process (one app per test, plain registry).  The merge across gunicorn workers
(multiprocess mode) is tested on a real server in test_shutdown.py.
"""
from __future__ import annotations

import copy
import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cds_service.tools.cli import SAMPLES
from cds_service.errors import CdsConfigError
from cds_service.protocol.metrics import LATENCY_BUCKETS, MULTIPROC_ENV
from cds_service.record.prefetch import FETCHED_KEYS, PREFETCH
from fhir_stub import FhirStub

SELECT = "/cds-services/spine-imaging-order-select"
SOURCES = {"prefetch", "fhir", "cache", "partial", "failed", "null"}


def sample(name: str = "radiculopathy-conservative-care-failed.json") -> dict:
    return json.loads((SAMPLES / name).read_text())


def scrape(client) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one /metrics answer."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.get_data(as_text=True)) for s in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict, name: str, **labels) -> float:
    """Sum of ``name`` over every sample whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items())


def test_a_hook_call_is_counted_by_endpoint_decision_and_record_source(client):
    response = client.post(SELECT, json=sample())
    assert response.status_code == 200
    [card] = response.get_json()["cards"]
    decision = card["extension"]["spine-cds.decision"]
    samples = scrape(client)
    hook_endpoint = dict(endpoint="/cds-services/<service_id>", method="POST")
    assert value(samples, "spine_cds_http_requests_total", **hook_endpoint, status="200") == 1
    assert value(samples, "spine_cds_decisions_total", hook="order-select", program=decision["program"],
                 guideline=decision["guideline"], outcome=decision["outcome"]) == 1
    assert total(samples, "spine_cds_decisions_total") == 1
    sources = {dict(ls)["key"]: dict(ls)["source"] for (n, ls), v in samples.items()
               if n == "spine_cds_record_sources_total" and v}
    assert set(sources) == set(FETCHED_KEYS) and set(sources.values()) <= SOURCES
    assert sources["patient"] == "prefetch" and total(samples, "spine_cds_record_sources_total") == len(FETCHED_KEYS)


def test_no_spine_order_means_no_decision(client):
    body = sample()
    for entry in body["context"]["draftOrders"]["entry"]:
        for coding in entry["resource"].get("code", {}).get("coding", []):
            coding["code"] = "71045"  # a chest radiograph: not a spine CT/MRI
    assert client.post(SELECT, json=body).get_json() == {"cards": []}
    samples = scrape(client)
    assert value(samples, "spine_cds_http_requests_total", endpoint="/cds-services/<service_id>",
                 method="POST", status="200") == 1
    assert total(samples, "spine_cds_decisions_total") == 0


def test_latency_histogram_has_buckets_around_the_hook_deadline(client):
    for _ in range(3):
        client.post(SELECT, json=sample())
    client.get("/health")
    samples = scrape(client)
    hook = dict(endpoint="/cds-services/<service_id>", method="POST")
    assert value(samples, "spine_cds_http_request_duration_seconds_count", **hook) == 3
    assert value(samples, "spine_cds_http_request_duration_seconds_bucket", **hook, le="+Inf") == 3
    assert value(samples, "spine_cds_http_request_duration_seconds_count", endpoint="/health", method="GET") == 1
    for bound in ("0.5", "1.0", "2.0", "2.5", "3.0"):  # the EHR waits a few seconds: resolve them
        assert (("spine_cds_http_request_duration_seconds_bucket", tuple(sorted({**hook, "le": bound}.items())))
                in samples)
    assert list(LATENCY_BUCKETS) == sorted(LATENCY_BUCKETS) and 2.5 < 3.0 <= max(LATENCY_BUCKETS)


def test_labels_are_route_templates_never_what_the_client_sent(client):
    client.post("/cds-services/patient-jane-doe-1970", json=sample())     # unknown service: 404
    client.get("/Patient/jane-doe-1970?name=Jane")                        # no such route
    client.open("/cds-services", method="BREW")                           # a made-up method
    text = client.get("/metrics").get_data(as_text=True)
    assert "jane" not in text.lower() and "BREW" not in text
    samples = scrape(client)
    assert value(samples, "spine_cds_http_requests_total", endpoint="/cds-services/<service_id>",
                 method="POST", status="404") == 1
    assert value(samples, "spine_cds_http_requests_total", endpoint="unmatched", method="GET", status="404") == 1
    assert value(samples, "spine_cds_http_requests_total", endpoint="unmatched", method="OTHER", status="405") == 1
    rules = {rule.rule for rule in client.application.url_map.iter_rules()} | {"unmatched"}
    endpoints = {dict(ls)["endpoint"] for (n, ls) in samples if n == "spine_cds_http_requests_total"}
    assert endpoints <= rules


def test_feedback_is_counted_by_service_and_outcome(client):
    cards = [client.post(SELECT, json=sample() | {"hookInstance": f"00000000-0000-4000-8000-00000000000{n}"})
             .get_json()["cards"][0]["uuid"] for n in range(3)]
    offering = client.post(SELECT, json=sample("pacemaker-mri-contraindicated.json")).get_json()["cards"][0]
    body = {"feedback": [
        {"card": offering["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-11-22T10:00:00Z",
         "acceptedSuggestions": [{"id": offering["suggestions"][0]["uuid"]}]},
        {"card": cards[1], "outcome": "overridden", "outcomeTimestamp": "2026-11-22T10:01:00Z",
         "overrideReason": {"userComment": "seen"}},
        {"card": cards[2], "outcome": "overridden", "outcomeTimestamp": "2026-11-22T10:02:00Z",
         "overrideReason": {"userComment": "seen"}}]}
    assert client.post(SELECT + "/feedback", json=body).status_code == 200
    samples = scrape(client)
    service = "spine-imaging-order-select"
    assert value(samples, "spine_cds_feedback_items_total", service=service, outcome="accepted") == 1
    assert value(samples, "spine_cds_feedback_items_total", service=service, outcome="overridden") == 2


def test_fhir_reads_are_counted_as_fhir_then_cache(make_app):
    body = sample()
    conditions = [e["resource"] for e in body["prefetch"].pop("conditions")["entry"]]
    with FhirStub(token="t0ken") as stub:
        stub.add(*conditions)
        app = make_app(SPINE_CDS_ALLOWED_FHIR_SERVERS=stub.url)
        client = app.test_client()
        body |= {"fhirServer": stub.url, "fhirAuthorization": {
            "access_token": "t0ken", "token_type": "Bearer", "expires_in": 300, "scope": "patient/*.read",
            "subject": "spine-cds"}}
        for _ in range(2):
            assert client.post(SELECT, json=copy.deepcopy(body)).status_code == 200
        # one search per key the sample leaves out (conditions, and the notes it never sends);
        # the second call was served from the cache
        assert sorted(path.split("?")[0] for path in stub.requests) == ["/Condition", "/DocumentReference"]
    samples = scrape(client)
    assert value(samples, "spine_cds_record_sources_total", key="conditions", source="fhir") == 1
    assert value(samples, "spine_cds_record_sources_total", key="conditions", source="cache") == 1


def test_each_app_counts_alone(make_app):
    first, second = make_app().test_client(), make_app().test_client()
    first.post(SELECT, json=sample())
    assert total(scrape(first), "spine_cds_decisions_total") == 1
    assert total(scrape(second), "spine_cds_decisions_total") == 0
    assert total(scrape(second), "spine_cds_http_requests_total", endpoint="/cds-services/<service_id>") == 0


def test_metrics_need_no_token_and_count_refused_calls(make_app):
    client = make_app(SPINE_CDS_AUTH="on").test_client()
    assert client.post(SELECT, json=sample()).status_code == 401
    samples = scrape(client)
    assert value(samples, "spine_cds_http_requests_total", endpoint="/cds-services/<service_id>",
                 method="POST", status="401") == 1
    assert total(samples, "spine_cds_decisions_total") == 0


def test_multiprocess_folder_set_after_import_is_refused(make_app, tmp_path, monkeypatch):
    """The variable must be set before prometheus_client is imported; here it was not."""
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    with pytest.raises(CdsConfigError, match="before the process starts"):
        make_app()
