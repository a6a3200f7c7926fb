"""The patient-data cache: in-process and Redis backends, alone, behind the gatherer and the app.

Redis tests run against a real redis-server started by tests/redis_server.py (skipped locally
when it is not installed, a failure under CI).
"""
from __future__ import annotations

import json
import logging
import time

import pytest
import redis
import requests

from cds_service.record.cache import KEY_PREFIX, InProcessCache, RedisCache, make_cache
from cds_service.tools.cli import SAMPLES
from cds_service.errors import CdsConfigError
from cds_service.record.fhir_client import SearchResult
from cds_service.record.patient_record import RecordGatherer
from cds_service.record.prefetch import FETCHED_KEYS, PREFETCH
from cds_service.runtime.settings import load_settings
from fhir_stub import FhirStub, closed_port_url, resources_in, without_prefetch
from redis_server import start_redis, redis_server, redis_url  # noqa: F401 (fixtures)
from test_patient_record import PATIENT_ID, TOKEN, USER, make_hook, record_resources

OTHER_TOKEN = "tok-other-9d2b"
SELECT = "/cds-services/spine-imaging-order-select"
RESULT = SearchResult(({"resourceType": "Condition", "id": "c1", "note": [{"text": "Schmerz – ü ✓"}],
                        "code": {"coding": [{"code": "M54.16"}]}},), False)
KEY = ("http://ehr.example/fhir", PATIENT_ID, USER, "token-sha256", "conditions")


@pytest.fixture(params=["in-process", "redis"])
def backend(request) -> dict:
    """Settings selecting each cache backend in turn."""
    if request.param == "in-process":
        return {}
    return {"SPINE_CDS_CACHE_URL": request.getfixturevalue("redis_url")}


@pytest.fixture
def stub():
    with FhirStub(token={TOKEN, OTHER_TOKEN}) as server:
        server.add(*record_resources())
        yield server


@pytest.fixture
def make_gatherer(stub):
    """Gatherers as separate "instances": each with its own session and cache client."""
    made = []

    def make(**env) -> RecordGatherer:
        session = requests.Session()
        gatherer = RecordGatherer(load_settings({"SPINE_CDS_ALLOWED_FHIR_SERVERS": stub.url, **env}), session)
        made.append((gatherer, session))
        return gatherer

    yield make
    for gatherer, session in made:
        gatherer.close()
        session.close()


def test_in_process_values_expire_after_the_ttl():
    now = [100.0]
    cache = InProcessCache(max_entries=10, ttl_s=60, timer=lambda: now[0])
    cache.put(KEY, RESULT)
    now[0] += 59
    assert cache.get_many([KEY, KEY[:-1] + ("procedures",)]) == [RESULT, None]
    now[0] += 2
    assert cache.get(KEY) is None


def test_redis_values_round_trip_under_a_hashed_key_with_a_ttl(redis_url):
    cache = RedisCache(redis_url, ttl_s=60)
    try:
        cache.put(KEY, RESULT)
        assert cache.get(KEY) == RESULT and cache.get(KEY[:-1] + ("procedures",)) is None
    finally:
        cache.close()
    with redis.Redis.from_url(redis_url) as client:
        [stored] = client.keys("*")
        assert stored.decode().startswith(KEY_PREFIX)
        for secret in (PATIENT_ID, USER, "token-sha256", "ehr.example"):
            assert secret.encode() not in stored
        assert 0 < client.pttl(stored) <= 60_000
        assert json.loads(client.get(stored))["complete"] is False


def test_redis_values_expire_after_the_ttl(redis_url):
    cache = RedisCache(redis_url, ttl_s=0.1)
    try:
        cache.put(KEY, RESULT)
        with redis.Redis.from_url(redis_url) as client:
            [stored] = client.keys("*")
            assert 0 < client.pttl(stored) <= 100
        time.sleep(0.3)  # past the TTL: Redis must have dropped the key (no timing is asserted)
        assert cache.get(KEY) is None
    finally:
        cache.close()


def test_an_unreadable_redis_value_is_a_miss(redis_url, caplog):
    cache = RedisCache(redis_url, ttl_s=60)
    try:
        cache.put(KEY, RESULT)
        with redis.Redis.from_url(redis_url) as client:
            [stored] = client.keys("*")
            client.set(stored, b'{"complete": "yes", "resources": 5}')
        assert cache.get(KEY) is None
    finally:
        cache.close()
    assert "unreadable patient-data cache entry" in caplog.text


@pytest.mark.parametrize("url,problem", [
    ("http://cache:6379", "scheme"), ("redis://cache:port/0", "port"), ("redis://cache:6379/zero", "database"),
    ("redis://:s3cret@/0", "host"), ("unix://", "socket path")])
def test_a_bad_cache_url_stops_the_start(make_app, url, problem):
    with pytest.raises(CdsConfigError, match=problem) as info:
        make_app(SPINE_CDS_CACHE_URL=url)
    assert "SPINE_CDS_CACHE_URL" in info.value.message and "s3cret" not in info.value.message


