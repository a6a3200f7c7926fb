"""A tiny threaded FHIR server on 127.0.0.1 for tests of the FHIR client and the gatherer.

It holds resources per type, answers ``GET /Type/id`` and ``GET /Type?patient=<id>`` with
searchset Bundles (paged with ``next`` links when ``_count`` is small), checks a bearer token,
counts connections, requests and the most requests in flight at once, and can be told to be
slow, to fail (HTTP 500 / 401 / not JSON) or to send endless or foreign ``next`` links.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit


class _Server(ThreadingHTTPServer):
    """Joins its handler threads on close, so no test leaks a thread."""

    daemon_threads = False
    block_on_close = True
    request_queue_size = 64     # the default 5 drops SYNs of parallel clients (1 s retry)

    def __init__(self, stub: FhirStub):
        self.stub = stub
        super().__init__(("127.0.0.1", 0), _Handler)

    def verify_request(self, request, client_address) -> bool:
        with self.stub.lock:
            self.stub.connections += 1
        return True

    def handle_error(self, request, client_address) -> None:
        """A client that timed out and hung up is expected here; stay quiet about it."""


class FhirStub:
    """Configure by attributes; use as a context manager (starts and stops the server)."""

    def __init__(self, token: str | None = None):
        self.token = token                      # required bearer token, or None for open
        self.resources: dict[str, list[dict]] = {}
        self.delay = 0.0                        # seconds before each answer
        self.fail_status: int | None = None     # answer every request with this status
        self.not_json = False                   # answer with an HTML page
        self.endless_next = False               # every page has a next link
        self.next_base: str | None = None       # base URL put in next links (default: ours)
        self.lock = threading.Lock()
        self.connections = 0
        self.requests: list[str] = []           # request paths, in arrival order
        self.authorization: list[str | None] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._stopping = threading.Event()
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, *resources: dict) -> FhirStub:
        for resource in resources:
            self.resources.setdefault(resource["resourceType"], []).append(resource)
        return self

    def __enter__(self) -> FhirStub:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def wait(self, seconds: float) -> None:
        """Sleep, but wake at once when the stub is closing."""
        if seconds:
            self._stopping.wait(seconds)

    def answer(self, path: str, authorization: str | None) -> tuple[int, object]:
        """Status and JSON body (or text) for one GET."""
        if self.fail_status:
            return self.fail_status, _outcome("configured failure")
        if self.token and authorization != f"Bearer {self.token}":
            return 401, _outcome("bad token")
        if self.not_json:
            return 200, "<html>login page</html>"
        parts = urlsplit(path)
        segments = [s for s in parts.path.split("/") if s]
        if len(segments) == 2:
            return self._read(*segments)
        if len(segments) == 1:
            return 200, self._search(segments[0], parse_qs(parts.query))
        return 404, _outcome("unknown path")

    def _read(self, rtype: str, rid: str) -> tuple[int, dict]:
        for resource in self.resources.get(rtype, []):
            if resource.get("id") == rid:
                return 200, resource
        return 404, _outcome("not found")

    def _search(self, rtype: str, query: dict[str, list[str]]) -> dict:
        patient = query.get("patient", [None])[0]
        matches = [r for r in self.resources.get(rtype, []) if _is_for(r, patient)]
        count = int(query.get("_count", ["1000"])[0])
        offset = int(query.get("_offset", ["0"])[0])
        page = matches[offset:offset + count]
        entries = [{"resource": r, "search": {"mode": "match"}} for r in page]
        entries += self._included(page, query.get("_include", []))
        bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(matches),
                  "entry": entries, "link": []}
        if self.endless_next or offset + count < len(matches):
            next_query = {k: v[0] for k, v in query.items()} | {"_offset": offset + count}
            base = self.next_base or self.url
            bundle["link"].append({"relation": "next", "url": f"{base}/{rtype}?{urlencode(next_query)}"})
        return bundle

    def _included(self, page: list[dict], includes: list[str]) -> list[dict]:
        """Organizations named by ``Coverage.payor`` when ``_include=Coverage:payor``."""
        if "Coverage:payor" not in includes:
            return []
        refs = {p.get("reference") for r in page for p in r.get("payor", [])}
        return [{"resource": org, "search": {"mode": "include"}}
                for org in self.resources.get("Organization", [])
                if f"Organization/{org.get('id')}" in refs]


def _is_for(resource: dict, patient: str | None) -> bool:
    if patient is None:
        return True
    if resource["resourceType"] == "Patient":
        return resource.get("id") == patient
    wanted = f"Patient/{patient}"
    return any((resource.get(field) or {}).get("reference") == wanted
               for field in ("subject", "patient", "beneficiary"))


def _outcome(text: str) -> dict:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "processing", "diagnostics": text}]}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        stub = self.server.stub
        with stub.lock:
            stub.requests.append(self.path)
            stub.authorization.append(self.headers.get("Authorization"))
            stub.in_flight += 1
            stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
        try:
            stub.wait(stub.delay)
            status, body = stub.answer(self.path, self.headers.get("Authorization"))
            self._send(status, body)
        finally:
            with stub.lock:
                stub.in_flight -= 1

    def _send(self, status: int, body: object) -> None:
        is_json = not isinstance(body, str)
        data = (json.dumps(body) if is_json else body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json" if is_json else "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:
        """Keep test output clean."""
