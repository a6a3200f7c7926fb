"""Gather the patient's record for one hook call: prefetch first, the FHIR server for the rest.

Every prefetch key ends in exactly one state, recorded in ``PatientRecord.sources``:
``prefetch`` | ``null`` (the client says there is none) | ``fhir`` | ``cache`` | ``partial``
(only some pages could be read) | ``failed`` (nothing could be read: its facts are unknown,
never assumed absent).  A key the EHR neither prefetched nor let us fetch is a 412 when the
decision needs it; a FHIR server that is down is not an error here — the decision degrades.

Searches for one call run in parallel on a shared executor, and FHIR results are cached for a
short time because order-select fires on every edit.  The cache key holds the user and a hash
of the access token, so one user's token never serves another user's request; prefetched data
is never cached (it came from the client, for this call only).
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Hashable, Mapping, MutableMapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote

import requests
from cachetools import TTLCache

from .errors import CdsPreconditionFailed, FhirUnavailable
from .fhir_client import FhirClient, SearchResult, check_fhir_server_allowed, normalise_base
from .model import HookRequest, PatientRecord
from .prefetch import (
    FIRST_PAGE_ONLY, PREFETCH, REQUIRED_KEYS, Prefetched, fill_template, normalise_prefetch,
)

if TYPE_CHECKING:  # annotations only: keeps this module importable on its own
    from .settings import Settings

log = logging.getLogger(__name__)

Todo = dict[str, Prefetched | None]
"""Keys still to fetch -> the partial/failed prefetch value, or None when omitted."""


@dataclass(frozen=True)
class KeyData:
    """The resources one prefetch key produced and where they came from."""

    resources: tuple[dict, ...]
    source: str


class RecordGatherer:
    """Builds :class:`PatientRecord` values; create one per app and :meth:`close` it at exit.

    ``session`` is shared by every call (connection reuse) and stays owned by the caller.
    ``cache`` may be any mapping (tests pass a dict); access to it is serialised by a lock.
    """

    def __init__(self, settings: Settings, session: requests.Session,
                 cache: MutableMapping | None = None):
        self._settings = settings
        self._session = session
        self._cache: MutableMapping = cache if cache is not None else TTLCache(
            maxsize=settings.cache_max_entries, ttl=settings.cache_ttl_s)
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=settings.fhir_workers,
                                            thread_name_prefix="fhir-search")

    def close(self) -> None:
        """Stop the worker threads (waits for searches in flight, which all have timeouts)."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> RecordGatherer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def gather(self, hook: HookRequest) -> PatientRecord:
        """The patient's record for ``hook``; raises 412 / 400 only as described above."""
        started = time.monotonic()
        data, todo = read_prefetch(hook.prefetch)
        if todo:
            data.update(self._fetch(hook, todo))
        record = build_record(hook.patient_id, data)
        log.info("patient record in %.0f ms: sources=%s counts=%s",
                 (time.monotonic() - started) * 1000, record.sources,
                 {rtype: len(items) for rtype, items in record.resources.items()})
        return record

    def _fetch(self, hook: HookRequest, todo: Todo) -> dict[str, KeyData]:
        """Fill the keys prefetch did not satisfy from ``hook.fhir_server``."""
        if not hook.fhir_server:
            refuse_if_required_missing(todo)
            return {key: unfetched(got) for key, got in todo.items()}
        try:
            check_fhir_server_allowed(hook.fhir_server, self._settings)
        except FhirUnavailable as exc:
            log.warning("FHIR server unavailable for %s: %s", sorted(todo), exc.message)
            return {key: unfetched(got) for key, got in todo.items()}
        client = FhirClient(hook.fhir_server, hook.access_token, self._session, self._settings)
        results: dict[str, KeyData] = {}
        futures: dict[str, Future] = {}
        for key, got in todo.items():
            if is_partial(got):
                futures[key] = self._executor.submit(client.search_result, got.next_url)
            elif (hit := self._cache_get(cache_key(hook, key))) is not None:
                results[key] = KeyData(hit.resources, "cache" if hit.complete else "partial")
            elif (query := fill_template(PREFETCH[key], hook.context)) is None:
                results[key] = KeyData((), "failed")
            else:
                futures[key] = self._executor.submit(run_query, client, query, key in FIRST_PAGE_ONLY)
        for key, future in futures.items():
            results[key] = self._collect(hook, key, todo[key], future)
        return results

    def _collect(self, hook: HookRequest, key: str, got: Prefetched | None,
                 future: Future) -> KeyData:
        """Turn one finished search into :class:`KeyData`; a FHIR failure is not a crash."""
        try:
            result: SearchResult = future.result()
        except FhirUnavailable as exc:
            log.warning("prefetch key %s could not be read: %s", key, exc.message)
            return unfetched(got)
        source = "fhir" if result.complete else "partial"
        if is_partial(got):
            return KeyData(got.resources + result.resources, source)
        self._cache_put(cache_key(hook, key), result)
        return KeyData(result.resources, source)

    def _cache_get(self, key: Hashable) -> SearchResult | None:
        with self._lock:
            return self._cache.get(key)

    def _cache_put(self, key: Hashable, value: SearchResult) -> None:
        with self._lock:
            self._cache[key] = value


