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
