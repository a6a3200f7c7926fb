"""Gather the patient's record for one hook call: prefetch first, the FHIR server for the rest.

Every prefetch key ends in exactly one state, recorded in ``PatientRecord.sources``:
``prefetch`` | ``null`` (the client says there is none) | ``fhir`` | ``cache`` | ``partial``
(only some pages could be read) | ``failed`` (nothing could be read: its facts are unknown,
never assumed absent).

Which failure gives which answer:

* **412** only when a required key (``prefetch.REQUIRED_KEYS``) is neither prefetched, even in
  part, nor fetchable because the request has no ``fhirServer``: the EHR must change what it sends.
* **400** when ``fhirServer`` is one we may not read from (see ``fhir_client``).
* **200**, the key ``failed``, for everything on the FHIR server's side: its host not resolving,
  connection refused, a timeout, HTTP 401/403/404/500, a redirect, a body that is not JSON, not
  a Bundle or holding resource types the search cannot return, a body over the size cap, or a
  search still running at the hook's deadline.  The decision treats those facts as unknown and
  the card says the check could not complete.  A partly prefetched key whose remaining pages
  cannot be read keeps its pages and is ``partial``.

Deadline: gathering ends ``SPINE_CDS_DEADLINE_S`` after it began.  Searches run in parallel on
one executor per app (``SPINE_CDS_FHIR_WORKERS`` threads, so threads are bounded however many
calls time out); at the deadline the call stops waiting, cancels searches not yet started and
abandons running ones, which end soon after on their own because every request's timeout is
cut to the time left before the deadline (``fhir_client``).

FHIR results are cached for a short time (``cache.py``: on disk for every worker, or Redis) because
order-select fires on every edit.  The cache key holds the server, patient, user and a hash of
the access token, so one user's token never serves another user's request; prefetched data is
never cached (it came from the client, for this call only), nor is a failed search.
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote

import requests

from cds_service.record import attachments
from cds_service.record.cache import CacheKey, PatientDataCache, make_cache
from cds_service.engine.routing import local_reference
from cds_service.errors import CdsBadRequest, CdsPreconditionFailed, FhirUnavailable
from cds_service.record.fhir_client import FhirClient, SearchResult, check_fhir_server_allowed, normalise_base
from cds_service.model import FHIR_ID, HookRequest, PatientRecord
from cds_service.record.prefetch import (
    FIRST_PAGE_ONLY, KEY_TYPES, PREFETCH, PREFETCH_ONLY, REQUIRED_KEYS, Prefetched, fill_template,
    normalise_prefetch,
)

if TYPE_CHECKING:  # annotations only: keeps this module importable on its own
    from cds_service.runtime.settings import Settings

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

    ``session`` is shared by every call (connection reuse) and stays owned by the caller, as
    does a ``cache`` passed in; without one the gatherer makes (and closes) the cache
    ``SPINE_CDS_CACHE_URL`` names.
    """

    def __init__(self, settings: Settings, session: requests.Session,
                 cache: PatientDataCache | None = None):
        self._settings = settings
        self._session = session
        self._owns_cache = cache is None
        self._cache: PatientDataCache = make_cache(settings) if cache is None else cache
        self._executor = ThreadPoolExecutor(max_workers=settings.fhir_workers,
                                            thread_name_prefix="fhir-search")

    def close(self) -> None:
        """Stop the worker threads (waits for searches in flight, which all have timeouts)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._owns_cache:
            self._cache.close()

    def __enter__(self) -> RecordGatherer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def gather(self, hook: HookRequest, arrived: float | None = None) -> PatientRecord:
        """The patient's record for ``hook``; raises 412 / 400 only as described above.

        ``arrived`` (a ``time.monotonic()`` value) is when the call reached the server: the
        deadline counts from there, not from now, so time spent waiting for a worker counts too."""
        now = time.monotonic()
        started = min(arrived, now) if arrived is not None else now
        data, todo = read_prefetch(hook.prefetch)
        for key in PREFETCH_ONLY & todo.keys():   # never searched for: what the EHR did not send is unknown
            del todo[key]
        if todo:
            data.update(self._fetch(hook, todo, started + self._settings.deadline_s))
        self._read_payers(hook, data, started + self._settings.deadline_s)
        self._read_attachments(hook, data, started + self._settings.deadline_s)
        record = build_record(hook.patient_id, data)
        log.info("patient record in %.0f ms (%.0f ms after the call arrived): sources=%s counts=%s",
                 (time.monotonic() - now) * 1000, (time.monotonic() - started) * 1000, record.sources,
                 {rtype: len(items) for rtype, items in record.resources.items()})
        return record

    def _fetch(self, hook: HookRequest, todo: Todo, deadline: float) -> dict[str, KeyData]:
        """Fill the keys prefetch did not satisfy from ``hook.fhir_server``, by ``deadline``."""
        if not hook.fhir_server:
            refuse_if_required_missing(todo)
            return {key: unfetched(got) for key, got in todo.items()}
        try:
            checked = self._check_server(hook.fhir_server, deadline)
        except FhirUnavailable as exc:
            log.warning("FHIR server unavailable for %s: %s", sorted(todo), exc.message)
            return {key: unfetched(got) for key, got in todo.items()}
        client = FhirClient(hook.fhir_server, hook.access_token, self._session, self._settings,
                            deadline=deadline, pinned_to=checked)
        results, futures = self._start(hook, todo, client)
        done, _ = wait(futures.values(), timeout=max(0.0, deadline - time.monotonic()))
        for key, future in futures.items():
            if future in done:
                results[key] = collect(key, todo[key], future)
            else:
                future.cancel()  # not started yet: never starts; running: ends at its timeout
                log.warning("prefetch key %s abandoned at the hook's deadline (SPINE_CDS_DEADLINE_S="
                            "%s s); its facts are unknown", key, self._settings.deadline_s)
                results[key] = unfetched(todo[key])
        return results

    def _read_payers(self, hook: HookRequest, data: dict[str, KeyData], deadline: float) -> None:
        """Read the payer Organization a Coverage references when it did not come along.

        The payer routes the order to its program, and some FHIR servers ignore
        ``_include=Coverage:payor`` (Medplum's engine does): without this read the default
        program would decide for a payer never identified.  At most two reads, within the
        hook's deadline; a failure leaves the payer unidentified (the card says so)."""
        coverage = data.get("coverage")
        if coverage is None or not coverage.resources or not hook.fhir_server:
            return
        missing = payers_not_in(coverage.resources)[:2]
        if not missing:
            return
        try:
            checked = self._check_server(hook.fhir_server, deadline)
            client = FhirClient(hook.fhir_server, hook.access_token, self._session, self._settings,
                                deadline=deadline, pinned_to=checked)
            found = tuple(client.read("Organization", ref.split("/", 1)[1]) for ref in missing)
        except (FhirUnavailable, CdsBadRequest) as exc:
            log.warning("payer Organization not read: %s", exc.message)
            return
        data["coverage"] = KeyData(coverage.resources + found, coverage.source)

    def _read_attachments(self, hook: HookRequest, data: dict[str, KeyData], deadline: float) -> None:
        """Inline note text kept as a Binary on the EHR's FHIR server (attachments.py)."""
        owners = {key: data[key] for key in attachments.OWNERS if key in data and data[key].resources}
        if not owners or not hook.fhir_server or not self._settings.notes:
            return
        base = normalise_base(hook.fhir_server)
        if not any(True for key, k in owners.items() for _ in attachments.wanted(k.resources, key, base)):
            return
        try:
            checked = self._check_server(hook.fhir_server, deadline)
        except (FhirUnavailable, CdsBadRequest) as exc:
            log.warning("note attachments not read: %s", exc.message)
            return
        client = FhirClient(hook.fhir_server, hook.access_token, self._session, self._settings,
                            deadline=deadline, pinned_to=checked)
        limit = self._settings.note_attachment_max_bytes * 4 // 3 + 4096   # base64 in a JSON Binary
        read = lambda rid: client.read("Binary", rid, limit)  # noqa: E731
        inlined = attachments.inline({k: v.resources for k, v in owners.items()}, base, read, self._executor, deadline)
        for key, resources in inlined.items():
            data[key] = KeyData(resources, data[key].source)

    def _check_server(self, url: str, deadline: float) -> tuple[str, ...] | None:
        """The SSRF guard resolves the host, and DNS has no timeout of its own: bound it too.
        Returns the addresses it checked, to connect to (never a second DNS answer)."""
        future = self._executor.submit(check_fhir_server_allowed, url, self._settings)
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            future.cancel()
            raise FhirUnavailable("The FHIR server's host was not resolved before the hook's "
                                  "deadline; check DNS, or raise SPINE_CDS_DEADLINE_S.") from None

    def _start(self, hook: HookRequest, todo: Todo,
               client: FhirClient) -> tuple[dict[str, KeyData], dict[str, Future]]:
        """Answer what the cache can (one lookup for all keys) and submit the other searches."""
        keys = {key: cache_key(hook, key) for key, got in todo.items() if not is_partial(got)}
        hits = dict(zip(keys, self._cache.get_many(list(keys.values()))))
        results: dict[str, KeyData] = {}
        futures: dict[str, Future] = {}
        for key, got in todo.items():
            if is_partial(got):
                futures[key] = self._executor.submit(read_rest, client, key, got.next_url)
            elif (hit := hits[key]) is not None:
                results[key] = KeyData(hit.resources, "cache" if hit.complete else "partial")
            elif (query := fill_template(PREFETCH[key], hook.context)) is None:
                results[key] = KeyData((), "failed")
            else:
                futures[key] = self._executor.submit(self._search, client, key, query, keys[key])
        return results, futures

    def _search(self, client: FhirClient, key: str, query: str, ckey: CacheKey) -> SearchResult:
        """On a worker thread: one key's search, checked, then cached."""
        result = run_query(client, query, key in FIRST_PAGE_ONLY)
        check_types(key, result)
        self._cache.put(ckey, result)
        return result


def collect(key: str, got: Prefetched | None, future: Future) -> KeyData:
    """Turn one finished search into :class:`KeyData`; no FHIR answer is ever a crash."""
    try:
        result: SearchResult = future.result()
    except FhirUnavailable as exc:
        log.warning("prefetch key %s could not be read: %s", key, exc.message)
        return unfetched(got)
    except Exception as exc:  # noqa: BLE001 — a hostile answer must not become a 500
        log.error("prefetch key %s: unexpected %s while reading the FHIR server's answer; "
                  "treated as failed", key, type(exc).__name__)
        return unfetched(got)
    source = "fhir" if result.complete else "partial"
    if is_partial(got):
        return KeyData(got.resources + result.resources, source)
    return KeyData(result.resources, source)


def read_rest(client: FhirClient, key: str, next_url: str) -> SearchResult:
    """The pages a partly prefetched Bundle left unread."""
    result = client.search_result(next_url)
    check_types(key, result)
    return result


def check_types(key: str, result: SearchResult) -> None:
    """Refuse an answer holding resource types this key's search cannot return.

    A Condition search answered with Observations is a broken server (or a wrong base URL);
    using half of it would state facts from the wrong data, so the whole key is ``failed``.
    """
    unexpected = [r for r in result.resources if r["resourceType"] not in KEY_TYPES[key]]
    if unexpected:   # their type names are the server's text: counted, never echoed into a log line
        raise FhirUnavailable(f"The FHIR server answered the {key} search with {len(unexpected)} resource(s) "
                              "of a type it cannot return; check that fhirServer is the EHR's R4 base URL.")


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


def cache_key(hook: HookRequest, key: str) -> CacheKey:
    """Server, patient, user and token hash: a cached search is reused only by its own caller."""
    token = hook.access_token
    token_part = hashlib.sha256(token.encode()).hexdigest() if token else "no-token"
    return (normalise_base(hook.fhir_server or ""), hook.patient_id, hook.user_id or "",
            token_part, key)


def build_record(patient_id: str, data: Mapping[str, KeyData]) -> PatientRecord:
    """Group every key's resources by type, once per ``Type/id``, earlier keys winning."""
    grouped: dict[str, list[dict]] = {}
    seen: set[tuple[str, str]] = set()
    for key in (k for k in PREFETCH if k in data):   # a prefetch-only key the EHR did not send is absent
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
        sources={key: data[key].source for key in PREFETCH if key in data},
    )


def payers_not_in(resources: tuple[dict, ...]) -> list[str]:
    """``Organization/<id>`` of every Coverage payor reference whose Organization is not among
    ``resources`` (relative, absolute or versioned references; others are ignored)."""
    present = {f"{r.get('resourceType')}/{r.get('id')}" for r in resources if isinstance(r, dict)}
    wanted = []
    for coverage in resources:
        if not isinstance(coverage, dict) or coverage.get("resourceType") != "Coverage":
            continue
        for payor in coverage.get("payor") if isinstance(coverage.get("payor"), list) else []:
            reference = payor.get("reference") if isinstance(payor, dict) else None
            if isinstance(reference, str):
                local = local_reference(reference)
                if local.startswith("Organization/") and FHIR_ID.fullmatch(local[13:]) and local not in present:
                    wanted.append(local)
    return list(dict.fromkeys(wanted))

