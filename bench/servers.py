"""Gunicorn servers for the benchmarks: the service or the floor, in their own process group.

Shared by ``run.py --http`` (latency, one call at a time) and ``load.py`` (throughput under wrk).
A server in its own process is what production runs, and it keeps the load generator out of the
server's GIL: a client thread in the same interpreter as the server waits up to the interpreter's
switch interval (5 ms) for the GIL whenever the server is busy, which inflates exactly the calls
that do the most work.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATH = "/cds-services/spine-imaging-order-select"
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
CONF = str(ROOT / "docker" / "gunicorn.conf.py")
APPS = {"service": "cds_service:create_app()", "floor": "bench.floor:create_floor_app()",
        "floor-orjson": "bench.floor:create_floor_app('orjson')"}


def bench_settings(database: Path, **overrides: str) -> dict[str, str]:
    """The service's benchmark settings (why each: bench/README.md): auth off, a SQLite file as in
    production (WAL, synchronous=FULL), a fixed "today", warnings only."""
    return {"SPINE_CDS_AUTH": "off", "SPINE_CDS_DATABASE": str(database), "SPINE_CDS_TODAY": "2026-11-22",
            "SPINE_CDS_LOG_LEVEL": "WARNING", **overrides}


def server_env(settings: dict[str, str]) -> dict[str, str]:
    """This process's environment with ``settings`` over it, for a gunicorn server."""
    return {**os.environ, **settings, "GUNICORN_LOG_LEVEL": "warning"}


@dataclass(frozen=True)
class ServerConfig:
    """Gunicorn settings to test: ``conf`` is docker/gunicorn.conf.py unchanged."""

    name: str
    args: tuple[str, ...]

    @staticmethod
    def parse(spec: str) -> ServerConfig:
        """``conf`` | ``conf:<workers>x<threads>`` (the production file, other sizes) |
        ``sync:<workers>`` | ``gevent:<workers>`` (needs ``pip install gevent``; not a dependency) |
        ``gthread:<workers>x<threads>`` (plain gthread, as before issue #14 finding 3)."""
        if spec == "conf":
            return ServerConfig("conf (docker/gunicorn.conf.py)", ())
        kind, _, size = spec.partition(":")
        if kind in ("sync", "gevent") and size.isdigit():
            return ServerConfig(spec, ("--worker-class", kind, "--workers", size))
        workers, _, threads = size.partition("x")
        if kind == "conf" and workers.isdigit() and threads.isdigit():
            return ServerConfig(f"conf, {workers} workers x {threads} threads",
                                ("--workers", workers, "--threads", threads))
        if kind == "gthread" and workers.isdigit() and threads.isdigit():
            return ServerConfig(spec, ("--worker-class", "gthread", "--workers", workers, "--threads", threads))
        raise SystemExit(f"--configs: {spec!r} is not conf, conf:<workers>x<threads>, sync:<workers>, gevent:<workers> or gthread:<workers>x<threads>")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server(AbstractContextManager):
    """One gunicorn process group on a free loopback port; always stopped by ``with``."""

    def __init__(self, app: str, config: ServerConfig, env: dict, workdir: Path):
        self.port = free_port()
        self.log_path = workdir / f"gunicorn-{app}-{self.port}.log"
        command = [GUNICORN, "--config", CONF, "--bind", f"127.0.0.1:{self.port}", *config.args, APPS[app]]
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    def wait_ready(self, body: bytes, timeout_s: float) -> dict:
        """Poll with the real request until it is answered 200; the answer is returned."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"gunicorn exited ({self.proc.returncode}); log:\n{self.tail()}")
            try:
                return post(self.url, body)
            except urllib.error.HTTPError as exc:  # it is up, and it refuses the request: stop now
                if exc.code == 503:   # a call that waited for a booting worker past its deadline is shed: poll again
                    time.sleep(0.2)
                    continue
                raise SystemExit(f"HTTP {exc.code} from {self.url}: {exc.read()[:500]!r}") from None
            except (OSError, urllib.error.URLError):
                time.sleep(0.2)
        raise SystemExit(f"server not ready within {timeout_s:g} s; log:\n{self.tail()}")

    def tail(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        """SIGTERM the process group (graceful), SIGKILL it if it is still there after 30 s."""
        if self.proc.poll() is None:
            for sig, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
                try:
                    os.killpg(self.proc.pid, sig)
                    self.proc.wait(wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
                except ProcessLookupError:
                    break
        self.log.close()

    def __exit__(self, *exc) -> None:
        self.stop()


def post(url: str, body: bytes) -> dict:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


