"""Which URLs a client JWT's ``aud`` may name: the URLs the operator configured or this server's
own address, never what the client says in its ``Host`` header (issue #14, finding 5).

Why: ``aud`` binds a token to one service.  When it was checked against the request URL, which
the ``Host`` header makes, a token minted for ``http://other-cds.example/...`` was accepted
here by sending ``Host: other-cds.example`` — any token for any CDS service reached through
this one was good here too.  So:

* ``SPINE_CDS_PUBLIC_BASE_URL`` set: that URL, nothing else.
* Otherwise the address the connection actually reached (gunicorn hands us the socket: its
  local IP and port, ``localhost`` too on loopback, this machine's host name), scheme https
  only when the socket is TLS; under another WSGI server, the server name it was configured
  with (``SERVER_NAME``/``SERVER_PORT``).
* ``X-Forwarded-Proto``/``X-Forwarded-Host`` only from a peer in ``SPINE_CDS_TRUSTED_PROXIES``
  (default none); such a proxy must set them itself, not pass on its client's ``Host``.
"""
from __future__ import annotations

import ipaddress
import re
import socket
import ssl
from functools import lru_cache

_DEFAULT_PORT = {"http": 80, "https": 443}
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


def audiences(environ: dict, path: str, public_base_url: str, trusted_proxies: tuple[str, ...]) -> tuple[str, ...]:
    """Every URL of ``path`` on this service that a token's ``aud`` may name."""
    path = "/" + path.lstrip("/")
    if public_base_url:
        return (public_base_url.rstrip("/") + path,)
    found = [base + path for base in own_bases(environ)]
    if (forwarded := forwarded_base(environ, trusted_proxies)) is not None:
        found.append(forwarded + path)
    return tuple(found)


def own_bases(environ: dict) -> list[str]:
    """``scheme://host[:port]`` of this server as the connection reached it."""
    sock = environ.get("gunicorn.socket")
    try:
        local = sock.getsockname() if sock is not None else None
    except OSError:
        local = None
    if local is None:   # not gunicorn: the server name the WSGI server was configured with
        scheme = environ.get("wsgi.url_scheme", "http")
        return _bases(scheme, [environ.get("SERVER_NAME", "")], _port(environ.get("SERVER_PORT")))
    scheme = "https" if isinstance(sock, ssl.SSLSocket) else "http"
    return _bases(scheme, _names(local[0]), local[1])


def forwarded_base(environ: dict, trusted_proxies: tuple[str, ...]) -> str | None:
    """The base URL a trusted proxy says the client called, or None."""
    if not trusted_proxies or not _is_trusted(environ.get("REMOTE_ADDR", ""), trusted_proxies):
        return None
    host = environ.get("HTTP_X_FORWARDED_HOST", "").split(",")[0].strip()
    proto = environ.get("HTTP_X_FORWARDED_PROTO", "").split(",")[0].strip().lower()
    if not host or not _HOST.match(host) or proto not in ("", "http", "https"):
        return None
    return f"{proto or 'http'}://{host.lower()}"


def _is_trusted(peer: str, trusted_proxies: tuple[str, ...]) -> bool:
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(entry, strict=False) for entry in trusted_proxies)


def _names(ip: str) -> list[str]:
    """The names this server answers to at local address ``ip``."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return [ip]
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    names = [f"[{address}]" if address.version == 6 else str(address)]
    if address.is_loopback:
        names.append("localhost")
    names.extend(_host_names())
    return names


@lru_cache(maxsize=1)
def _host_names() -> tuple[str, ...]:
    """This machine's own host name (no DNS lookup: the name it is configured with)."""
    name = socket.gethostname().lower()
    return (name,) if name else ()


def _bases(scheme: str, hosts: list[str], port: int | None) -> list[str]:
    bases = []
    for host in filter(None, (h.lower() for h in hosts)):
        if port is None or port == _DEFAULT_PORT.get(scheme):
            bases.append(f"{scheme}://{host}")
        if port is not None:
            bases.append(f"{scheme}://{host}:{port}")
    return bases


def _port(text) -> int | None:
    return int(text) if isinstance(text, str) and text.isdigit() else None
