"""Note attachments kept on the EHR's FHIR server, read so the narrative reader can see them.

A ``DocumentReference`` (or a report's ``presentedForm``) often carries its text as
``Attachment.url`` pointing at a ``Binary`` on the same FHIR server instead of inline ``data``.
Such a Binary is read with the EHR's token, as FHIR JSON (its ``data`` is base64), at most
``SPINE_CDS_NOTE_ATTACHMENT_MAX_BYTES`` of it, within the hook's deadline, and copied into the
attachment as ``data``.  A URL anywhere else is never fetched (the SSRF rules: only the
``fhirServer`` the EHR named, and only its ``Binary`` reads); the narrative reader lists it as
not read.  Only text attachments are fetched: a PDF would not be read anyway.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, wait
from urllib.parse import urlsplit

from cds_service.errors import CdsBadRequest, FhirUnavailable
from cds_service.model import FHIR_ID

log = logging.getLogger(__name__)

MAX_FETCHED = 40
"""Most Binary reads for one hook call (the newest notes come first in the search)."""
TEXT_TYPES = ("text/plain", "text/html", "application/xhtml+xml")
OWNERS = {"documentReferences": "content", "diagnosticReports": "presentedForm"}


def binary_id(url: object, base_url: str) -> str | None:
    """The Binary id ``url`` names on ``base_url`` ("Binary/1" or "<base>/Binary/1"), else None."""
    if not isinstance(url, str) or "\\" in url:
        return None
    path = url[len(base_url):] if url.startswith(base_url + "/") else url
    if urlsplit(path).scheme or urlsplit(path).netloc:
        return None
    kind, _, rid = path.lstrip("/").partition("/")
    return rid if kind == "Binary" and FHIR_ID.fullmatch(rid) else None


def wanted(resources: tuple[dict, ...], key: str, base_url: str) -> Iterator[tuple[dict, str]]:
    """(attachment, Binary id) of text attachments without data that live on ``base_url``."""
    for resource in resources:
        holders = resource.get(OWNERS[key]) if isinstance(resource, dict) else None
        for holder in holders if isinstance(holders, list) else ():
            attachment = holder.get("attachment") if key == "documentReferences" and isinstance(holder, dict) else holder
            if not isinstance(attachment, dict) or "data" in attachment:
                continue
            kind = str(attachment.get("contentType") or "text/plain").split(";")[0].strip().lower()
            rid = binary_id(attachment.get("url"), base_url)
            if rid and kind in TEXT_TYPES:
                yield attachment, rid


def inline(resources_by_key: dict[str, tuple[dict, ...]], base_url: str, read_binary: Callable[[str], dict],
           executor: Executor, deadline: float) -> dict[str, tuple[dict, ...]]:
    """Copies of the resources with fetched Binary content inlined as ``data``; resources
    whose attachments could not be read are returned unchanged (the reader says so)."""
    copies = {key: tuple(_copy(r, key) for r in resources) for key, resources in resources_by_key.items()}
    jobs = [(attachment, rid) for key, resources in copies.items() for attachment, rid in wanted(resources, key, base_url)]
    futures = {executor.submit(read_binary, rid): attachment for attachment, rid in jobs[:MAX_FETCHED]}
    done, _ = wait(futures, timeout=max(0.0, deadline - time.monotonic()))
    for future, attachment in futures.items():
        if future not in done:
            future.cancel()
            continue
        try:
            binary = future.result()
        except (FhirUnavailable, CdsBadRequest) as exc:
            log.info("note attachment not read: %s", exc.message)
            continue
        if isinstance(binary.get("data"), str):
            attachment["data"] = binary["data"]
            attachment.setdefault("contentType", binary.get("contentType"))
    return copies


def _copy(resource: dict, key: str) -> dict:
    """A copy deep enough to set ``data`` on its attachments without touching the original
    (which may sit in the patient-data cache)."""
    if not isinstance(resource, dict) or not isinstance(resource.get(OWNERS[key]), list):
        return resource
    holders = []
    for holder in resource[OWNERS[key]]:
        if key == "documentReferences" and isinstance(holder, dict) and isinstance(holder.get("attachment"), dict):
            holder = {**holder, "attachment": dict(holder["attachment"])}
        elif isinstance(holder, dict):
            holder = dict(holder)
        holders.append(holder)
    return {**resource, OWNERS[key]: holders}
