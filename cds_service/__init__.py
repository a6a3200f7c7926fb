"""spine-cds: a CDS Hooks service deciding spine CT/MRI orders against payer imaging guidelines.

Importing the package imports nothing else: ``spine-cds serve`` runs gevent workers, and gevent
must patch the standard library (sockets, ssl, threads) before requests, urllib3, ssl or redis
are first imported, or those keep blocking, unpatched parts (tools/server.py).  So
:func:`create_app`, :func:`close_app` and :class:`AppState` come from ``application.py`` on
first use.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cds_service.application import AppState, close_app, create_app

__all__ = ["AppState", "close_app", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from cds_service import application
        value = getattr(application, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cds_service' has no attribute {name!r}")
