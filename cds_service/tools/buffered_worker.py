"""gunicorn's threaded worker (gthread), except that a request is read whole before a thread takes it.

Why: gthread hands a connection to one of its threads as soon as a byte arrives, and the thread
then reads the request with blocking reads.  A client that sends one header line every 2 s
holds that thread for as long as it likes: 40 such connections held every thread of every
worker, and /health and every hook call went unanswered (issue #14, finding 3).  Here the
worker's event loop (the one that already watches kept-alive connections) reads what each
connection has sent, without blocking, into a buffer of its own; only a request that has
arrived whole — head, and the body its Content-Length (or final chunk) announces — is handed
to a thread, which then parses it from memory.  A slow client costs one buffer and one of the
worker's ``worker_connections``, never a thread, and is dropped when its request has not
arrived within :data:`REQUEST_READ_TIMEOUT_S`.  Deciding stays on real threads: gevent's
workers, tried first, also kept serving, but answered about 0.75 x the calls (bench/load.py).

Relies on gunicorn's gthread internals (``TConn``, the poller, ``enqueue_req``), hence the
upper bound on gunicorn in pyproject.toml; tests/test_attacks_workers.py holds it to the
behaviour.
"""
from __future__ import annotations

import errno
import re
import selectors
import time
from collections import deque
from functools import partial

from gunicorn.workers.gthread import TConn, ThreadWorker

REQUEST_READ_TIMEOUT_S = 30.0
"""Longest a client may take to send one whole request (same as gunicorn's worker timeout)."""
MAX_BUFFERED_BYTES = 20_000_000 + (1 << 16)
"""Past this many bytes (SPINE_CDS_MAX_REQUEST_BYTES' default plus a head) the request goes to a
thread as it is: the app answers 413 without reading the rest."""
READ_CHUNK = 1 << 16
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*([0-9]+)[ \t]*(?=\r\n|$)")
_CHUNKED = re.compile(rb"\r\ntransfer-encoding[ \t]*:[^\r\n]*chunked")
_EXPECT_CONTINUE = re.compile(rb"\r\nexpect[ \t]*:[ \t]*100-continue")
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class PrefixedSocket:
    """A client socket whose first reads return what the event loop already read from it."""

    def __init__(self, sock):
        self.raw = sock
        self.prefix = bytearray()
        self.continued = False   # a 100 Continue was sent for the request being read

    def recv(self, size: int, *flags) -> bytes:
        if self.prefix:
            data = bytes(self.prefix[:size])
            del self.prefix[:size]
            return data
        return self.raw.recv(size, *flags)

    def recv_into(self, buffer, nbytes: int = 0, *flags) -> int:
        data = self.recv(nbytes or len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def __getattr__(self, name: str):
        return getattr(self.raw, name)


def expects_continue(data: bytes | bytearray) -> bool:
    """Whether the head (if whole) asks for ``100 Continue`` before its body is sent (curl does
    for bodies over 1 KiB): the body would not come until we answer, or the client tires."""
    end = data.find(b"\r\n\r\n")
    return end >= 0 and _EXPECT_CONTINUE.search(bytes(data[:end + 2]).lower()) is not None


def request_complete(data: bytes | bytearray) -> bool:
    """Whether ``data`` holds one whole HTTP/1.x request (or enough to stop buffering)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return len(data) > MAX_BUFFERED_BYTES
    head = bytes(data[:end + 2]).lower()
    if _CHUNKED.search(head):
        return data.find(b"0\r\n\r\n", end + 4) >= 0 or len(data) > MAX_BUFFERED_BYTES
    length = _CONTENT_LENGTH.search(head)
    if length is None:
        return True   # no body (or one the parser will refuse): the head is the request
    return len(data) - (end + 4) >= int(length.group(1)) or len(data) > MAX_BUFFERED_BYTES


class BufferingThreadWorker(ThreadWorker):
    """gthread whose threads only ever see requests that have arrived whole."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reading_conns: deque[TConn] = deque()

    def accept(self, listener) -> None:
        if self.cfg.is_ssl:   # the bytes are TLS records until a thread unwraps them: no buffering
            return super().accept(listener)
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        self._read_request(TConn(self.cfg, PrefixedSocket(client), address, listener.getsockname()))

    def on_client_socket_readable(self, conn, client) -> None:
        """A kept-alive connection is sending its next request: read it whole first too."""
        if self.cfg.is_ssl:
            return super().on_client_socket_readable(conn, client)
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._read_request(conn)

    def _read_request(self, conn: TConn) -> None:
        conn.sock.raw.setblocking(False)
        conn.sock.continued = False
        conn.timeout = time.monotonic() + REQUEST_READ_TIMEOUT_S
        self.reading_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_request_bytes, conn))
        self._on_request_bytes(conn, conn.sock)   # bytes may be there already (keep-alive)

    def _on_request_bytes(self, conn: TConn, _client) -> None:
        """Read what has arrived (never blocking); hand the request to a thread once whole."""
        buffer = conn.sock.prefix
        while True:
            try:
                chunk = conn.sock.raw.recv(READ_CHUNK)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                return self._drop(conn)
            if not chunk:
                return self._drop(conn)   # the client hung up before its request was whole
            buffer += chunk
            if len(chunk) < READ_CHUNK:
                break
        if request_complete(buffer):
            self._stop_reading(conn)
            conn.data_ready = True
            self.enqueue_req(conn)
        elif not conn.sock.continued and expects_continue(buffer):
            conn.sock.continued = True   # gunicorn sends its own later: a client takes several 1xx
            try:
                conn.sock.raw.send(CONTINUE)   # 25 bytes into an empty send buffer: never blocks
            except OSError:
                self._drop(conn)

    def _stop_reading(self, conn: TConn) -> None:
        self.poller.unregister(conn.sock)
        self.reading_conns.remove(conn)

    def _drop(self, conn: TConn) -> None:
        self._stop_reading(conn)
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        """Also drop connections whose request has not arrived whole in time (all of them when
        the worker is stopping: nothing of theirs has been started)."""
        super().murder_pending()
        now = time.monotonic()
        while self.reading_conns and (self.reading_conns[0].timeout <= now or not self.alive):
            self._drop(self.reading_conns[0])
