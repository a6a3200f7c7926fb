"""A throwaway ``redis-server`` for tests: a free port on 127.0.0.1, no persistence, stopped after.

Import the fixtures into a test module (``from redis_server import redis_url  # noqa: F401``).
When ``redis-server`` is not installed the tests skip locally, but fail under CI
(``SPINE_CDS_CI=1``), which installs it, so CI cannot pass by skipping them.  Redis runs fine
as root (CI) and as an ordinary user; it writes nothing to disk (``--save ""``, no AOF).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ports import free_port

STARTUP_LIMIT_S = 20.0
"""How long a starting redis-server may take to answer PING before the test errors out."""


def redis_binary() -> str:
    """The redis-server path, or skip (locally) / fail (CI) with what to install."""
    found = shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/local/bin/redis-server") if Path(p).exists()), None)
    if found:
        return found
    message = "redis-server is not installed (apt-get install redis-server)"
    if os.environ.get("SPINE_CDS_CI") == "1":
        pytest.fail(f"{message}; CI must run the Redis cache tests.")
    pytest.skip(message)


class RedisServer:
    """One redis-server process; :meth:`start` waits until it answers, :meth:`stop` ends it."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = 0
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, port: int | None = None) -> RedisServer:
        """Start on ``port`` (to restart a stopped server in place) or on a free port."""
        binary = redis_binary()
        self.port = port or free_port()
        self._process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no",
             "--loglevel", "warning"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # a few lines at "warning"
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1, socket_connect_timeout=1)
        give_up = time.monotonic() + STARTUP_LIMIT_S
        try:
            while True:
                if self._process.poll() is not None:
                    error = self._process.stdout.read().decode(errors="replace")
                    raise RuntimeError(f"redis-server exited with {self._process.returncode}: {error}")
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    if time.monotonic() > give_up:
                        self.stop()
                        raise RuntimeError(f"redis-server did not answer within {STARTUP_LIMIT_S} s") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


def start_redis(workdir: Path) -> RedisServer:
    """Start a server, retrying once if another process took the free port first."""
    try:
        return RedisServer(workdir).start()
    except RuntimeError:
        return RedisServer(workdir).start()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    """One redis-server per test module."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server) -> Iterator[str]:
    """The module's server, emptied before each test."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    yield redis_server.url
