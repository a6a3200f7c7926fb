"""The patient-data cache: disk (shared by a host's workers), in-process and Redis backends, alone, behind the gatherer and the app.

Redis tests run against a real redis-server started by tests/redis_server.py (skipped locally
when it is not installed, a failure under CI).
"""
from __future__ import annotations

import json
import logging
import os
import stat
import time

import pytest
import redis
import requests

from cds_service.record.cache import NAMESPACE, PatientDataCache
from cds_service.runtime.shared_cache import (KEY_PREFIX, DiskCache, InProcessCache, RedisCache, hashed_key,
                                              open_shared_cache)
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


@pytest.fixture(params=["disk", "memory", "redis"])
def backend(request, tmp_path) -> dict:
    """Settings selecting each cache backend in turn (the disk cache in this test's own folder)."""
    if request.param == "disk":
        return {"SPINE_CDS_DATA_DIR": str(tmp_path)}
    if request.param == "memory":
        return {"SPINE_CDS_CACHE_URL": "memory"}
    return {"SPINE_CDS_CACHE_URL": request.getfixturevalue("redis_url")}


@pytest.fixture
def stub():
    with FhirStub(token={TOKEN, OTHER_TOKEN}) as server:
        server.add(*record_resources())
        yield server


@pytest.fixture
def make_gatherer(stub, tmp_path):
    """Gatherers as separate "instances": each with its own session and cache client."""
    made = []

    def make(**env) -> RecordGatherer:
        session = requests.Session()
        settings = {"SPINE_CDS_ALLOWED_FHIR_SERVERS": stub.url, "SPINE_CDS_DATA_DIR": str(tmp_path), **env}
        gatherer = RecordGatherer(load_settings(settings), session)
        made.append((gatherer, session))
        return gatherer

    yield make
    for gatherer, session in made:
        gatherer.close()
        session.close()


def test_in_process_values_expire_after_their_ttl():
    now = [100.0]
    cache = PatientDataCache(InProcessCache(max_bytes=1 << 20, timer=lambda: now[0]), ttl_s=60)
    cache.put(KEY, RESULT)
    now[0] += 59
    assert cache.get_many([KEY, KEY[:-1] + ("procedures",)]) == [RESULT, None]
    now[0] += 2
    assert cache.get(KEY) is None


def test_the_in_process_cache_is_bounded_in_bytes():
    cache = InProcessCache(max_bytes=100_000)
    for n in range(200):
        cache.put_json("test", str(n), "x" * 5000, ttl_s=60)
    kept = [n for n in range(200) if cache.get_json("test", str(n)) is not None]
    assert 0 < len(kept) <= 100_000 // 5000 and kept[-1] == 199


def test_redis_values_round_trip_under_a_hashed_key_with_a_ttl(redis_url):
    cache = PatientDataCache(RedisCache(redis_url, max_bytes=1 << 20), ttl_s=60, owns=True)
    try:
        cache.put(KEY, RESULT)
        assert cache.get(KEY) == RESULT and cache.get(KEY[:-1] + ("procedures",)) is None
    finally:
        cache.close()
    with redis.Redis.from_url(redis_url) as client:
        [stored] = client.keys("*")
        assert stored.decode().startswith(KEY_PREFIX + NAMESPACE + ":")
        for secret in (PATIENT_ID, USER, "token-sha256", "ehr.example"):
            assert secret.encode() not in stored
        assert 0 < client.pttl(stored) <= 60_000
        assert json.loads(client.get(stored))["complete"] is False


def test_redis_values_expire_after_the_ttl(redis_url):
    cache = PatientDataCache(RedisCache(redis_url, max_bytes=1 << 20), ttl_s=0.1, owns=True)
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
    cache = PatientDataCache(RedisCache(redis_url, max_bytes=1 << 20), ttl_s=60, owns=True)
    try:
        cache.put(KEY, RESULT)
        with redis.Redis.from_url(redis_url) as client:
            [stored] = client.keys("*")
            client.set(stored, b'{"complete": "yes", "resources": 5}')
        assert cache.get(KEY) is None
    finally:
        cache.close()
    assert "unreadable patient-data cache entry" in caplog.text


def _disk(tmp_path, max_bytes: int = 1 << 24) -> DiskCache:
    return DiskCache(tmp_path / "spine-cds-cache", max_bytes)


def test_the_disk_cache_is_private_and_keeps_no_key_in_clear(tmp_path):
    """Finding 7: the cache every worker shares holds PHI, so it is the owner's alone, and the
    patient id, user and token it is keyed by never appear in it."""
    cache = PatientDataCache(_disk(tmp_path), ttl_s=60, owns=True)
    try:
        cache.put(KEY, RESULT)
        assert cache.get(KEY) == RESULT
    finally:
        cache.close()
    folder = tmp_path / "spine-cds-cache"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = [f for f in folder.rglob("*") if f.is_file()]
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files), files
    assert {f.name for f in files} <= {"cache.db", "cache.db-wal", "cache.db-shm"}   # no value in a file of its own
    stored = b"".join(f.read_bytes() for f in files)
    assert "Schmerz".encode() in stored or b"M54.16" in stored   # the value is there ...
    for secret in (PATIENT_ID, USER, "token-sha256", "ehr.example"):
        assert secret.encode() not in stored                   # ... under a hashed key only


