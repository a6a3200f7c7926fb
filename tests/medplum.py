"""Medplum's FHIR engine as a server for the tests, and reading decisions back from responses.

Used by test_synthetic_patients.py and test_fhir_server_e2e.py.  The synthetic patients
themselves (tagged Bundles → hook requests with or without prefetch) are in
``cds_service/tools/patients.py``, shared with ``spine-cds demo``.

:class:`MedplumServer` runs ``node tests/fhir_server/server.mjs`` (Medplum's FhirRouter over its
MemoryRepository behind a small wrapper; see its README) on a free loopback port, waits for its
CapabilityStatement, loads Bundles by transaction and reads and drives the wrapper's test
controls.  :func:`start_medplum` skips when node or the npm packages are missing, except under
SPINE_CDS_CI=1, where it fails: CI must run these tests, not skip them.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

from ports import free_port

ROOT = Path(__file__).resolve().parent.parent
SERVER_DIR = ROOT / "tests" / "fhir_server"
TOKENS = ("token-dr-alice", "token-dr-bob", "token-dr-alice-renewed")
USERS = {"alice": "Practitioner/dr-alice", "bob": "Practitioner/dr-bob"}
STARTUP_S = 60.0
NODE_MIN = (20, 19)  # @medplum/fhir-router 4.5's engines field


def decisions(response: dict, ids: dict[str, str] | None = None) -> list[dict]:
    """Every card's ``spine-cds.decision``.  With ``ids``, comparable across copies of a Bundle:
    ``Type/id`` strings turned back into the Bundle's fullUrls, and the evidence sorted (it
    follows the order a server happened to return the resources in)."""
    found = [card["extension"]["spine-cds.decision"] for card in response["cards"]]
    if not ids:
        return found
    found = _to_full_urls(found, {ref: url for url, ref in ids.items()})
    return [{**d, "evidence": sorted(d["evidence"])} if "evidence" in d else d for d in found]


def _to_full_urls(value, back: dict[str, str]):
    if isinstance(value, dict):
        return {k: _to_full_urls(v, back) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_full_urls(v, back) for v in value]
    if not isinstance(value, str):
        return value
    ref, hash_, fragment = value.partition("#")   # a note's evidence carries "#char=start,end"
    return back.get(ref, ref) + hash_ + fragment


# ---- the FHIR server ----------------------------------------------------------------------

def missing_prerequisite() -> str | None:
    """Why the server cannot start here, or None."""
    node = shutil.which("node")
    if node is None:
        return "node is not installed"
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    if tuple(int(part) for part in re.findall(r"\d+", version)[:2]) < NODE_MIN:
        return f"node {version} is too old for @medplum/fhir-router 4.5 (it needs {NODE_MIN[0]}.{NODE_MIN[1]}+)"
    if not (SERVER_DIR / "node_modules" / "@medplum" / "fhir-router").is_dir():
        return "the npm packages of tests/fhir_server are not installed"
    return None


def start_medplum() -> MedplumServer:
    """A started server, or a skip (a failure under SPINE_CDS_CI=1) when it cannot run here."""
    why = missing_prerequisite()
    if why:
        message = (f"{why}: install Node 20.19+ and run `npm ci --prefix tests/fhir_server` to test against "
                   "Medplum's FHIR engine")
        if os.environ.get("SPINE_CDS_CI") == "1":
            pytest.fail(f"SPINE_CDS_CI=1 and {message}", pytrace=False)
        pytest.skip(message)
    return MedplumServer().start()


class MedplumServer:
    """``node server.mjs`` on a loopback port; :meth:`stop` it (the fixtures do)."""

    def __init__(self, tokens: tuple[str, ...] = TOKENS):
        self.tokens = tokens
        self.url = ""
        self._process: subprocess.Popen | None = None
        self._log = tempfile.TemporaryFile()
        self._session = requests.Session()

    def start(self) -> MedplumServer:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        command = ["node", str(SERVER_DIR / "server.mjs"), "--port", str(port),
                   *(arg for token in self.tokens for arg in ("--token", token))]
        self._process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, cwd=SERVER_DIR)
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline and self._process.poll() is None:
            try:
                if self._session.get(f"{self.url}/metadata", timeout=1).json().get("resourceType") == "CapabilityStatement":
                    return self
            except (requests.RequestException, ValueError):
                time.sleep(0.1)
        why = "exited at start" if self._process.poll() is not None else f"did not answer /metadata in {STARTUP_S:.0f} s"
        output = self.output()
        self.stop()
        pytest.fail(f"the FHIR server (node tests/fhir_server/server.mjs) {why}:\n{output}", pytrace=False)

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-4000:]

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._session.close()
        self._log.close()

    def load(self, bundle: dict) -> dict[str, str]:
        """POST a transaction Bundle; returns its fullUrl -> ``Type/<server id>`` (entries keep order)."""
        response = self._session.post(self.url, json=bundle, timeout=30, headers={
            "Authorization": f"Bearer {self.tokens[0]}", "Content-Type": "application/fhir+json"})
        response.raise_for_status()
        result = response.json()
        assert result["type"] == "transaction-response", result
        return {e["fullUrl"]: r["response"]["location"].split("/_history/")[0]
                for e, r in zip(bundle["entry"], result["entry"], strict=True)}

    def control(self, *, delay_s: float = 0.0, fail_status: int | None = None) -> None:
        """Slow every FHIR answer down, or make every one fail; also resets the stats."""
        self._session.post(f"{self.url}/__control", timeout=5, json={
            "delayMs": int(delay_s * 1000), "failStatus": fail_status, "reset": True}).raise_for_status()

    def stats(self) -> dict:
        """Requests since the last :meth:`control`: total, byPath, byToken, maxInFlight, requests."""
        return self._session.get(f"{self.url}/__stats", timeout=5).json()
