"""Gunicorn settings for the container (``gunicorn --config docker/gunicorn.conf.py``).

Why these values: hook calls spend most of their time waiting on the EHR's FHIR server, so
threaded workers serve several calls per process cheaply — gthread workers that read each
request whole before a thread takes it, so slow clients never hold a thread
(cds_service/tools/buffered_worker.py); CRD expects an answer
within seconds, so a request stuck for 30 s is killed rather than left to pile up.  Operators
can override anything with ``GUNICORN_CMD_ARGS`` (e.g. ``--workers 4``).

The hooks are cds_service/tools/server.py's, shared with ``spine-cds serve``: a multiprocess metrics
folder so /metrics merges every worker, and graceful shutdown (SIGTERM drains the requests in
flight, then each worker closes its app).  Importing cds_service here does not import
prometheus_client: that happens in each worker, after on_starting has set the folder.
"""
import os

import cds_service.runtime.logs as _logs
import cds_service.tools.server as _server
from cds_service.runtime.settings import load_settings as _load_settings

bind = "0.0.0.0:8080"
# Why these numbers: cds_service/tools/server.py (default_workers: WEB_CONCURRENCY, else 2 x cores + 1,
# about 60 MB each; the Kubernetes example sets WEB_CONCURRENCY).
workers = _server.default_workers()
worker_class = _server.WORKER_CLASS
threads = _server.THREADS
worker_connections = _server.WORKER_CONNECTIONS
timeout = 30
# Longer than a hook call can take (SPINE_CDS_DEADLINE_S, 2.8 s by default, plus deciding), so
# a SIGTERM (docker stop, a rolling deploy) never cuts an answer short.  Docker sends SIGKILL
# after its own stop timeout (10 s by default), which still leaves in-flight calls their time;
# give it `docker stop -t 25` / stop_grace_period: 25s to let gunicorn use the whole grace.
graceful_timeout = 20
keepalive = 5
# Each worker listens on its own SO_REUSEPORT socket and the kernel spreads connections over them.
# With one shared socket Linux hands new connections to the worker that just finished one, and a
# keep-alive client stays with it: under wrk one worker took every call while the other core
# idled (measured: 232 of 232 calls/s on one worker; bench/load.py).
reuse_port = True

# gunicorn 25.1+ opens a control socket ($XDG_RUNTIME_DIR or ~/.gunicorn/gunicorn.ctl) that can
# resize, reload or stop the server; nothing uses it here, so it stays closed.
control_socket_disable = _server.CONTROL_SOCKET_OFF

# Each worker builds its own app (and its own SQLite connection) after the fork: a
# connection must never be shared across processes, so the app is not preloaded.
preload_app = False

# gunicorn's access log records raw URLs (query strings included); the service writes its own
# access line per request (route template, status, latency; no query string), so it stays off.
# Errors and the service's logs go to stderr, in SPINE_CDS_LOG_FORMAT (JSON lines by default).
accesslog = None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
logconfig_dict = _logs.gunicorn_logconfig(_load_settings().log_format)

# Heartbeat files on tmpfs: a slow overlay filesystem can make gunicorn kill healthy workers.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# forwarded_allow_ips is left at gunicorn's default (127.0.0.1 / FORWARDED_ALLOW_IPS env):
# X-Forwarded-* headers are trusted only from a proxy the operator names.

on_starting = _server.on_starting
post_worker_init = _server.post_worker_init
worker_exit = _server.worker_exit
child_exit = _server.child_exit
on_exit = _server.on_exit
