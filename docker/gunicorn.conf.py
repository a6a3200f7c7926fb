"""Gunicorn settings for the container (``gunicorn --config docker/gunicorn.conf.py``).

Why these values: hook calls spend most of their time waiting on the EHR's FHIR server, so
threaded workers (gthread) serve several calls per process cheaply; CRD expects an answer
within seconds, so a request stuck for 30 s is killed rather than left to pile up.  Operators
can override anything with ``GUNICORN_CMD_ARGS`` (e.g. ``--access-logfile -``).
"""
import os

bind = "0.0.0.0:8080"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = 4
timeout = 30
graceful_timeout = 20
keepalive = 5

# Each worker builds its own app (and its own SQLite connection) after the fork: a
# connection must never be shared across processes, so the app is not preloaded.
preload_app = False

# Access logs record request URLs, which for FHIR-style paths can carry identifiers; they are
# off unless an operator turns them on.  Errors go to stderr for the container runtime.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")

# Heartbeat files on tmpfs: a slow overlay filesystem can make gunicorn kill healthy workers.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# forwarded_allow_ips is left at gunicorn's default (127.0.0.1 / FORWARDED_ALLOW_IPS env):
# X-Forwarded-* headers are trusted only from a proxy the operator names.