def read_prefetch(prefetch: Mapping) -> tuple[dict[str, KeyData], Todo]:
    """Split our keys into those prefetch satisfied and those still to fetch."""
    prefetch = prefetch if isinstance(prefetch, Mapping) else {}
    data: dict[str, KeyData] = {}
    todo: Todo = {}
    for key in PREFETCH:
        if key not in prefetch:
            todo[key] = None
            continue
        got = normalise_prefetch(prefetch[key])
        if got.state == "null":
            data[key] = KeyData((), "null")
        elif got.state == "ok" or (got.state == "partial" and key in FIRST_PAGE_ONLY):
            data[key] = KeyData(got.resources, "prefetch")
        else:
            todo[key] = got
    return data, todo


def is_partial(got: Prefetched | None) -> bool:
    return got is not None and got.state == "partial"


def unfetched(got: Prefetched | None) -> KeyData:
    """A key we could not (finish) reading: keep a partial prefetch's pages, else failed."""
    if is_partial(got):
        return KeyData(got.resources, "partial")
    return KeyData((), "failed")


def refuse_if_required_missing(todo: Todo) -> None:
    """412 when a required key has no data at all and there is no server to read it from."""
    missing = sorted(key for key, got in todo.items() if key in REQUIRED_KEYS and not is_partial(got))
    if missing:
        raise CdsPreconditionFailed(
            f"Required patient data is missing: {', '.join(missing)}. The EHR must either "
            "prefetch these keys (see the prefetch templates in discovery) or send fhirServer "
            "(and fhirAuthorization) so this service can read them."
        )


def run_query(client: FhirClient, query: str, first_page_only: bool = False) -> SearchResult:
    """Run one filled template: ``Type/id`` is a read, anything else a search.

    A first-page-only search asked for the newest N on purpose, so one page is complete.
    """
    path, sep, _ = query.partition("?")
    rtype, slash, rid = path.partition("/")
    if not sep and slash and rid and "/" not in rid:
        return SearchResult((client.read(rtype, unquote(rid)),), True)
    if first_page_only:
        return SearchResult(client.search_result(query, max_pages=1).resources, True)
    return client.search_result(query)


def cache_key(hook: HookRequest, key: str) -> tuple[str, ...]:
    """Server, patient, user and token hash: a cached search is reused only by its own caller."""
    token = hook.access_token
    token_part = hashlib.sha256(token.encode()).hexdigest() if token else "no-token"
    return (normalise_base(hook.fhir_server or ""), hook.patient_id, hook.user_id or "",
            token_part, key)


def build_record(patient_id: str, data: Mapping[str, KeyData]) -> PatientRecord:
    """Group every key's resources by type, once per ``Type/id``, earlier keys winning."""
    grouped: dict[str, list[dict]] = {}
    seen: set[tuple[str, str]] = set()
    for key in PREFETCH:
        for resource in data[key].resources:
            rtype, rid = resource["resourceType"], resource.get("id")
            if isinstance(rid, str) and rid:
                if (rtype, rid) in seen:
                    continue
                seen.add((rtype, rid))
            grouped.setdefault(rtype, []).append(resource)
    patients = grouped.get("Patient", [])
    patient = next((p for p in patients if p.get("id") == patient_id), patients[0] if patients else None)
    return PatientRecord(
        patient=patient,
        resources={rtype: tuple(items) for rtype, items in grouped.items()},
        sources={key: data[key].source for key in PREFETCH},
    )
