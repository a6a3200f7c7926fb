"""A FHIR server stub that behaves like HAPI where the loader and the compose demo need it.

``FhirStub`` (tests/fhir_stub.py) plus ``GET /metadata`` (answering 503 for the first
``not_ready`` calls, as HAPI does while it starts), identifier search, and ``POST /``
transactions that assign numeric ids and rewrite ``urn:uuid`` references, as HAPI does.
"""
from __future__ import annotations

import json
from urllib.parse import urlsplit

from fhir_stub import FhirStub, _Handler, _outcome


class _TransactionHandler(_Handler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        stub = self.server.stub
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with stub.lock:
            stub.posts.append((self.path, self.headers.get("Content-Type"), body))
        stub.wait(stub.post_delay)
        self._send(*stub.transact(self.path, json.loads(body)))


class HapiLikeStub(FhirStub):
    """FhirStub plus ``GET /metadata`` (not ready for the first ``not_ready`` calls), identifier
    search and ``POST /`` transactions with server-assigned numeric ids, as HAPI does."""

    def __init__(self, not_ready: int = 0, fhir_version: str = "4.0.1"):
        super().__init__()
        self._server.RequestHandlerClass = _TransactionHandler
        self.not_ready, self.fhir_version = not_ready, fhir_version
        self.metadata_calls = 0
        self.posts: list[tuple[str, str | None, bytes]] = []
        self.post_delay = 0.0
        self.refusal: tuple[int, dict] | None = None
        self._last_id = 1000

    def answer(self, path: str, authorization: str | None) -> tuple[int, object]:
        if urlsplit(path).path != "/metadata":
            return super().answer(path, authorization)
        with self.lock:
            self.metadata_calls += 1
            if self.metadata_calls <= self.not_ready:
                return 503, _outcome("starting")
        return 200, {"resourceType": "CapabilityStatement", "status": "active", "kind": "instance",
                     "fhirVersion": self.fhir_version, "format": ["json"]}

    def _search(self, rtype: str, query: dict[str, list[str]]) -> dict:
        bundle = super()._search(rtype, query)
        if "identifier" in query:
            system, _, value = query["identifier"][0].partition("|")
            bundle["entry"] = [e for e in bundle["entry"] if {"system": system, "value": value}
                               in e["resource"].get("identifier", [])]
        return bundle

    def transact(self, path: str, bundle: dict) -> tuple[int, dict]:
        if self.refusal:
            return self.refusal
        if path != "/" or bundle.get("type") != "transaction":
            return 400, _outcome("POST a transaction Bundle to the base URL")
        with self.lock:
            ids = {}
            for entry in bundle["entry"]:
                self._last_id += 1
                ids[entry["fullUrl"]] = f"{entry['resource']['resourceType']}/{self._last_id}"
        text = json.dumps(bundle)
        for full_url, ref in ids.items():
            text = text.replace(f'"{full_url}"', f'"{ref}"')
        answers = []
        for sent, entry in zip(bundle["entry"], json.loads(text)["entry"]):
            ref = ids[sent["fullUrl"]]
            self.add({**entry["resource"], "id": ref.split("/")[1]})
            answers.append({"response": {"status": "201 Created", "location": f"{ref}/_history/1"}})
        return 200, {"resourceType": "Bundle", "type": "transaction-response", "entry": answers}


class FakeTime:
    """A clock that only moves when the loader sleeps: the bounded wait is tested without waiting."""

    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
