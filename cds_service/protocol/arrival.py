"""When a request arrived, so ``SPINE_CDS_DEADLINE_S`` counts from there (issue #14, finding 10).

Why: the deadline used to start when data gathering started, so a call that had waited for a
free worker thread answered long after the EHR's few seconds (10.5 s in one run).  A request
can wait in the kernel's listen queue or, accepted, in the worker's queue for a thread; neither
leaves a mark in the WSGI environ.  The kernel keeps one, though: ``TCP_INFO`` says how long ago
the connection last received data (``tcpi_last_data_recv``, in ms), which for a request read
when a thread takes it up is how long the request sat waiting.  So the arrival is "now minus
that", taken when the app is first called (:func:`stamp_arrival`); without gunicorn's socket or
TCP_INFO (another server, another OS) it is the moment the app was called.
"""
from __future__ import annotations

import socket
import struct
import time

ARRIVED = "spine_cds.arrived"   # environ key: the arrival as a time.monotonic() value
_TCP_INFO_BYTES = 104
_LAST_DATA_RECV = 52            # offset of tcpi_last_data_recv (u32, ms) in Linux's struct tcp_info


def stamp_arrival(wsgi_app):
    """WSGI middleware: record the request's arrival in the environ before anything else runs."""
    def app(environ, start_response):
        environ.setdefault(ARRIVED, arrival(environ))
        return wsgi_app(environ, start_response)
    return app


def arrival(environ: dict) -> float:
    """The request's arrival as a ``time.monotonic()`` value."""
    return time.monotonic() - _waited_s(environ.get("gunicorn.socket"))


def arrived(environ: dict) -> float:
    """The stamped arrival (or now, for an environ the middleware never saw)."""
    return environ.get(ARRIVED) or arrival(environ)


def _waited_s(sock) -> float:
    """Seconds since the connection last received data, from the kernel; 0 when unknown."""
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return 0.0
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_BYTES)
    except (OSError, AttributeError, TypeError):
        return 0.0
    if len(info) < _LAST_DATA_RECV + 4:
        return 0.0
    return struct.unpack_from("I", info, _LAST_DATA_RECV)[0] / 1000
