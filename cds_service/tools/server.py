"""Run the app under gunicorn (the production WSGI server), and the gunicorn hooks that both ways
of serving share: ``spine-cds serve`` (:func:`run`) and the image's docker/gunicorn.conf.py.

Why :data:`WORKER_CLASS` is not plain gthread: a threaded worker reads each request on one of
its threads with blocking reads, so 40 clients sending one header line every 2 s held every
thread of every worker and nothing was answered (issue #14, finding 3).  The workers here read
each request whole in their event loop first (tools/buffered_worker.py); threads only ever see
requests that have arrived.  gevent workers were measured too (bench/load.py): they kept
serving as well, but answered about 0.75 x the calls with a tail of seconds.

* :func:`on_starting` (master, before any worker): gives prometheus_client's multiprocess mode a
  fresh folder in ``PROMETHEUS_MULTIPROC_DIR`` — it must be set before a worker imports
  prometheus_client, and stale files of an earlier run would inflate the counters — and logs
  whether each trusted issuer's JWKS is usable (:func:`check_issuers`).
* :func:`post_worker_init` (worker, app loaded): ``gc.freeze()`` — the guideline registry and
  value-set index are immutable for the worker's life; freezing them keeps every full garbage
  collection (which large request bodies trigger) from re-scanning their objects.
* :func:`worker_exit` (worker, after it drained): graceful shutdown.  On SIGTERM gunicorn stops
  accepting, lets requests in flight finish for up to ``graceful_timeout`` — longer than a hook
  call can take (``SPINE_CDS_DEADLINE_S`` plus the decision) — and then this closes the app:
  the store, the FHIR gatherer's threads and the HTTP session.
* :func:`child_exit` (master): prometheus_client's bookkeeping for a worker that died.
* :func:`on_exit` (master): removes the metrics folder when we created it.
"""
from __future__ import annotations

import gc
import glob
import logging
import os
import shutil
import socket
import tempfile

from gunicorn.app.base import BaseApplication

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_PREFIX = "spine-cds-metrics-"   # + the master's pid: folders of killed servers can be told apart
GRACEFUL_TIMEOUT_S = 20     # > SPINE_CDS_DEADLINE_S (2.8 s) + deciding; on_starting warns otherwise

log = logging.getLogger(__name__)
_created_dirs: list[tuple[int, str]] = []   # (pid, folder): metrics folders a master made and removes at exit
_prepared_dirs: set[str] = set()


class _Gunicorn(BaseApplication):
    def __init__(self, options: dict):
        self.options = options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from cds_service import create_app
        return create_app()


CONTROL_SOCKET_OFF = True
"""gunicorn 25.1+ opens a control socket (``~/.gunicorn/gunicorn.ctl``) that can resize, reload or
stop the server: nothing here uses it, so it is never opened (docker/gunicorn.conf.py too)."""

KEEPALIVE_S = 5
"""How long an idle keep-alive connection stays open, as in docker/gunicorn.conf.py: gunicorn's 2 s
default closed connections a load balancer (or a client sending on 16 connections in turn) was
about to reuse, and a request sent on a closing connection fails with a broken pipe."""
THREADS = 2
"""Threads per worker: one decides while the other waits for the store's fsync or a FHIR server."""

WORKER_CLASS = "cds_service.tools.buffered_worker.BufferingThreadWorker"
"""gthread that hands a request to a thread only once it has arrived whole."""
WORKER_CONNECTIONS = 1000
"""Connections one worker holds at once (gunicorn's default), slow ones included: past this many
a worker stops accepting until some finish, while the ones it holds are served."""


def default_workers() -> int:
    """``WEB_CONCURRENCY``, else 2 x the cores this process may use + 1 (gunicorn's advice).

    Deciding is CPU work under the GIL, so each core needs its own process; the extra ones keep
    the cores busy while calls wait.  On 2 cores this gave the most calls/s in bench/load.py.
    """
    return int(os.environ.get("WEB_CONCURRENCY") or 2 * len(os.sched_getaffinity(0)) + 1)


def run(host: str, port: int, workers: int) -> None:
    """Serve until interrupted; SIGTERM drains requests in flight (graceful shutdown).

    The app is built once here first so a configuration error stops the command with its
    message instead of leaving gunicorn restarting workers that cannot boot.  The metrics folder
    is prepared before that, since building the app imports prometheus_client.  The process's
    logging is set up first, as gunicorn will set it (logs.gunicorn_logconfig).
    """
    from logging.config import dictConfig

    from cds_service import close_app, create_app
    from cds_service.runtime.logs import gunicorn_logconfig
    from cds_service.runtime.settings import load_settings
    settings = load_settings()
    logconfig = gunicorn_logconfig(settings.log_format)
    dictConfig(logconfig)   # this process logs like the workers from now on (no line twice)
    ensure_port_free(host, port)
    prepare_metrics_dir()
    try:
        close_app(create_app())
        print(f"spine-cds: discovery at http://{host}:{port}/cds-services (Ctrl-C to stop)", flush=True)
        _Gunicorn({"bind": f"{host}:{port}", "workers": workers, "worker_class": WORKER_CLASS,
                   "worker_connections": WORKER_CONNECTIONS, "threads": THREADS, "reuse_port": True,
                   "forwarded_allow_ips": ",".join(settings.trusted_proxies),
                   "control_socket_disable": CONTROL_SOCKET_OFF,
                   "timeout": 30, "keepalive": KEEPALIVE_S, "graceful_timeout": GRACEFUL_TIMEOUT_S, "accesslog": None,
                   "logconfig_dict": logconfig, "on_starting": on_starting, "post_worker_init": post_worker_init,
                   "worker_exit": worker_exit, "child_exit": child_exit, "on_exit": on_exit}).run()
    finally:
        remove_metrics_dirs()   # also when gunicorn could not start (on_exit is not called then)


