"""A throwaway PostgreSQL server for the tests, started once per test session.

Why a real server: the store's SQL, its transactions and its timeouts are what the PostgreSQL
backend is; a mock would test nothing.  The server is Debian's (``/usr/lib/postgresql/<v>/bin``,
installed by ``.ci/run``): ``initdb`` in a fresh temporary folder, a free TCP port on 127.0.0.1
with password (SCRAM) authentication so the URL's password is really used, the unix socket in
the same folder, stopped and deleted when the session ends (or, should pytest be killed, by a
detached watchdog shortly after).  PostgreSQL refuses to run as root,
so as root the server runs as the ``postgres`` user (or ``nobody``) via ``runuser``.

``fsync=off``: these tests kill the spine-cds process, never the database server, so what they
check is that the service commits before it acknowledges; flushing to disk would only slow them.

Missing binaries skip the tests locally and fail them when ``SPINE_CDS_CI=1``.  Use the fixtures
by importing them into a test module: ``from pg_server import pg_database  # noqa: F401``.
"""
from __future__ import annotations

import glob
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path

import psycopg
import pytest

from ports import free_port

SUPERUSER, PASSWORD = "spine", "s3cret-not-logged"
START_TIMEOUT_S = 60


def require(what: str, found: bool) -> None:
    """Skip when a test server is not installed; fail instead on CI (SPINE_CDS_CI=1)."""
    if found:
        return
    if os.environ.get("SPINE_CDS_CI") == "1":
        pytest.fail(f"{what} is not installed, and SPINE_CDS_CI=1 requires it (.ci/run apt-installs it).")
    pytest.skip(f"{what} is not installed; install it to run this test (CI always does).")


def bindir() -> Path | None:
    """Debian's newest PostgreSQL bin folder, or the one initdb is found in on PATH."""
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    found = versions[-1] if versions else shutil.which("initdb")
    return Path(found).parent if found else None


class PostgresServer:
    """One PostgreSQL cluster in a temporary folder, run as an unprivileged user when we are root."""

    def __init__(self, bin_dir: Path):
        self.bin = bin_dir
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="spine-cds-pg-"))
        self.user = None if os.geteuid() != 0 else _unprivileged_user()
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self.data = self.dir / "data"

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self._prefix(), *args], capture_output=True, text=True, timeout=START_TIMEOUT_S)
        if result.returncode:
            log = self.dir / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed: {result.stdout}{result.stderr}{tail}")

    def start(self) -> PostgresServer:
        pwfile = self.dir / "pw"
        pwfile.write_text(PASSWORD)
        if self.user:
            os.chown(pwfile, pwd.getpwnam(self.user).pw_uid, -1)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER, f"--pwfile={pwfile}",
                  "--auth-local=trust", "--auth-host=scram-sha-256", "--no-locale", "-E", "UTF8", "--no-sync")
        pwfile.unlink()
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c full_page_writes=off -c max_connections=100")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w",
                  "-t", str(START_TIMEOUT_S), "-o", options, "start")
        self._watch(os.getpid())
        return self

    def _watch(self, owner: int) -> None:
        """Stop the server and delete its folder once ``owner`` (this pytest) is gone, however it ended.

        pg_ctl daemonises the server, so a pytest killed by a timeout or SIGKILL would otherwise
        leave it running.  A detached shell polls the pid; after a normal :meth:`stop` it finds
        nothing left to do.
        """
        stop = shlex.join([*self._prefix(), str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"])
        script = (f"while kill -0 {owner} 2>/dev/null; do sleep 1; done; "
                  f"{stop} >/dev/null 2>&1; rm -rf {shlex.quote(str(self.dir))}")
        subprocess.run(["sh", "-c", f"({script}) </dev/null >/dev/null 2>&1 &"], start_new_session=True, check=True,
                       timeout=START_TIMEOUT_S)

    def _prefix(self) -> list[str]:
        return ["runuser", "-u", self.user, "--"] if self.user else []

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str = "postgres", password: str = PASSWORD) -> str:
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database; returns its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def create_schema(self) -> str:
        """A new, empty schema in the ``postgres`` database, as a URL whose ``options`` put it first
        on the search path (milliseconds, where a new database takes a quarter of a second)."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as admin:
            admin.execute(f'CREATE SCHEMA "{name}"')
        return f"{self.url()}?options=-csearch_path%3D{name}"


def _unprivileged_user() -> str:
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL")


# One server per session even though each importing module gets its own copy of the fixture:
# the first setup starts it, the last teardown stops it.
_shared: dict = {"server": None, "users": 0}
_shared_lock = threading.Lock()


@pytest.fixture(scope="session")
def pg_server():
    found = bindir()
    require("PostgreSQL (initdb, pg_ctl)", found is not None)
    if os.geteuid() == 0:
        require("runuser (to run PostgreSQL as an unprivileged user)", shutil.which("runuser") is not None)
    with _shared_lock:
        if _shared["server"] is None:
            server = PostgresServer(found)
            try:
                _shared["server"] = server.start()
            except BaseException:
                server.stop()
                raise
        _shared["users"] += 1
    yield _shared["server"]
    with _shared_lock:
        _shared["users"] -= 1
        if _shared["users"] == 0:
            _shared["server"].stop()
            _shared["server"] = None


@pytest.fixture
def pg_database(pg_server) -> str:
    """The URL (with its password) of a fresh, empty schema on the session's server."""
    return pg_server.create_schema()