def test_disk_values_expire_after_their_ttl(tmp_path):
    cache = _disk(tmp_path)
    try:
        cache.put_json("test", ["a", 1], {"v": 1}, ttl_s=0.2)
        assert cache.get_json("test", ["a", 1]) == {"v": 1} and cache.get_json("test", ["a", 2]) is None
        time.sleep(0.4)  # past the TTL (no timing is asserted)
        assert cache.get_json("test", ["a", 1]) is None
    finally:
        cache.close()


def test_the_disk_cache_is_bounded_in_bytes(tmp_path):
    cache = _disk(tmp_path, max_bytes=2_000_000)
    try:
        for n in range(400):   # 400 x 50 kB = 20 MB through a 2 MB cache
            cache.put_json("test", str(n), os.urandom(25_000).hex(), ttl_s=60)
        assert cache._cache.volume() < 4_000_000
        assert cache.get_json("test", "399") is not None and cache.get_json("test", "0") is None
    finally:
        cache.close()


def test_a_pickled_value_planted_in_the_disk_cache_is_never_unpickled(tmp_path, caplog):
    """diskcache unpickles values it did not store as raw bytes; ours never are, so one planted
    there (a file write away from running code) is refused and read as a miss."""
    import diskcache
    folder = tmp_path / "spine-cds-cache"
    cache = DiskCache(folder, 1 << 24)
    cache.close()
    key = hashed_key("test", "k")
    with diskcache.Cache(str(folder)) as raw:
        raw.set(key, Explodes())   # stored pickled by diskcache's own Disk
    cache = DiskCache(folder, 1 << 24)
    try:
        assert cache.get_json("test", "k") is None and not Explodes.loaded
    finally:
        cache.close()


class Explodes:
    loaded = False

    def __setstate__(self, state):
        Explodes.loaded = True


def test_values_over_a_sixteenth_of_the_budget_are_not_stored(tmp_path):
    cache = InProcessCache(max_bytes=16_000)
    cache.put_json("test", "big", "x" * 2_000, ttl_s=60)
    cache.put_json("test", "small", "x" * 500, ttl_s=60)
    assert cache.get_json("test", "big") is None and cache.get_json("test", "small") == "x" * 500


@pytest.mark.parametrize("namespace", ["", "Upper", "with space", "x" * 41, "a:b"])
def test_a_namespace_is_a_short_lowercase_word(namespace):
    with pytest.raises(ValueError, match="namespace"):
        hashed_key(namespace, "k")


def test_namespaces_never_collide():
    assert hashed_key("a", "k") != hashed_key("b", "k")
    assert hashed_key("a", ["k"]) != hashed_key("a", "k")


@pytest.mark.parametrize("url,problem", [
    ("http://cache:6379", "scheme"), ("redis://cache:port/0", "port"), ("redis://cache:6379/zero", "database"),
    ("redis://:s3cret@/0", "host"), ("unix://", "socket path")])
def test_a_bad_cache_url_stops_the_start(make_app, url, problem):
    with pytest.raises(CdsConfigError, match=problem) as info:
        make_app(SPINE_CDS_CACHE_URL=url)
    assert "SPINE_CDS_CACHE_URL" in info.value.message and "s3cret" not in info.value.message


def test_the_default_cache_is_on_disk_beside_the_database(tmp_path):
    settings = load_settings({"SPINE_CDS_DATABASE": str(tmp_path / "db" / "x.sqlite3")})
    cache = open_shared_cache(settings)
    try:
        assert isinstance(cache, DiskCache) and cache.folder == tmp_path / "db" / "spine-cds-cache"
    finally:
        cache.close()
    for setting in ({"SPINE_CDS_CACHE_URL": "memory"}, {"SPINE_CDS_DATABASE": ":memory:"}):
        assert isinstance(open_shared_cache(load_settings(setting)), InProcessCache)


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
    cache = PatientDataCache(RedisCache(server.url, max_bytes=1 << 20, retry_after_s=0), ttl_s=60, owns=True)
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
        shared = backend.get("SPINE_CDS_CACHE_URL") != "memory"   # the disk cache too: both apps on one host
        assert len(server.requests) == (2 if shared else 3) * len(FETCHED_KEYS)


@pytest.mark.parametrize("kind", ["disk", "memory", "redis"])
def test_several_values_are_written_at_once_and_read_back_each(kind, tmp_path, request):
    from cds_service.runtime.shared_cache import Namespace
    cache = {"disk": lambda: _disk(tmp_path, 1 << 20), "memory": lambda: InProcessCache(max_bytes=1 << 20),
             "redis": lambda: RedisCache(request.getfixturevalue("redis_url"), max_bytes=1 << 20)}[kind]()
    try:
        mentions = Namespace(cache, "note-mentions", 60)
        mentions.put_many([("a", [[1, 2]]), ("b", [[3]]), ("too-big", [["x" * 70_000]])])
        assert mentions.get_many(["a", "b", "c", "too-big"]) == [[[1, 2]], [[3]], None, None]
        assert mentions.get("a") == [[1, 2]]
    finally:
        cache.close()