def ensure_port_free(host: str, port: int) -> None:
    """Refuse to start on a port something already listens on.

    The workers bind with SO_REUSEPORT (each its own socket), and the kernel would let a second
    ``spine-cds serve`` — say one with authentication off — share the port and take every other
    call; a port held by another program would leave gunicorn restarting workers forever.  A
    plain bind (no SO_REUSEPORT) fails on any listener, ours or not, so it is tried first.
    """
    from cds_service.errors import CdsConfigError
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise CdsConfigError(f"cannot listen on {host}:{port}: {exc}; check --host.") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # a port in TIME_WAIT is free
        try:
            probe.bind(address)
        except OSError:
            raise CdsConfigError(f"port {port} on {host} is already in use (another spine-cds serve or another "
                                 f"program); stop it, or choose another port with --port.") from None


def prepare_metrics_dir() -> str:
    """The multiprocess metrics folder, ready and empty: the operator's, or a new temporary one."""
    path = os.environ.get(MULTIPROC_ENV)
    if path in _prepared_dirs:
        return path
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
    else:
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None   # tmpfs: no disk writes per request
        _remove_orphans(shm or tempfile.gettempdir())
        path = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=shm)
        _created_dirs.append((os.getpid(), path))
        os.environ[MULTIPROC_ENV] = path
    _prepared_dirs.add(path)
    return path


def remove_metrics_dirs() -> None:
    """Delete the folders :func:`prepare_metrics_dir` created (an operator's folder is kept).

    Only in the process that created them: a worker is forked inside :func:`run` and leaves
    through the same ``finally``, while the master and the other workers still use the folder.
    """
    for pid, path in list(_created_dirs):
        if pid == os.getpid():
            shutil.rmtree(path, ignore_errors=True)
            _created_dirs.remove((pid, path))


def _remove_orphans(parent: str) -> None:
    """Folders of earlier servers that were killed before on_exit (SIGKILL): their pid is gone."""
    for path in glob.glob(os.path.join(parent, _PREFIX + "*-*")):
        pid = os.path.basename(path)[len(_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True   # someone else's live process
    return True


def on_starting(server) -> None:
    prepare_metrics_dir()
    _warn_if_grace_too_short(server.cfg.graceful_timeout)
    check_issuers()


def check_issuers() -> None:
    """Fetch each trusted issuer's JWKS once, in the master, and log whether it is usable (one
    line per issuer): a wrong or unreachable key set shows at start, not as 401s (finding 14)."""
    from cds_service.errors import CdsConfigError
    from cds_service.protocol.jwks import check_trusted_jwks
    from cds_service.runtime.settings import load_settings
    try:
        settings = load_settings()
    except CdsConfigError:
        return  # the workers will refuse to start with the setting's own message
    if settings.auth:
        check_trusted_jwks(settings.trusted_issuers)


def post_worker_init(worker) -> None:
    gc.collect()
    gc.freeze()


def worker_exit(server, worker) -> None:
    """Close the worker's app once gunicorn has drained its requests (or the grace ran out)."""
    app = getattr(worker, "wsgi", None)
    if app is None or "spine_cds" not in getattr(app, "extensions", {}):
        return  # the app never loaded: nothing to close
    from cds_service import close_app
    close_app(app)
    log.info("worker %d stopped: requests drained, app closed", worker.pid, extra={"event": "worker-exit"})


def child_exit(server, worker) -> None:
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        from prometheus_client import multiprocess
        multiprocess.mark_process_dead(worker.pid, path)


def on_exit(server) -> None:
    remove_metrics_dirs()


def _warn_if_grace_too_short(graceful_timeout: float) -> None:
    from cds_service.errors import CdsConfigError
    from cds_service.runtime.settings import load_settings
    try:
        deadline = load_settings().deadline_s
    except CdsConfigError:
        return  # the workers will refuse to start with the setting's own message
    if graceful_timeout <= deadline + 2:
        log.warning("graceful_timeout %.0f s is not longer than SPINE_CDS_DEADLINE_S %.1f s plus the decision: "
                    "SIGTERM can cut hook calls short; raise --graceful-timeout.", graceful_timeout, deadline)
