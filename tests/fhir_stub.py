"""A tiny threaded FHIR server on 127.0.0.1 for tests of the FHIR client and the gatherer.

It holds resources per type, answers ``GET /Type/id`` and ``GET /Type?patient=<id>`` with
searchset Bundles (paged with ``next`` links when ``_count`` is small), checks a bearer token,
counts connections, requests and the most requests in flight at once, and can be told to be
slow (every answer, or only some paths), to fail (HTTP 500 / 401 / not JSON / broken JSON / a
fixed wrong answer), to send endless or foreign ``next`` links, to send a huge body (declared or
endless) while counting the bytes the client took, or to hold requests until several are in
flight at once (proof of parallel searches by count, not by time).  :func:`closed_port_url` is
a server that is down (connection refused).
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable, Collection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

from ports import free_port


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

    def __init__(self, token: str | Collection[str] | None = None):
        self.token = token                      # accepted bearer token(s), or None for open
        self.resources: dict[str, list[dict]] = {}
        self.delay = 0.0                        # seconds before each answer
        self.delay_when: Callable[[str], float] | None = None  # path -> extra seconds
        self.fail_status: int | None = None     # answer every request with this status
        self.not_json = False                   # answer with an HTML page
        self.ignore_include = False             # ignore _include, as Medplum's engine does
        self.answer_with: dict | bytes | None = None  # answer every request 200 with this
        self.endless_next = False               # every page has a next link
        self.next_base: str | None = None       # base URL put in next links (default: ours)
        self.huge_body: str | None = None       # "declared" (Content-Length: 1 GiB) or "endless"
        self.huge_body_for = "/"                # ... for paths starting with this
        self.huge_body_pause = 0.0              # seconds between its 64 KiB chunks (a trickle)
        self.body_bytes_sent = 0                # huge-body bytes written before the client hung up
        self.hold_until_in_flight = 0           # hold each request until this many are in flight
        self.hold_timeout = 5.0                 # ... or this many seconds passed
        self.lock = threading.Lock()
        self._arrived = threading.Condition(self.lock)
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

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def arrive(self, path: str, authorization: str | None) -> None:
        """Count one request in flight; hold it while fewer than ``hold_until_in_flight`` are."""
        with self._arrived:
            self.requests.append(path)
            self.authorization.append(authorization)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._arrived.notify_all()
            self._arrived.wait_for(lambda: self.max_in_flight >= self.hold_until_in_flight
                                   or self._stopping.is_set(), timeout=self.hold_timeout)

    def accepts(self, authorization: str | None) -> bool:
        if not self.token:
            return True
        tokens = [self.token] if isinstance(self.token, str) else list(self.token)
        return authorization in {f"Bearer {token}" for token in tokens}

    def answer(self, path: str, authorization: str | None) -> tuple[int, object]:
        """Status and JSON body (or text) for one GET."""
        if self.fail_status:
            return self.fail_status, _outcome("configured failure")
        if not self.accepts(authorization):
            return 401, _outcome("bad token")
        if self.not_json:
            return 200, "<html>login page</html>"
        if self.answer_with is not None:
            return 200, self.answer_with
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
        if "Coverage:payor" not in includes or self.ignore_include:
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


def resources_in(prefetch: dict) -> list[dict]:
    """Every resource of a prefetch object (resources and Bundle entries): a record for the stub."""
    found = []
    for value in prefetch.values():
        if isinstance(value, dict) and value.get("resourceType") == "Bundle":
            found += [e["resource"] for e in value.get("entry", []) if "resource" in e]
        elif isinstance(value, dict):
            found.append(value)
    return found


def without_prefetch(request: dict, server: str, token: str, user: str | None = None) -> dict:
    """``request`` (a CDS Hooks call) with no prefetch: everything must come from ``server``."""
    changed = {k: v for k, v in request.items() if k != "prefetch"}
    changed["fhirServer"] = server
    changed["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer", "expires_in": 300,
                                    "scope": "user/*.read", "subject": "spine-cds"}
    changed["context"] = dict(request["context"], **({"userId": user} if user else {}))
    return changed


def closed_port_url() -> str:
    """The URL of a port on 127.0.0.1 with nothing listening: a FHIR server that is down."""
    return f"http://127.0.0.1:{free_port()}"


def _outcome(text: str) -> dict:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "processing", "diagnostics": text}]}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        stub = self.server.stub
        stub.arrive(self.path, self.headers.get("Authorization"))
        try:
            stub.wait(stub.delay + (stub.delay_when(self.path) if stub.delay_when else 0.0))
            if stub.huge_body and self.path.startswith(stub.huge_body_for):
                self._send_huge(stub)
                return
            status, body = stub.answer(self.path, self.headers.get("Authorization"))
            self._send(status, body)
        finally:
            with stub.lock:
                stub.in_flight -= 1

    def _send(self, status: int, body: object) -> None:
        if isinstance(body, bytes):     # raw bytes sent as FHIR JSON: broken JSON
            data, content_type = body, "application/fhir+json"
        elif isinstance(body, str):
            data, content_type = body.encode(), "text/html"
        else:
            data, content_type = json.dumps(body).encode(), "application/fhir+json"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_huge(self, stub: FhirStub) -> None:
        """A Bundle that never ends, until the client hangs up (or 256 MiB, a safety net)."""
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        if stub.huge_body == "declared":
            self.send_header("Content-Length", str(1 << 30))
        self.end_headers()
        entry = json.dumps({"resource": {"resourceType": "Condition", "id": "x" * 200}}) + ","
        chunk = (entry * (64 * 1024 // len(entry))).encode()
        data = b'{"resourceType": "Bundle", "type": "searchset", "entry": ['
        sent = 0
        try:
            while sent < _SAFETY_NET_BYTES and not stub.stopping:
                self.wfile.write(data)
                sent += len(data)
                with stub.lock:
                    stub.body_bytes_sent += len(data)
                data = chunk
                stub.wait(stub.huge_body_pause)
        except OSError:
            pass                        # the client refused the rest: what we want to see
        self.close_connection = True

    def log_message(self, format: str, *args) -> None:
        """Keep test output clean."""


_SAFETY_NET_BYTES = 256 << 20
"""Most bytes of a huge body the stub sends: a client that fails to stop still ends, in bounded memory."""
