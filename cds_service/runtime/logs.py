"""Logging: JSON lines (or text), the request id on every line, no PHI (the HTTP side: protocol/request_log.py).

Why only the ``cds_service`` logger: an app embedding the service — and pytest's caplog — own the
root logger.  :func:`configure_logging` gives our logger one handler (replaced, never stacked, when
several apps are created) and leaves propagation alone, so their handlers still see our records.
The server processes we start ourselves (``spine-cds serve``, docker/gunicorn.conf.py) also send
gunicorn's and third-party records through the same formatter (:func:`gunicorn_logconfig`) and
stop our logger propagating, so every stderr line has one format and none is printed twice.

PHI: call sites write messages without patient data (tests/test_log_hygiene.py, test_logs.py).
The formatters add only the fields the code passes in ``extra=`` and the request id.  An
exception is rendered as its type and the stack of code lines, never its message (a message can
quote the data that broke it), except our own :class:`CdsError` messages, written for clients.
"""
from __future__ import annotations

import json
import logging
import sys
import traceback
from contextvars import ContextVar
from datetime import datetime, timezone

from cds_service.errors import CdsConfigError, CdsError

HANDLER_NAME = "spine-cds"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}

# The id of the request being handled in this thread or task: set and cleared by the HTTP edge
# (protocol/request_log.py), read by the formatters so every line of a call carries it.
current_request_id: ContextVar[str | None] = ContextVar("spine_cds_request_id", default=None)


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted.

    A handler bound to the stream of its creation time would write to a closed file once pytest
    swaps ``sys.stderr`` for the next test (the handler outlives the app that installed it).
    """

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        """Ignored: the stream is always the current ``sys.stderr``."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's naming)
        """Say that a line was lost, without logging's default dump of the record's arguments."""
        exc_type = sys.exc_info()[0]
        try:
            sys.stderr.write(f"spine-cds: a log line from {record.name} could not be written "
                             f"({exc_type.__name__ if exc_type else 'unknown error'})\n")
        except Exception:  # noqa: BLE001 - stderr itself is gone: nothing left to tell
            pass


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message, pid, request_id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"timestamp": _timestamp(record.created), "level": record.levelname, "logger": record.name,
                 "message": record.getMessage(), "pid": record.process}
        if request_id := _request_id_of(record):
            entry["request_id"] = request_id
        for key, value in extra_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info and record.exc_info[0]:
            entry["error"] = describe_exception(record.exc_info)
        return json.dumps(entry, default=str)  # ASCII: a lone surrogate cannot break the line


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal, with the same fields as the JSON lines."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record.created), record.levelname, record.name]
        if request_id := _request_id_of(record):
            parts.append(f"[{request_id}]")
        parts.append(record.getMessage())
        parts += [f"{key}={value}" for key, value in extra_fields(record).items()]
        line = " ".join(str(p) for p in parts)
        if record.exc_info and record.exc_info[0]:
            error = describe_exception(record.exc_info)
            line += f"\n{error['type']}: {error.get('message', '(message not logged)')}\n{error['stack']}"
        return line


def formatter_for(log_format: str) -> logging.Formatter:
    """The formatter of ``SPINE_CDS_LOG_FORMAT`` (json | text); also a dictConfig factory."""
    return JsonFormatter() if log_format == "json" else TextFormatter()


def extra_fields(record: logging.LogRecord) -> dict:
    """The fields the call site passed with ``extra=`` (anything not a standard LogRecord attribute)."""
    return {k: v for k, v in vars(record).items()
            if k not in _STANDARD and k != "request_id" and not k.startswith("_")}


def describe_exception(exc_info) -> dict:
    """Type and code stack of an exception; its message only when it is one of ours (no data)."""
    exc_type, exc, tb = exc_info
    described = {"type": exc_type.__name__, "stack": "".join(traceback.format_tb(tb)).rstrip()}
    if isinstance(exc, CdsError):
        described["message"] = exc.message
    return described


def configure_logging(settings) -> None:
    """Level and format of the ``cds_service`` logger from the settings (see module docstring)."""
    level = str(settings.log_level).strip().upper()
    if level not in LEVELS:
        raise CdsConfigError(f"SPINE_CDS_LOG_LEVEL={settings.log_level!r} is invalid: use one of {', '.join(LEVELS)}.")
    logger = logging.getLogger("cds_service")
    logger.setLevel(level)
    for handler in [h for h in logger.handlers if h.get_name() == HANDLER_NAME]:
        logger.removeHandler(handler)
    logger.addHandler(make_handler(settings.log_format))


def make_handler(log_format: str) -> logging.Handler:
    handler = StderrHandler()
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(formatter_for(log_format))
    return handler


def gunicorn_logconfig(log_format: str) -> dict:
    """gunicorn's ``logconfig_dict`` for processes we run: one stderr handler in our format for
    gunicorn's error log, the root logger (third-party warnings) and ``cds_service`` (which then
    stops propagating, or root would print its lines twice).  gunicorn's access log is left
    alone: ours (route templates, no query strings) replaces it and it is off by default."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"spine_cds": {"()": "cds_service.runtime.logs.formatter_for", "log_format": log_format}},
        "handlers": {HANDLER_NAME: {"class": "cds_service.runtime.logs.StderrHandler", "formatter": "spine_cds"}},
        "root": {"level": "WARNING", "handlers": [HANDLER_NAME]},
        "loggers": {
            "gunicorn.error": {"handlers": [HANDLER_NAME], "propagate": False, "qualname": "gunicorn.error"},
            "cds_service": {"handlers": [HANDLER_NAME], "propagate": False},
        },
    }


def _request_id_of(record: logging.LogRecord) -> str | None:
    """The id passed in ``extra``, else the current request's (formatting runs in the logging thread)."""
    return getattr(record, "request_id", None) or current_request_id.get()


def _timestamp(created: float) -> str:
    return datetime.fromtimestamp(created, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
