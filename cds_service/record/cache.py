"""Where patient data read from FHIR servers is kept between hook calls: in-process or Redis.

order-select fires on every edit of an order, so the same searches repeat within seconds; a
short-lived cache (``SPINE_CDS_CACHE_TTL_S``) saves the EHR's FHIR server those round trips.
The key is built by the gatherer from the server, patient, user and a hash of the access token,
so one user's token never serves another user's request.

* :class:`InProcessCache` (``SPINE_CDS_CACHE_URL`` empty): a cachetools ``TTLCache`` behind a
  lock, per worker process.
* :class:`RedisCache` (``SPINE_CDS_CACHE_URL=redis://...``): shared by every worker and
  instance behind a load balancer.  Keys are SHA-256 hashes, so neither the patient id nor the
  token is ever in a Redis key; values are JSON with their TTL set by Redis (``SET ... PX``).
  The values are FHIR resources (PHI): use a private Redis with a password, or ``rediss://``.
  Redis is only an optimisation, so an outage degrades to "no cache" with one warning, and Redis
  is left alone for :data:`RETRY_AFTER_S` instead of costing every hook call a socket timeout.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

import redis
from cachetools import TTLCache
from redis.backoff import NoBackoff
from redis.retry import Retry

from cds_service.errors import CdsConfigError
from cds_service.record.fhir_client import SearchResult

if TYPE_CHECKING:  # annotations only: keeps this module importable on its own
    from cds_service.runtime.settings import Settings

log = logging.getLogger(__name__)

CacheKey = tuple[str, ...]

REDIS_TIMEOUT_S = 0.2
"""Connect and socket timeout of each Redis command.  A cache on the local network answers in
about a millisecond; one slower than this is treated as down, because waiting on it would spend
the hook's deadline (SPINE_CDS_DEADLINE_S) that belongs to the FHIR server."""

RETRY_AFTER_S = 5.0
"""After a Redis error, how long the cache is skipped before Redis is tried again."""

KEY_PREFIX = "spine-cds:patient-data:v1:"
"""Namespace of our Redis keys; the version changes whenever the value format does."""


class PatientDataCache(Protocol):
    """What the gatherer needs: look several keys up at once, store one result."""

    def get_many(self, keys: Sequence[CacheKey]) -> list[SearchResult | None]: ...

    def put(self, key: CacheKey, value: SearchResult) -> None: ...

    def close(self) -> None: ...


class InProcessCache:
    """A TTL cache in this process; thread-safe.  ``timer`` is for tests (a fake clock)."""

    def __init__(self, max_entries: int, ttl_s: float, timer: Callable[[], float] = time.monotonic):
        self._entries: TTLCache = TTLCache(maxsize=max_entries, ttl=ttl_s, timer=timer)
        self._lock = threading.Lock()

    def get(self, key: CacheKey) -> SearchResult | None:
        with self._lock:
            return self._entries.get(key)

    def get_many(self, keys: Sequence[CacheKey]) -> list[SearchResult | None]:
        with self._lock:
            return [self._entries.get(key) for key in keys]

    def put(self, key: CacheKey, value: SearchResult) -> None:
        with self._lock:
            self._entries[key] = value

    def close(self) -> None:
        with self._lock:
            self._entries.clear()


