"""What a ``SPINE_CDS_DATABASE`` value names, and how to print it without its password.

Kept apart from the PostgreSQL backend so the SQLite default, the CLI and error messages can
tell a URL from a path and mask it without importing the PostgreSQL driver.
"""
from __future__ import annotations

import re

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(database: str) -> bool:
    return database.startswith(POSTGRES_SCHEMES)


def is_url(database: str) -> bool:
    """Any ``scheme://`` value (a SQLite path never needs one)."""
    return "://" in database


def mask_url(url: str) -> str:
    """The URL with its password (in the user part or a ``password=`` parameter) replaced by ***.

    A plain file path comes back unchanged.
    """
    scheme, sep, rest = url.partition("://")
    if sep:
        authority_end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
        authority, tail = rest[:authority_end], rest[authority_end:]
        userinfo, at, hosts = authority.rpartition("@")
        if at and ":" in userinfo:
            authority = f"{userinfo.split(':', 1)[0]}:***@{hosts}"
        url = f"{scheme}://{authority}{tail}"
    return re.sub(r"(?i)(password=)[^&\s]*", r"\1***", url)
