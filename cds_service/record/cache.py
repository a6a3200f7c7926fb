"""Patient data read from FHIR servers, kept between hook calls in the shared cache.

order-select fires on every edit of an order, so the same searches repeat within seconds; a
short-lived cache (``SPINE_CDS_CACHE_TTL_S``) saves the EHR's FHIR server those round trips.
The key is built by the gatherer from the server, patient, user and a hash of the access token,
so one user's token never serves another user's request; the shared cache hashes it again
before it reaches a backend, so neither the patient id nor the token is stored in clear.

Where the values live is :mod:`cds_service.runtime.shared_cache`'s choice
(``SPINE_CDS_CACHE_URL``): by default on disk, shared by every worker of the host — a repeated
order-select reads nothing again whichever worker it lands on (issue #14, finding 7) — or in
Redis for several hosts.  A failing cache degrades to reading from the FHIR server.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cds_service.record.fhir_client import SearchResult
from cds_service.runtime.shared_cache import SharedCache, open_shared_cache

if TYPE_CHECKING:  # annotations only: keeps this module importable on its own
    from cds_service.runtime.settings import Settings

log = logging.getLogger(__name__)

CacheKey = tuple[str, ...]
NAMESPACE = "patient-data"


class PatientDataCache:
    """What the gatherer needs: look several keys up at once, store one result.

    ``owns`` says whether :meth:`close` closes the shared cache too (a cache made for this
    gatherer alone) or leaves it to the app that shares it.
    """

    def __init__(self, shared: SharedCache, ttl_s: float, owns: bool = False):
        self.shared, self._ttl_s, self._owns = shared, ttl_s, owns

    def get(self, key: CacheKey) -> SearchResult | None:
        return self.get_many([key])[0]

    def get_many(self, keys: Sequence[CacheKey]) -> list[SearchResult | None]:
        values = self.shared.get_many_json(NAMESPACE, [list(key) for key in keys])
        return [decode(value) if value is not None else None for value in values]

    def put(self, key: CacheKey, value: SearchResult) -> None:
        self.shared.put_json(NAMESPACE, list(key), encode(value), self._ttl_s)

    def close(self) -> None:
        if self._owns:
            self.shared.close()


def make_cache(settings: Settings, shared: SharedCache | None = None) -> PatientDataCache:
    """Patient data in ``shared``, or in a cache of its own as ``SPINE_CDS_CACHE_URL`` names
    (a bad URL is a :class:`~cds_service.errors.CdsConfigError` at start)."""
    if shared is not None:
        return PatientDataCache(shared, settings.cache_ttl_s)
    return PatientDataCache(open_shared_cache(settings), settings.cache_ttl_s, owns=True)


def encode(value: SearchResult) -> dict:
    return {"complete": value.complete, "resources": list(value.resources)}


def decode(value: object) -> SearchResult | None:
    """A stored value, or None (a miss) when it is not one of ours."""
    if (not isinstance(value, dict) or not isinstance(value.get("complete"), bool)
            or not isinstance(value.get("resources"), list)
            or not all(isinstance(r, dict) for r in value["resources"])):
        log.warning("ignored an unreadable patient-data cache entry")
        return None
    return SearchResult(tuple(value["resources"]), value["complete"])
