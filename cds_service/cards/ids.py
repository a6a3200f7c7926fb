"""Stable ids for what the cards emit: the same call gives the same uuids (a retried call shows
the same card, and feedback finds it), different calls never share one."""
from __future__ import annotations

import uuid

NAMESPACE = uuid.UUID("8a3c7d0e-4f1b-5c2d-9e6f-0a1b2c3d4e5f")


def stable_uuid(*parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "|".join(parts)))