def test_an_empty_cache_url_is_the_in_process_cache():
    assert isinstance(make_cache(load_settings({})), InProcessCache)


def test_the_cache_serves_the_same_user_and_token_only(stub, make_gatherer, backend):
    gatherer = make_gatherer(**backend)
    gatherer.gather(make_hook(stub.url))
    assert len(stub.requests) == len(FETCHED_KEYS)
    record = gatherer.gather(make_hook(stub.url))
    assert len(stub.requests) == len(FETCHED_KEYS)
    assert set(record.sources.values()) == {"cache"} and len(record.of_type("Condition")) == 2
    gatherer.gather(make_hook(stub.url, access_token=OTHER_TOKEN))
    assert len(stub.requests) == 2 * len(FETCHED_KEYS)
    assert stub.authorization[-1] == f"Bearer {OTHER_TOKEN}"
    gatherer.gather(make_hook(stub.url, user_id="Practitioner/doc-2"))
    assert len(stub.requests) == 3 * len(FETCHED_KEYS)
    gatherer.gather(make_hook(stub.url, patient_id="pat-other", context={"patientId": "pat-other", "userId": USER}))
    assert len(stub.requests) == 4 * len(FETCHED_KEYS)


def test_two_instances_share_one_redis(stub, make_gatherer, redis_url):
    first, second = make_gatherer(SPINE_CDS_CACHE_URL=redis_url), make_gatherer(SPINE_CDS_CACHE_URL=redis_url)
    first.gather(make_hook(stub.url))
    fetched = len(stub.requests)
    record = second.gather(make_hook(stub.url))
    assert len(stub.requests) == fetched == len(FETCHED_KEYS)
    assert set(record.sources.values()) == {"cache"} and record.patient["id"] == PATIENT_ID


def test_redis_down_degrades_to_no_cache(stub, make_gatherer, caplog):
    gatherer = make_gatherer(SPINE_CDS_CACHE_URL=closed_port_url().replace("http", "redis") + "/0")
    for _ in range(2):
        assert set(gatherer.gather(make_hook(stub.url)).sources.values()) == {"fhir"}
    assert len(stub.requests) == 2 * len(FETCHED_KEYS)
    assert caplog.text.count("Redis cache unavailable") == 1  # once per outage, not per key


def test_a_redis_outage_mid_life_degrades_to_the_fhir_server(stub, make_gatherer, tmp_path, caplog):
    server = start_redis(tmp_path)
    try:
        gatherer = make_gatherer(SPINE_CDS_CACHE_URL=server.url)
        gatherer.gather(make_hook(stub.url))
        assert set(gatherer.gather(make_hook(stub.url)).sources.values()) == {"cache"}
    finally:
        server.stop()
    caplog.set_level(logging.INFO)
    assert set(gatherer.gather(make_hook(stub.url)).sources.values()) == {"fhir"}
    assert len(stub.requests) == 2 * len(FETCHED_KEYS)
    assert "Redis cache unavailable" in caplog.text


def test_the_redis_cache_is_used_again_once_redis_is_back(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    server = start_redis(tmp_path)
    cache = RedisCache(server.url, ttl_s=60, retry_after_s=0)
    try:
        cache.put(KEY, RESULT)
        server.stop()
        cache.put(KEY, RESULT)
        assert cache.get(KEY) is None and "Redis cache unavailable" in caplog.text
        server.start(port=server.port)
        cache.put(KEY, RESULT)
        assert cache.get(KEY) == RESULT and "Redis cache reachable again" in caplog.text
    finally:
        cache.close()
        server.stop()


def sample_call(stub_url: str, token: str, user: str | None = None) -> dict:
    body = json.loads((SAMPLES / "radiculopathy-conservative-care-failed.json").read_text())
    return without_prefetch(body, stub_url, token, user)


def test_a_repeated_order_select_reads_nothing_again(make_app, backend):
    body = json.loads((SAMPLES / "radiculopathy-conservative-care-failed.json").read_text())
    with FhirStub(token={TOKEN, OTHER_TOKEN}) as server:
        server.add(*resources_in(body["prefetch"]))
        apps = [make_app(SPINE_CDS_ALLOWED_FHIR_SERVERS=server.url, **backend).test_client() for _ in range(2)]
        first = apps[0].post(SELECT, json=sample_call(server.url, TOKEN)).get_json()
        assert len(server.requests) == len(FETCHED_KEYS)
        again = apps[0].post(SELECT, json=sample_call(server.url, TOKEN)).get_json()
        assert len(server.requests) == len(FETCHED_KEYS)
        assert again["cards"][0]["extension"] == first["cards"][0]["extension"]
        apps[0].post(SELECT, json=sample_call(server.url, OTHER_TOKEN, "Practitioner/other-doc"))
        assert len(server.requests) == 2 * len(FETCHED_KEYS)
        apps[1].post(SELECT, json=sample_call(server.url, TOKEN))  # another instance
        shared = "SPINE_CDS_CACHE_URL" in backend
        assert len(server.requests) == (2 if shared else 3) * len(FETCHED_KEYS)
