"""Connect to the address the SSRF guard checked, not to whatever DNS says next (issue #14,
finding 8: DNS rebinding).

Why: the guard (fhir_client.check_fhir_server_allowed) resolves ``fhirServer``'s host and refuses
private addresses, then requests used to resolve the host again to connect.  A name server the
attacker controls can answer a public address the first time and 127.0.0.1 the second, and the
searches — with the EHR's bearer token — go to the loopback service.  Here the addresses the
guard checked are *pinned* for the requests of one client (a context variable, so each hook
call's threads see their own), and the connection classes of the session's pools connect to a
pinned address instead of resolving.  The connection keeps the host name for TLS: SNI and
certificate verification are still against the name in ``fhirServer``.

A pooled connection is reused only for the same host and port, and it was opened to an address
the guard accepted; an HTTP(S) proxy from the environment resolves the host itself (then the
proxy is where rebinding must be handled).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util.connection import create_connection

_PINS: ContextVar[dict[tuple[str, int], tuple[str, ...]] | None] = ContextVar("spine_cds_fhir_pins", default=None)


@contextlib.contextmanager
def pinned(host: str, port: int, addresses: tuple[str, ...] | None) -> Iterator[None]:
    """Within this block, new connections to ``host:port`` go to ``addresses`` (in order)."""
    if not addresses:
        yield
        return
    token = _PINS.set({**(_PINS.get() or {}), (host.lower(), port): tuple(addresses)})
    try:
        yield
    finally:
        _PINS.reset(token)


class _Pinned:
    """Connection mixin: open the socket to a pinned address when there is one.

    urllib3's own ``_new_conn`` connects to ``_dns_host``, which is also what ``host`` (SNI,
    certificate check) reads, so it cannot be pointed elsewhere: the socket is opened here."""

    def _new_conn(self):
        pins = _PINS.get()
        addresses = pins.get((self.host.lower().strip("[]"), self.port)) if pins else None
        if not addresses:
            return super()._new_conn()
        failure: Exception | None = None
        for address in addresses:
            try:
                return create_connection((address, self.port), self.timeout, source_address=self.source_address,
                                         socket_options=self.socket_options)
            except TimeoutError:
                failure = ConnectTimeoutError(self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})")
            except OSError as exc:
                failure = NewConnectionError(self, f"Failed to establish a new connection: {exc}")
        raise failure


class _PinnedHTTPConnection(_Pinned, HTTPConnection):
    pass


class _PinnedHTTPSConnection(_Pinned, HTTPSConnection):
    pass


class _PinnedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PinnedHTTPConnection


class _PinnedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PinnedHTTPSConnection


class PinnedAdapter(HTTPAdapter):
    """requests' adapter whose pools honour :func:`pinned`."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _PinnedHTTPPool, "https": _PinnedHTTPSPool}


def pin_connections(session: requests.Session) -> None:
    """Make ``session``'s http and https connections honour pins (idempotent)."""
    for prefix in ("http://", "https://"):
        if not isinstance(session.get_adapter(prefix + "x"), PinnedAdapter):
            session.mount(prefix, PinnedAdapter())
