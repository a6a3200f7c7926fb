"""Shared fixtures: the app factory with test settings, its client, and the loaded registry."""
from __future__ import annotations

import atexit
import logging
import os
import shutil
import socket
import tempfile
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).parent))  # casebuilder, fhir_stub, helpers

# The default data folder (SQLite store, the host's shared patient-data cache) of every app and
# server a test starts is a fresh one, never the user's: nothing leaks between runs or into
# ~/.local/share.  Set before cds_service is imported (settings read it at import).
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="spine-cds-tests-")
atexit.register(shutil.rmtree, os.environ["XDG_DATA_HOME"], ignore_errors=True)

from cds_service import close_app
from cds_service import create_app  # noqa: E402
from cds_service.engine.registry import load_registry  # noqa: E402
from cds_service.engine.studies import load_studies  # noqa: E402
from jwt_helpers import JwksServer, public_jwk  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0", ""}


@pytest.fixture(autouse=True)
def no_internet(monkeypatch):
    """Tests never leave the machine: name lookups of non-local hosts fail as if DNS were down."""
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):
        if host is not None and str(host) not in LOCAL_HOSTS and not str(host).startswith("127."):
            raise socket.gaierror(f"tests may not resolve {host!r}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)


@pytest.fixture(autouse=True)
def reset_service_log_level():
    """create_app sets the cds_service logger's level from settings; undo it between tests."""
    yield
    logging.getLogger("cds_service").setLevel(logging.NOTSET)


@pytest.fixture(scope="session")
def catalog():
    return load_studies(ROOT / "mappings" / "studies.json")


@pytest.fixture(scope="session")
def registry():
    return load_registry(ROOT / "mappings", ROOT / "valuesets", "nia")


@pytest.fixture
def make_app(tmp_path):
    apps = []

    def factory(**overrides):
        config = {"SPINE_CDS_DATABASE": str(tmp_path / "test.sqlite3"), "SPINE_CDS_AUTH": "off",
                  "SPINE_CDS_TODAY": "2026-11-22", **overrides}
        app = create_app(config)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        close_app(app)


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def key():
    """An ES384 key pair standing in for a CDS client's (EHR's) signing key."""
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture
def jwks(key):
    """A local JWKS endpoint publishing ``key`` as kid ``k1`` (it counts its requests)."""
    with JwksServer() as server:
        server.jwks = {"keys": [public_jwk(key, "k1", "ES384")]}
        yield server
