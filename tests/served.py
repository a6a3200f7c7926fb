"""``spine-cds serve`` for real, in a subprocess: the multi-worker server the tests attack.

Shared by the shutdown tests and the attack tests (tests/test_attacks.py): whatever must hold
for the deployment (replay protection, caches, SSRF guards) is tested against this, not only
Flask's test client.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cds_service.tools import server
from ports import free_port

PATIENCE_S = 60  # upper bound for a server to start or stop on a slow CI machine


class Served:
    """``spine-cds serve`` on a free port; stderr lines collected by a reader thread."""

    def __init__(self, tmp_path: Path, workers: int = 2, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environ = {k: v for k, v in os.environ.items() if k != server.MULTIPROC_ENV}
        environ |= {"SPINE_CDS_AUTH": "off", "SPINE_CDS_DATABASE": str(tmp_path / "served.sqlite3"),
                    "SPINE_CDS_TODAY": "2026-11-22", "SPINE_CDS_LOG_FORMAT": "json", **env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cds_service.tools.cli", "serve", "--port", str(self.port), "--workers", str(workers)],
            env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def records(self) -> list[dict]:
        """Every stderr line so far, parsed: in JSON format each one must be a JSON object."""
        records = []
        for line in list(self.lines):
            try:
                records.append(json.loads(line))
            except ValueError:
                pytest.fail(f"server wrote a line that is not JSON: {line!r}\n" + "\n".join(self.lines[-40:]))
        return records

    def wait_until(self, what: str, condition) -> None:
        deadline = time.monotonic() + PATIENCE_S
        while not condition():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                pytest.fail(f"server: {what} did not happen; stderr:\n" + "\n".join(self.lines[-40:]))
            time.sleep(0.05)

    def booted(self, workers: int) -> None:
        """Both the port answers and every worker has built its app."""
        def apps_built():
            return len({r["pid"] for r in self.records() if r["message"].startswith("SPINE_CDS_AUTH=off")}) > workers
        self.wait_until("every worker built its app", apps_built)  # the master's check app counts once
        self.wait_until("/health answers", lambda: _get(self.url + "/health") == 200)

    def pid_of(self, request_id: str) -> int:
        """The worker whose access line carries ``request_id``."""
        found: list[int] = []

        def logged():
            found[:] = [r["pid"] for r in self.records()
                        if r["logger"] == "cds_service.access" and r.get("request_id") == request_id]
            return bool(found)
        self.wait_until(f"the access line of {request_id}", logged)
        return found[0]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=PATIENCE_S)
        self._reader.join(timeout=PATIENCE_S)  # the pipe ends when the last process holding it exits
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=PATIENCE_S)
        self._reader.join(timeout=PATIENCE_S)
        self.proc.stderr.close()


@pytest.fixture
def served(tmp_path):
    started: list[Served] = []

    def start(**kwargs) -> Served:
        started.append(Served(tmp_path, **kwargs))
        return started[-1]

    yield start
    for s in started:
        s.kill()  # a test that failed half-way leaves no server (or worker) behind


def _get(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except (OSError, urllib.error.HTTPError):
        return None


def post(url: str, body: dict) -> tuple[int, dict, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=PATIENCE_S) as response:
        return response.status, dict(response.headers), json.load(response)
