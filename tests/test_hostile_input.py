"""Wrong types anywhere in a hook request never crash the service (no 500).

Every JSON path of a realistic request (context, draft orders and the whole prefetch) is
replaced in turn by values of the wrong type; the answer must be a 200 (best effort) or a 4xx
with an OperationOutcome that says what is wrong.
"""
from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parent.parent / "cds_service" / "samples" / "order-sign-with-coverage.json"
WRONG = [None, 7, -1.5, "x", "", True, [], {}, [None], {"resourceType": "OperationOutcome"}]


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, prefix + (i,))


def _set(body, path, value):
    target = body
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value


BODY = json.loads(SAMPLE.read_text())
PATHS = [p for p in _paths(BODY) if p]
random.Random(20261122).shuffle(PATHS)


@pytest.mark.parametrize("path", PATHS[:150], ids=lambda p: ".".join(map(str, p)))
def test_wrong_types_at_any_path_are_handled(client, path):
    for wrong in WRONG:
        body = copy.deepcopy(BODY)
        _set(body, path, copy.deepcopy(wrong))
        response = client.post("/cds-services/spine-imaging-order-sign", json=body)
        assert response.status_code in (200, 400, 412), (path, wrong, response.get_json())
        if response.status_code != 200:
            assert response.get_json()["resourceType"] == "OperationOutcome"
        else:
            assert isinstance(response.get_json()["cards"], list)
