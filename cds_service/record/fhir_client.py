"""A small read-only client for the EHR's FHIR server, and the guard that decides we may call it.

Every call carries a (connect, read) timeout, a bearer token through :class:`BearerAuth` and
``Accept: application/fhir+json``; redirects are not followed, and ``next`` links that leave the
server's origin are ignored, so the EHR's token never travels to another host.  Every failure
becomes :class:`FhirUnavailable` with a message that says what to do and never holds the token
or a URL (URLs carry patient ids).

A client may carry the hook call's deadline (a ``time.monotonic()`` value): no request starts
after it, each request's timeout is cut to the time left, and bodies are read in chunks that
stop at the deadline, so paging through endless ``next`` links or a slow page 3 cannot keep a
worker thread busy long after the hook has answered.  Bodies are streamed and refused once one
search has read more than ``SPINE_CDS_MAX_REQUEST_BYTES`` (see :meth:`FhirClient._read_body`).

``fhirServer`` comes from the caller, so :func:`check_fhir_server_allowed` refuses URLs that
would make us fetch from loopback, private or link-local addresses (SSRF) unless the operator
listed them in ``SPINE_CDS_ALLOWED_FHIR_SERVERS``.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import math
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

import requests
import urllib3
from requests.auth import AuthBase
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from cds_service.errors import CdsBadRequest, FhirUnavailable
from cds_service.record.pinning import pin_connections, pinned
from cds_service.record.prefetch import bundle_resources, next_link

if TYPE_CHECKING:  # annotations only: keeps this module importable on its own
    from cds_service.runtime.settings import Settings

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_CHUNK_BYTES = 64 * 1024
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BearerAuth(AuthBase):
    """Attach ``Authorization: Bearer <token>``; its repr never shows the token."""

    def __init__(self, token: str):
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "BearerAuth(<redacted>)"


@dataclass(frozen=True)
class SearchResult:
    """The resources of a search; ``complete`` is False when pages were left unread."""

    resources: tuple[dict, ...]
    complete: bool


class FhirClient:
    """Reads and searches one FHIR server with one token, over a shared ``requests.Session``."""

    def __init__(self, base_url: str, access_token: str | None, session: requests.Session,
                 settings: Settings, deadline: float | None = None, pinned_to: tuple[str, ...] | None = None):
        """``pinned_to``: the addresses the SSRF guard checked for the host (pinning.py); every
        connection of this client goes to one of them, never to a second DNS answer."""
        self.base_url = base_url.rstrip("/")
        self._origin = origin(self.base_url)
        self._pinned_to = pinned_to
        if pinned_to:
            pin_connections(session)
        self._auth = BearerAuth(access_token) if access_token else None
        self._session = session
        self._timeout_s = settings.fhir_timeout_s
        self._deadline = math.inf if deadline is None else deadline
        self._max_pages = settings.fhir_max_pages
        self._page_size = settings.fhir_page_size
        self._max_bytes = settings.max_request_bytes

    def read(self, resource_type: str, resource_id: str, limit: int | None = None) -> dict:
        """``GET [base]/Type/id``; the answer must be that type, at most ``limit`` bytes."""
        url = f"{self.base_url}/{quote(resource_type, safe='')}/{quote(resource_id, safe='')}"
        what = f"{resource_type} read"
        resource, _ = self._get_json(url, what, limit or self._max_bytes)
        if resource.get("resourceType") != resource_type:
            raise FhirUnavailable(f"The FHIR server answered the {what} with something other "
                                  f"than a {resource_type}; check that fhirServer is an R4 FHIR base URL.")
        return resource

    def search(self, path_and_query: str) -> list[dict]:
        """All resources of a search (``Type?params``), following ``next`` links up to the page cap."""
        return list(self.search_result(path_and_query).resources)

    def search_result(self, path_and_query: str, *, max_pages: int | None = None) -> SearchResult:
        """Like :meth:`search`, but says whether every page was read.

        ``path_and_query`` may also be an absolute URL on this server (a ``next`` link from a
        prefetched Bundle); then no ``_count`` is added, the link carries its own.
        ``max_pages`` (optional) lowers the page cap, e.g. to 1 for "the newest N" searches.
        """
        url, what = self._first_url(path_and_query)
        pages = min(max_pages or self._max_pages, self._max_pages)
        resources: list[dict] = []
        budget = self._max_bytes    # for the whole search, so many mid-sized pages are capped too
        for _ in range(pages):
            bundle, size = self._get_json(url, what, budget)
            budget -= size
            entries = bundle.get("entry", [])
            if bundle.get("resourceType") != "Bundle" or not isinstance(entries, list):
                raise FhirUnavailable(f"The FHIR server answered the {what} without a searchset "
                                      "Bundle; check that fhirServer is an R4 FHIR base URL.")
            resources.extend(bundle_resources(entries))
            link = next_link(bundle)
            if link is None:
                return SearchResult(tuple(resources), True)
            url = urljoin(url, link)
            if origin(url) != self._origin:
                log.warning("%s: ignored a next link to another host", what)
                return SearchResult(tuple(resources), False)
        log.info("%s: stopped after %d page(s)", what, pages)
        return SearchResult(tuple(resources), False)

    def _first_url(self, path_and_query: str) -> tuple[str, str]:
        """The first page's URL and a PHI-free label for messages."""
        if path_and_query.startswith(("http://", "https://")):
            if origin(path_and_query) != self._origin:
                raise FhirUnavailable("A next link points to another host; it was not followed "
                                      "so the access token stays with the FHIR server.")
            return path_and_query, "next-page search"
        path, _, query = path_and_query.lstrip("/").partition("?")
        if "_count=" not in query:
            query = f"{query}&_count={self._page_size}" if query else f"_count={self._page_size}"
        return f"{self.base_url}/{path}?{query}", f"{path.split('/')[0]} search"

    def _get_json(self, url: str, what: str, limit: int) -> tuple[dict, int]:
        """GET one URL: its JSON object and body size, or raise :class:`FhirUnavailable`."""
        try:
            with pinned(self._origin[1], self._origin[2], self._pinned_to):   # next links: same origin
                response = self._session.get(url, auth=self._auth, headers={"Accept": FHIR_JSON},
                                             timeout=self._timeout(what), allow_redirects=False,
                                             stream=True)
        except requests.Timeout:
            raise self._too_slow(what) from None
        except requests.RequestException as exc:
            log.debug("%s failed: %s", what, type(exc).__name__)
            raise FhirUnavailable(f"Could not connect to the FHIR server for the {what}; check "
                                  "fhirServer and that it is reachable from this service.") from None
        with response:  # closing an unread streamed response drops the connection
            _check_status(response.status_code, what)
            data = self._read_body(response, what, limit)
        try:
            body = json.loads(data)
        except (ValueError, RecursionError):
            body = None
        if not isinstance(body, dict):
            raise FhirUnavailable(f"The FHIR server did not answer the {what} with a JSON "
                                  "resource; check that fhirServer is a FHIR base URL.")
        return body, len(data)

    def _read_body(self, response: requests.Response, what: str, limit: int) -> bytes:
        """The (decompressed) body, read in chunks: stop at ``limit`` bytes or the deadline.

        The cap is ``SPINE_CDS_MAX_REQUEST_BYTES`` per search: a hook request carrying the whole
        prefetch may be that large, so one search answering more is broken or hostile, and
        reading it all would only trade memory for a record we could not evaluate in time.
        """
        too_large = FhirUnavailable(
            f"The FHIR server's answer to the {what} is larger than {self._max_bytes} bytes (all "
            "pages of one search) and was not read; ask the EHR to prefetch this key, or raise "
            "SPINE_CDS_MAX_REQUEST_BYTES.")
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks, size = [], 0
        try:
            # read1 returns whatever has arrived, so a server trickling bytes meets the deadline too
            while chunk := response.raw.read1(_CHUNK_BYTES, decode_content=True):
                size += len(chunk)
                if size > limit:
                    raise too_large
                if time.monotonic() >= self._deadline:
                    raise self._too_slow(what)
                chunks.append(chunk)
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            log.debug("%s body failed: %s", what, type(exc).__name__)
            raise FhirUnavailable(f"The FHIR server stopped sending the {what} part-way; retry "
                                  "later or check the FHIR server's logs.") from None
        return b"".join(chunks)

    def _timeout(self, what: str) -> tuple[float, float]:
        """(connect, read) timeout: SPINE_CDS_FHIR_TIMEOUT_S, cut to the time left before the deadline."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise self._too_slow(what)
        seconds = min(self._timeout_s, left)
        return seconds, seconds

    def _too_slow(self, what: str) -> FhirUnavailable:
        return FhirUnavailable(f"The FHIR server did not answer the {what} in time (within "
                               f"SPINE_CDS_FHIR_TIMEOUT_S={self._timeout_s} s per request and the "
                               "hook's SPINE_CDS_DEADLINE_S); check that it is up and how fast it answers.")


def _check_status(status: int, what: str) -> None:
    """Raise :class:`FhirUnavailable` for any non-2xx status, saying what to do."""
    if 200 <= status < 300:
        return
    if status in (401, 403):
        message = (f"The FHIR server answered HTTP {status} to the {what}: the access token was "
                   "refused. The EHR must send a valid fhirAuthorization with read access to this patient.")
    elif 300 <= status < 400:
        message = (f"The FHIR server redirected the {what} (HTTP {status}); redirects are not "
                   "followed, so send fhirServer as the server's final base URL.")
    else:
        message = (f"The FHIR server answered HTTP {status} to the {what}; retry later or "
                   "check the FHIR server's logs.")
    raise FhirUnavailable(message)


def unambiguous(url: str) -> bool:
    """True when every URL parser reads the same host from ``url``.

    The guard reads hosts with ``urlsplit``; requests (urllib3) connects with its own parser,
    which ends the host at a backslash: ``https://127.0.0.1:8443\\@8.8.8.8/fhir`` is 8.8.8.8 to
    one and 127.0.0.1 to the other.  So a URL with a backslash, userinfo, whitespace or control
    characters is refused outright, and any other URL must give both parsers the same scheme,
    host and port.
    """
    if not isinstance(url, str) or "\\" in url or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return False
    try:
        parts, parsed = urlsplit(url), parse_url(url)
        port = parts.port
    except (ValueError, LocationParseError):
        return False
    if "@" in parts.netloc or parsed.auth:
        return False
    return ((parts.scheme or "").lower(), (parts.hostname or "").lower(), port) == \
        ((parsed.scheme or "").lower(), (parsed.host or "").lower().strip("[]"), parsed.port)


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the default port filled in, for same-origin checks; an
    ambiguous URL (see :func:`unambiguous`) has no origin that can match."""
    if not unambiguous(url):
        return "", "", -1
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"https": 443, "http": 80}.get(scheme)
    except ValueError:
        port = -1
    return scheme, (parts.hostname or "").lower(), port