class RedisCache:
    """Patient data in Redis, shared between instances; never raises on a Redis failure."""

    def __init__(self, url: str, ttl_s: float, timeout_s: float = REDIS_TIMEOUT_S,
                 retry_after_s: float = RETRY_AFTER_S):
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0), health_check_interval=0)
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._retry_after_s = retry_after_s
        self._down_until = 0.0
        self._lock = threading.Lock()

    def get(self, key: CacheKey) -> SearchResult | None:
        return self.get_many([key])[0]

    def get_many(self, keys: Sequence[CacheKey]) -> list[SearchResult | None]:
        """One MGET for all keys: one round trip per hook call, whatever the number of keys."""
        if not keys or self._skipping():
            return [None] * len(keys)
        try:
            values = self._client.mget([redis_key(key) for key in keys])
        except redis.RedisError as exc:
            self._failed(exc)
            return [None] * len(keys)
        self._recovered()
        return [decode(value) if value is not None else None for value in values]

    def put(self, key: CacheKey, value: SearchResult) -> None:
        if self._skipping():
            return
        try:
            self._client.set(redis_key(key), encode(value), px=self._ttl_ms)
        except redis.RedisError as exc:
            self._failed(exc)
        else:
            self._recovered()

    def close(self) -> None:
        self._client.close()

    def _skipping(self) -> bool:
        with self._lock:
            return time.monotonic() < self._down_until

    def _failed(self, exc: redis.RedisError) -> None:
        with self._lock:
            first = self._down_until == 0.0
            self._down_until = time.monotonic() + self._retry_after_s
        if first:  # once per outage; the exception text names host and port, never a password
            log.warning("Redis cache unavailable (%s: %s); reading from the FHIR server without "
                        "a cache, retrying Redis every %.0f s. Check SPINE_CDS_CACHE_URL and the "
                        "Redis server.", type(exc).__name__, exc, self._retry_after_s)

    def _recovered(self) -> None:
        with self._lock:
            was_down, self._down_until = self._down_until != 0.0, 0.0
        if was_down:
            log.info("Redis cache reachable again; patient data is shared again")


def make_cache(settings: Settings) -> PatientDataCache:
    """The cache ``SPINE_CDS_CACHE_URL`` names; a bad URL is a :class:`CdsConfigError` at start."""
    url = settings.cache_url
    if not url:
        return InProcessCache(settings.cache_max_entries, settings.cache_ttl_s)
    check_redis_url(url)
    return RedisCache(url, settings.cache_ttl_s)


def check_redis_url(url: str) -> None:
    """Refuse a cache URL redis-py would reject or misread (it ignores a bad database number)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    shown = f"{scheme}://{parts.hostname or ''}{parts.path}" if parts.scheme else "(not a URL)"
    problem = None
    if scheme not in ("redis", "rediss", "unix"):
        problem = "the scheme must be redis://, rediss:// or unix://"
    elif scheme == "unix" and not parts.path:
        problem = "a unix:// URL needs the socket path"
    elif scheme != "unix":
        try:
            parts.port  # noqa: B018 (raises ValueError on a bad port)
        except ValueError:
            problem = "the port is not a number"
        else:
            db = parts.path.strip("/")
            if not parts.hostname:
                problem = "the host is missing"
            elif db and not db.isdigit():
                problem = "the path must be a database number, e.g. /0"
    if problem:
        raise CdsConfigError(f"SPINE_CDS_CACHE_URL={shown!r} is invalid: {problem}. Use "
                             "redis://host:6379/0 (or rediss:// for TLS), or leave it empty for "
                             "the in-process cache.")


def redis_key(key: CacheKey) -> str:
    """A Redis key that reveals nothing: the SHA-256 of the gatherer's key (patient, user, ...)."""
    digest = hashlib.sha256(json.dumps(list(key), separators=(",", ":")).encode()).hexdigest()
    return KEY_PREFIX + digest


def encode(value: SearchResult) -> bytes:
    return json.dumps({"complete": value.complete, "resources": list(value.resources)},
                      separators=(",", ":")).encode()


def decode(data: bytes) -> SearchResult | None:
    """A stored value, or None (a miss) when it is not one of ours."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        value = None
    if (not isinstance(value, dict) or not isinstance(value.get("complete"), bool)
            or not isinstance(value.get("resources"), list)
            or not all(isinstance(r, dict) for r in value["resources"])):
        log.warning("ignored an unreadable patient-data cache entry")
        return None
    return SearchResult(tuple(value["resources"]), value["complete"])
