"""The trusted issuers' key sets (JWKS): fetched from the configured URL only, in bounded time,
never making a call whose key is cached wait (issue #14, findings 4 and 14).

Why this shape: one trusted JWKS host sending a byte a second, plus forged tokens with unknown
``kid``s, used to freeze authentication for minutes — the timeout applied to each socket read
(each byte came in time) and a per-URL lock was held during the download, also by calls whose
key was cached.  Now:

* A download has a wall-clock bound (:data:`FETCH_DEADLINE_S`, connect, headers and body
  together) and a size cap.  A watchdog shuts the socket at the deadline, so even a host that
  trickles its status line or headers cannot hold a thread longer (``http.client`` is used
  rather than requests because it hands us the socket to shut).
* A cached key set answers without any lock.  One refresh per URL runs at a time: calls that
  find it running use the cached set or, with nothing cached, wait at most the fetch bound.
* Fetches per URL are rate-limited (``SPINE_CDS_JWKS_REFRESH_INTERVAL_S``, each worker), so
  unknown ``kid``s cannot turn us into a load generator against the issuer's host.

Dict reads and writes are atomic under the GIL; entries are immutable tuples, so readers need
no lock.
"""
from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import urlsplit

from requests.certs import where as ca_bundle

log = logging.getLogger(__name__)

FETCH_DEADLINE_S = 3.0   # the whole download: connect, status line, headers and body
READ_TIMEOUT_S = 1.0     # each connect and socket read, within the deadline
MAX_JWKS_BYTES = 256 * 1024
_CHUNK = 16 * 1024


class KeySet(NamedTuple):
    keys: dict[str, dict]   # {kid: jwk}
    fetched_at: float       # the injected clock's time


class KeySets:
    """The key sets of the trusted JWKS URLs, cached for ``ttl`` and refreshed as described above.

    A set past its TTL is still used while its refresh is running or failing, for at most one
    more TTL (then calls get 401 until the host answers again).  ``clock`` is injectable, and
    ``fetch`` (url -> {kid: jwk} or None) replaceable, e.g. by tests that answer the sandbox's
    JWKS in-process.
    """

    def __init__(self, urls, *, ttl: float, refresh_interval: float,
                 clock: Callable[[], float] = time.time, fetch: Callable[[str], dict | None] | None = None):
        self._ttl = ttl
        self._interval = refresh_interval
        self._clock = clock
        self.fetch = fetch or fetch_jwks
        self._sets: dict[str, KeySet] = {}
        self._tried: dict[str, float] = {}   # last fetch attempt per URL, success or not
        self._locks = {url: threading.Lock() for url in urls}

    def get(self, url: str, *, unknown_kid: bool = False) -> dict[str, dict] | None:
        """The key set of ``url``; ``unknown_kid`` asks for a refresh (rate-limited)."""
        entry = self._sets.get(url)
        now = self._clock()
        age = now - entry.fetched_at if entry else None
        if age is not None and age < self._ttl and not unknown_kid:
            return entry.keys
        usable = entry.keys if age is not None and age < 2 * self._ttl else None
        if self._recently_tried(url, now):
            return usable
        lock = self._locks[url]
        # With nothing usable, waiting for a fetch in flight is all a call can do (bounded);
        # otherwise never wait: the cached set answers while another call refreshes it.
        if not (lock.acquire(timeout=FETCH_DEADLINE_S + READ_TIMEOUT_S) if usable is None else lock.acquire(blocking=False)):
            return usable
        try:
            latest = self._sets.get(url)
            if latest is not entry:                      # refreshed while we waited
                return latest.keys
            if self._recently_tried(url, self._clock()):
                return usable
            self._tried[url] = self._clock()
            fresh = self.fetch(url)
            if fresh is None:
                return usable
            self._sets[url] = KeySet(fresh, self._clock())
            return fresh
        finally:
            lock.release()

    def _recently_tried(self, url: str, now: float) -> bool:
        last = self._tried.get(url)
        return last is not None and now - last < self._interval


