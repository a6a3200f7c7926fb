"""A cache every worker on a host shares: JSON values by (namespace, key), each with its own TTL.

Why: ``spine-cds serve`` runs several gunicorn workers.  A cache inside one process helps only
the calls the kernel happens to hand to that process (issue #14, finding 7: 4 of 6 repeated
order-selects went back to the FHIR server).  So the embedded default lives on disk, where every
worker of the host reads what any of them stored; Redis shares it between hosts.

Use it for anything worth reusing across calls and workers — patient data read from FHIR
servers (``record/cache.py``), results computed from a note's text keyed by a hash of it::

    cache = open_shared_cache(settings)          # one per app: AppState.shared_cache
    cache.put_json("note-nlp", sha256_of_text, {"findings": [...]}, ttl_s=3600)
    cache.get_json("note-nlp", sha256_of_text)   # the value, or None: a miss, expired, or cache down
    cache.get_many_json("note-nlp", [key1, key2])

* ``namespace``: 1-40 of ``a-z 0-9 -``; one per kind of value, so kinds never collide.
* ``key``: a string or a list of JSON values.  It is hashed (SHA-256 of namespace and key) before
  it reaches any backend, so a patient id, a token or a note's text in a key is never stored
  or sent in clear.  Put whatever scopes the value (server, patient, user, token hash) in it.
* ``value``: JSON (dict, list, str, number, bool).  ``None`` reads as a miss, so is not stored.
  A value is encoded on ``put_json`` and decoded on every ``get_json``: callers get their own
  copy.  Values over 1/16 of ``SPINE_CDS_CACHE_MAX_BYTES`` are not stored (one entry never
  evicts the rest).
* Never raises for a cache failure: a cache is an optimisation.  An outage (disk, Redis) is
  logged once and the cache is skipped for :data:`RETRY_AFTER_S`.

Backends, chosen by ``SPINE_CDS_CACHE_URL``:

* empty (default) — :class:`DiskCache`: ``diskcache`` (SQLite in WAL mode, safe for several
  processes and threads) in the folder ``spine-cds-cache`` beside the SQLite store (or in
  ``SPINE_CDS_DATA_DIR`` when the store is PostgreSQL).  The values are PHI: the folder is 0700
  and the database file 0600, values stay inside that file (never one file per value), and
  only raw bytes are ever read back (diskcache's pickled values are refused, so a file
  planted in the folder cannot run code).  Bounded by ``SPINE_CDS_CACHE_MAX_BYTES``
  (least recently stored evicted first); expired entries are culled as new ones are stored.
* ``redis://`` / ``rediss://`` / ``unix://`` — :class:`RedisCache`, shared by every instance.
* ``memory`` — :class:`InProcessCache`, per worker process: for tests and one-process tools
  (``spine-cds evaluate`` with ``SPINE_CDS_DATABASE=:memory:``, which keeps nothing on disk,
  also uses it).  Bounded in bytes too.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import diskcache
import orjson
import redis
from cachetools import TLRUCache
from redis.backoff import NoBackoff
from redis.retry import Retry

from cds_service.errors import CdsConfigError

if TYPE_CHECKING:  # annotations only
    from cds_service.runtime.settings import Settings

log = logging.getLogger(__name__)

Key = str | Sequence[object]
RETRY_AFTER_S = 5.0
"""After a cache error, how long the cache is skipped before it is tried again."""
REDIS_TIMEOUT_S = 0.2
"""Connect and socket timeout of each Redis command (a LAN cache answers in about a millisecond;
waiting longer would spend the hook's deadline that belongs to the FHIR server)."""
DISK_TIMEOUT_S = 0.2
"""SQLite busy timeout of the disk cache: a write waiting longer is skipped, never waited for."""
DISK_FOLDER = "spine-cds-cache"
KEY_PREFIX = "spine-cds:"
MEMORY = "memory"
ENTRY_OVERHEAD = 200
"""Bytes an in-process entry costs besides its value (key, tuple, expiry), counted in the budget."""
FAILURES = (OSError, sqlite3.Error, diskcache.Timeout, redis.RedisError, ValueError)
"""What a backend may raise; each is a miss (or a skipped write), never an error of the call."""
_NAMESPACE = re.compile(r"[a-z0-9-]{1,40}")


def hashed_key(namespace: str, key: Key) -> str:
    """``<namespace>:<SHA-256 of namespace and key>``: readable kind, unreadable content."""
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        raise ValueError("a cache namespace is 1-40 characters of a-z, 0-9 and '-'")
    material = orjson.dumps([namespace, key if isinstance(key, str) else list(key)])
    return f"{namespace}:{hashlib.sha256(material).hexdigest()}"


class SharedCache:
    """JSON by (namespace, key) with a TTL; subclasses store bytes under hashed keys."""

    def __init__(self, max_bytes: int, retry_after_s: float = RETRY_AFTER_S):
        self.max_value_bytes = max(1, max_bytes // 16)
        self._retry_after_s = retry_after_s
        self._down_until = 0.0
        self._lock = threading.Lock()

    def get_json(self, namespace: str, key: Key) -> object | None:
        return self.get_many_json(namespace, [key])[0]

    def get_many_json(self, namespace: str, keys: Sequence[Key]) -> list[object | None]:
        hashed = [hashed_key(namespace, key) for key in keys]
        if not hashed or self._skipping():
            return [None] * len(hashed)
        try:
            found = self._get_many(hashed)
        except FAILURES as exc:
            self._failed(exc)
            return [None] * len(hashed)
        self._recovered()
        return [_decode(namespace, data) if data is not None else None for data in found]

    def put_json(self, namespace: str, key: Key, value: object, ttl_s: float) -> None:
        self.put_many_json(namespace, [(key, value)], ttl_s)

    def put_many_json(self, namespace: str, items: Sequence[tuple[Key, object]], ttl_s: float) -> None:
        """Several values in one write: one transaction on disk (a commit each cost 0.2 ms, six
        on a first sight of 30 notes), one round trip to Redis."""
        if ttl_s <= 0 or self._skipping():
            return
        batch = [(hashed_key(namespace, key), data) for key, value in items if value is not None
                 and len(data := orjson.dumps(value)) <= self.max_value_bytes]
        if not batch:
            return
        try:
            self._put_many(batch, ttl_s)
        except FAILURES as exc:
            self._failed(exc)
        else:
            self._recovered()

    def close(self) -> None:
        """Release connections; safe to call twice."""

    # -- what a backend implements ---------------------------------------------------------

    def _get_many(self, keys: list[str]) -> list[bytes | None]:
        raise NotImplementedError

    def _put_many(self, items: list[tuple[str, bytes]], ttl_s: float) -> None:
        raise NotImplementedError

    # -- outages -----------------------------------------------------------------------------

    def _skipping(self) -> bool:
        with self._lock:
            return time.monotonic() < self._down_until

    def _failed(self, exc: Exception) -> None:
        if isinstance(exc, diskcache.Timeout):
            return  # another worker held the write lock a moment: skip this one write, stay up
        with self._lock:
            first = self._down_until == 0.0
            self._down_until = time.monotonic() + self._retry_after_s
        if first:  # once per outage; the message names a host or path, never a password or key
            log.warning("%s unavailable (%s: %s); working without it, retrying every %.0f s. %s",
                        self.describe(), type(exc).__name__, exc, self._retry_after_s, self.advice())

    def _recovered(self) -> None:
        with self._lock:
            was_down, self._down_until = self._down_until != 0.0, 0.0
        if was_down:
            log.info("%s reachable again; cached values are shared again", self.describe())

    def describe(self) -> str:
        return "cache"

    def advice(self) -> str:
        return ""


def _decode(namespace: str, data: bytes) -> object | None:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        log.warning("ignored an unreadable %s cache entry", namespace)
        return None


class InProcessCache(SharedCache):
    """This process only (``SPINE_CDS_CACHE_URL=memory``); bounded in bytes; thread-safe.
    ``timer`` is for tests (a fake clock)."""

    def __init__(self, max_bytes: int, timer: Callable[[], float] = time.monotonic):
        super().__init__(max_bytes)
        self._entries: TLRUCache = TLRUCache(maxsize=max_bytes, ttu=lambda _k, v, now: now + v[1],
                                             timer=timer, getsizeof=lambda v: len(v[0]) + ENTRY_OVERHEAD)
        self._entries_lock = threading.Lock()

    def _get_many(self, keys: list[str]) -> list[bytes | None]:
        with self._entries_lock:
            return [entry[0] if (entry := self._entries.get(key)) else None for key in keys]

    def _put_many(self, items: list[tuple[str, bytes]], ttl_s: float) -> None:
        with self._entries_lock:
            for key, data in items:
                self._entries[key] = (data, ttl_s)

    def close(self) -> None:
        with self._entries_lock:
            self._entries.clear()

    def describe(self) -> str:
        return "in-process cache"


class _RawOnlyDisk(diskcache.Disk):
    """diskcache's storage, limited to what we write: text keys and raw byte values.

    diskcache unpickles values (and keys) it did not store raw; ours never are, so anything else
    in the database was not written by us and is refused instead of unpickled.
    """

    def get(self, key, raw):
        if not raw:
            raise ValueError("a pickled key in the cache database; refused")
        return super().get(key, raw)

    def fetch(self, mode, filename, value, read):
        if mode != diskcache.core.MODE_RAW:
            raise ValueError("a value not stored as raw bytes in the cache database; refused")
        return super().fetch(mode, filename, value, read)


class DiskCache(SharedCache):
    """Every worker of this host (default): diskcache in a private folder."""

    def __init__(self, folder: Path, max_bytes: int, timeout_s: float = DISK_TIMEOUT_S):
        super().__init__(max_bytes)
        self.folder = folder
        _private_folder(folder)
        try:
            self._cache = diskcache.Cache(
                str(folder), timeout=timeout_s, disk=_RawOnlyDisk, size_limit=max_bytes,
                disk_min_file_size=1 << 62,   # every value inside cache.db (0600), never a file of its own
                eviction_policy="least-recently-stored")
        except (OSError, sqlite3.Error, diskcache.Timeout) as exc:
            raise CdsConfigError(f"cannot open the patient-data cache in {folder} ({exc}); make the folder "
                                 "writable (SPINE_CDS_DATA_DIR, or the folder of SPINE_CDS_DATABASE), or set "
                                 "SPINE_CDS_CACHE_URL.") from exc

    def _get_many(self, keys: list[str]) -> list[bytes | None]:
        return [self._cache.get(key, retry=False) for key in keys]

    def _put_many(self, items: list[tuple[str, bytes]], ttl_s: float) -> None:
        """One transaction for several values (each ``set`` alone is its own commit)."""
        with self._cache.transact(retry=False) if len(items) > 1 else nullcontext():
            for key, data in items:
                self._cache.set(key, data, expire=ttl_s, retry=False)

    def close(self) -> None:
        self._cache.close()

    def describe(self) -> str:
        return f"disk cache in {self.folder}"

    def advice(self) -> str:
        return "Check the disk and the folder's permissions."


def _private_folder(folder: Path) -> None:
    """The cache folder 0700 and its database 0600 before diskcache opens it: the values are
    PHI.  SQLite gives its -wal and -shm files the database file's permissions."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)   # our own folder: no one else's business, whatever made it
        database = folder / diskcache.core.DBNAME
        os.close(os.open(database, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(database, 0o600)
    except OSError as exc:
        raise CdsConfigError(f"cannot create the patient-data cache folder {folder} ({exc.strerror}); make "
                             "SPINE_CDS_DATA_DIR (or the folder of SPINE_CDS_DATABASE) writable, or set "
                             "SPINE_CDS_CACHE_URL.") from exc


class RedisCache(SharedCache):
    """Every instance (``SPINE_CDS_CACHE_URL=redis://...``); values are PHI: use a private Redis
    with a password, or ``rediss://``."""

    def __init__(self, url: str, max_bytes: int, timeout_s: float = REDIS_TIMEOUT_S,
                 retry_after_s: float = RETRY_AFTER_S):
        super().__init__(max_bytes, retry_after_s)
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0), health_check_interval=0)

    def _get_many(self, keys: list[str]) -> list[bytes | None]:
        """One MGET for all keys: one round trip per hook call, whatever the number of keys."""
        return self._client.mget([KEY_PREFIX + key for key in keys])

    def _put_many(self, items: list[tuple[str, bytes]], ttl_s: float) -> None:
        pipe = self._client.pipeline(transaction=False)
        for key, data in items:
            pipe.set(KEY_PREFIX + key, data, px=max(1, round(ttl_s * 1000)))
        pipe.execute()

    def close(self) -> None:
        self._client.close()

    def describe(self) -> str:
        return "Redis cache"

    def advice(self) -> str:
        return "Check SPINE_CDS_CACHE_URL and the Redis server."


def open_shared_cache(settings: Settings) -> SharedCache:
    """The cache ``SPINE_CDS_CACHE_URL`` names (see the module docstring); a bad URL or an
    unwritable folder is a :class:`CdsConfigError` at start."""
    url, max_bytes = settings.cache_url, settings.cache_max_bytes
    if url.lower() == MEMORY or (not url and settings.database_file == ":memory:"):
        return InProcessCache(max_bytes)
    if not url:
        return DiskCache(cache_folder(settings), max_bytes)
    check_redis_url(url)
    return RedisCache(url, max_bytes)


def cache_folder(settings: Settings) -> Path:
    """Beside the SQLite store (one place for the service's files), else in the data folder."""
    database = settings.database_file
    if "://" in database:
        return Path(settings.data_dir).expanduser() / DISK_FOLDER
    return Path(database).expanduser().parent / DISK_FOLDER


def check_redis_url(url: str) -> None:
    """Refuse a cache URL redis-py would reject or misread (it ignores a bad database number)."""
    from urllib.parse import urlsplit
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
                             "redis://host:6379/0 (or rediss:// for TLS), leave it empty for the cache "
                             "shared by this host's workers, or 'memory' for one process.")


MENTIONS_TTL_S = 86_400.0
"""How long the mentions found in a note are kept: they depend only on the note's text and the
lexicon (both in the key), so a day is safe; it bounds what a stale entry could cost."""


class Namespace:
    """One namespace of a :class:`SharedCache` as ``get``/``put`` by key with a fixed TTL (the
    narrative reader's MentionCache: mentions by a hash of the note's text)."""

    def __init__(self, cache: SharedCache, namespace: str, ttl_s: float):
        self.cache, self.namespace, self.ttl_s = cache, namespace, ttl_s

    def get(self, key: str) -> list | None:
        return self.get_many([key])[0]

    def put(self, key: str, value: list) -> None:
        self.put_many([(key, value)])

    def get_many(self, keys: list[str]) -> list[list | None]:
        return [v if isinstance(v, list) else None for v in self.cache.get_many_json(self.namespace, keys)]

    def put_many(self, items: list[tuple[str, list]]) -> None:
        self.cache.put_many_json(self.namespace, items, self.ttl_s)
