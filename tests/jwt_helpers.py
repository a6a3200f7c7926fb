"""Shared JWT test helpers: a local JWKS server that counts requests, JWK export, and client JWTs."""
from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt


def public_jwk(private_key, kid: str, alg: str) -> dict:
    algo = jwt.algorithms.ECAlgorithm if alg.startswith("ES") else jwt.algorithms.RSAAlgorithm
    jwk = algo.to_jwk(private_key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


def client_jwt(private_key, issuer: str, audience: str, kid: str = "k1") -> str:
    """A CDS client JWT as an EHR signs one call: ES384, exp = iat + 300 s, a fresh jti."""
    now = int(time.time())
    claims = {"iss": issuer, "aud": audience, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    return jwt.encode(claims, private_key, algorithm="ES384", headers={"kid": kid})


class JwksServer:
    """Serves ``self.jwks`` at every path ending in ``jwks.json`` (or ``self.status``), counting requests."""

    def __init__(self):
        self.jwks: dict = {"keys": []}
        self.status = 200
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server naming)
                server.requests += 1
                ok = self.path.endswith("jwks.json") and server.status == 200
                body = json.dumps(server.jwks).encode() if ok else b"{}"
                self.send_response(server.status if ok or server.status != 200 else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class TricklingJwks:
    """A JWKS host that serves ``jwks`` until :meth:`trickle` is called, then answers every request
    one byte a second — the status line and headers too when ``headers_too`` — for ``seconds``.

    It records each connection's (opened, closed) times (``time.monotonic()``), so a test can
    show that a client gave up at its bound rather than when the trickle ended (finding 4).
    """

    def __init__(self, jwks: dict, seconds: int = 120):
        import socket
        self.jwks, self.seconds = jwks, seconds
        self.trickling, self.headers_too = False, False
        self.connections: list[list[float | None]] = []   # [opened, closed or None]
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/jwks.json"
        threading.Thread(target=self._accept, daemon=True).start()

    def trickle(self, *, headers_too: bool = False) -> None:
        self.trickling, self.headers_too = True, headers_too

    def open_now(self) -> int:
        return sum(1 for _, closed in list(self.connections) if closed is None)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn) -> None:
        with conn:
            conn.recv(65536)
            if not self.trickling:
                body = json.dumps(self.jwks).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body) + body)
                return
            record = [time.monotonic(), None]
            self.connections.append(record)
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
            if not self.headers_too:
                conn.sendall(head)
                head = b""
            payload = head + b"{" + b" " * self.seconds
            try:
                for byte in payload[:self.seconds]:
                    conn.sendall(bytes([byte]))
                    for _ in range(10):
                        time.sleep(0.1)
                        if _closed(conn):
                            return
            except OSError:
                pass
            finally:
                record[1] = time.monotonic()

    def close(self) -> None:
        self.sock.close()


def _closed(conn) -> bool:
    """The peer has closed (or reset) the connection; checked without blocking."""
    import socket
    try:
        return conn.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