def fetch_jwks(url: str, deadline_s: float = FETCH_DEADLINE_S) -> dict[str, dict] | None:
    """Download and parse one JWKS within ``deadline_s`` (wall clock); None, logged, when the
    host is unreachable, slow, answers anything but 200 JSON, or sends more than the cap."""
    keys, failure = _fetch(url, deadline_s)
    if failure:
        log.warning("could not fetch the JWKS at %s: %s", url, failure)
    return keys


def _fetch(url: str, deadline_s: float) -> tuple[dict[str, dict] | None, str | None]:
    """(the key set, None) or (None, why not)."""
    try:
        return parse_jwks(json.loads(_download(url, deadline_s))), None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return None, str(exc) or type(exc).__name__


def _download(url: str, deadline_s: float) -> bytes:
    """The body of ``GET url``; redirects are not followed (a redirect is an error)."""
    parts = urlsplit(url)
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)   # explicit: an IPv6 host has colons
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, port, timeout=READ_TIMEOUT_S, context=ssl.create_default_context(cafile=ca_bundle()))
    elif parts.scheme == "http":
        conn = http.client.HTTPConnection(parts.hostname, port, timeout=READ_TIMEOUT_S)
    else:
        raise ValueError("not an http(s) URL")
    ends = time.monotonic() + deadline_s
    watchdog = threading.Timer(deadline_s, _shut, args=(conn,))
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                     headers={"Accept": "application/json", "Accept-Encoding": "identity"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise ValueError(f"HTTP {resp.status}")
        declared = resp.getheader("Content-Length", "")
        if declared.isdigit() and int(declared) > MAX_JWKS_BYTES:
            raise ValueError("JWKS too large")
        body = bytearray()
        while chunk := resp.read1(_CHUNK):   # whatever has arrived: the deadline is checked often
            body += chunk
            if len(body) > MAX_JWKS_BYTES:
                raise ValueError("JWKS too large")
            if time.monotonic() >= ends:
                raise TimeoutError(f"not received within {deadline_s:g} s")
        return bytes(body)
    except OSError:
        if time.monotonic() >= ends:
            raise TimeoutError(f"not received within {deadline_s:g} s") from None
        raise
    finally:
        watchdog.cancel()
        conn.close()


def _shut(conn: http.client.HTTPConnection) -> None:
    """The watchdog: end a download still running at its deadline (the reading thread's
    blocked recv returns at once)."""
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def parse_jwks(data) -> dict[str, dict]:
    """{kid: jwk} of the asymmetric signing keys of a JWK Set; ValueError if it is not one."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError("not a JWK Set")
    return {
        k["kid"]: k for k in data["keys"]
        if isinstance(k, dict) and isinstance(k.get("kid"), str)
        and k.get("kty") in {"EC", "RSA"} and k.get("use", "sig") == "sig"
    }


def check_trusted_jwks(issuers: dict[str, str]) -> list[str]:
    """At start: fetch each configured JWKS once and log one line per issuer saying whether it is
    usable (finding 14: an operator learns at once that a mapped key set is wrong, not from 401s).
    Returns the issuers whose key set is not usable."""
    unusable = []
    for iss, url in issuers.items():
        keys, failure = _fetch(url, FETCH_DEADLINE_S)
        if keys:
            log.info("trusted issuer %s: JWKS at %s is usable (%d signing key(s))", iss, url, len(keys),
                     extra={"event": "jwks-check"})
        else:
            unusable.append(iss)
            log.warning("trusted issuer %s: JWKS at %s is NOT usable (%s); calls from this issuer get 401 until "
                        "it answers with its signing keys: check SPINE_CDS_TRUSTED_ISSUERS and that the URL is "
                        "reachable from this service", iss, url, failure or "it holds no ES384/RS384 signing key",
                        extra={"event": "jwks-check"})
    return unusable