def normalise_base(url: str) -> str:
    """Lower-case scheme and host, trailing slash stripped: how allowlist entries compare."""
    parts = urlsplit(url.strip())
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"),
                       parts.query, ""))


def check_fhir_server_allowed(url: str, settings: Settings) -> tuple[str, ...] | None:
    """Refuse a ``fhirServer`` that would make us fetch from a non-public address.

    Allowed: any URL in ``settings.allowed_fhir_servers`` (returns None: the operator named it),
    else an ``https`` URL whose host resolves only to public addresses, which are returned so
    the client connects to exactly those (pinning.py).  Raises :class:`CdsBadRequest` when
    refused and :class:`FhirUnavailable` when the host cannot be resolved right now.
    """
    if isinstance(url, str) and not unambiguous(url.strip()):
        raise CdsBadRequest("fhirServer must be a plain absolute http(s) URL: no backslash, user name, "
                            "password, spaces or control characters.")
    parts = urlsplit(url.strip()) if isinstance(url, str) else None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise CdsBadRequest("fhirServer must be an absolute http(s) URL of a FHIR server.")
    if normalise_base(url) in {normalise_base(u) for u in settings.allowed_fhir_servers}:
        return None
    refusal = (f"fhirServer host {parts.hostname} is {{why}}; this service only reads from public "
               "https FHIR servers unless the operator adds the URL to SPINE_CDS_ALLOWED_FHIR_SERVERS.")
    if parts.scheme.lower() != "https":
        raise CdsBadRequest(refusal.format(why="not https"))
    addresses = resolve(parts.hostname, origin(url)[2])
    for address in addresses:
        if not is_public_address(address):
            raise CdsBadRequest(refusal.format(why="on a loopback, private or reserved address"))
    return tuple(dict.fromkeys(addresses))


def resolve(host: str, port: int | None) -> list[str]:
    """Every address ``host`` resolves to."""
    try:
        infos = socket.getaddrinfo(host, port if port and port > 0 else 443,
                                   type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise FhirUnavailable(f"The FHIR server host {host} could not be resolved; check "
                              "fhirServer, or retry if DNS is down.") from None
    return [info[4][0] for info in infos]


def is_public_address(address: str) -> bool:
    """True when the address, and any IPv4 address embedded in it, is globally routable."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    return all(_is_public(candidate) for candidate in (ip, *_embedded_ipv4(ip)))


def _is_public(ip: IPAddress) -> bool:
    return ip.is_global and not (
        ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast
        or ip.is_reserved or ip.is_unspecified
    )


def _embedded_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses carried inside an IPv6 one (mapped, 6to4, Teredo, NAT64)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    found = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
    if ip in _NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return [v4 for v4 in found if v4 is not None]
