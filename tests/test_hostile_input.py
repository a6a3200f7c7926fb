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

from cds_service.tools.cli import SAMPLES
from near_valid import json_paths

SAMPLE = Path(__file__).resolve().parent.parent / "cds_service" / "samples" / "order-sign-with-coverage.json"
WRONG = [None, 7, -1.5, "x", "", True, [], {}, [None], {"resourceType": "OperationOutcome"}]


def _set(body, path, value):
    target = body
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value


BODY = json.loads(SAMPLE.read_text())
PATHS = [p for p in json_paths(BODY) if p]
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


# --- regressions found by tests/test_fuzz.py (each was a 500) -------------------------------------

def _deep(depth: int):
    value: object = "x"
    for _ in range(depth):
        value = [value]
    return value


def _mutated(change) -> dict:
    body = copy.deepcopy(BODY)
    change(body)
    return body


def _order(body: dict) -> dict:
    return body["context"]["draftOrders"]["entry"][0]["resource"]


HOOK_REGRESSIONS = {
    "fhirServer with an unclosed IPv6 bracket": (lambda b: (b.update(fhirServer="https://["), b["prefetch"].pop("patient")), "fhirServer"),
    "fhirServer with a loopback IPv6 literal left open": (lambda b: (b.update(fhirServer="http://[::1"), b["prefetch"].pop("patient")), "fhirServer"),
    "draft order nested 900 levels (copying it overflowed the stack)": (lambda b: _order(b).update(note=_deep(900)), "nests deeper"),
    "lone surrogate in hookInstance (card uuids hash it as UTF-8)": (lambda b: b.update(hookInstance="\ud800abc"), "surrogate"),
    "lone surrogate in the order id": (lambda b: _order(b).update(id="sr-\udfff"), "surrogate"),
    "NUL in hookInstance (PostgreSQL text cannot store it)": (lambda b: b.update(hookInstance="a\x00b"), "hookInstance"),
    "NUL in the order id": (lambda b: _order(b).update(id="sr\x00x"), "id"),
}


@pytest.mark.parametrize("name", sorted(HOOK_REGRESSIONS))
def test_hook_regressions_are_400_naming_the_problem(client, name):
    change, fragment = HOOK_REGRESSIONS[name]
    response = client.post("/cds-services/spine-imaging-order-sign", json=_mutated(change))
    assert response.status_code == 400, response.get_json()
    assert fragment in response.get_json()["issue"][0]["diagnostics"]


def test_deep_nesting_outside_the_draft_orders_is_still_decided(client):
    body = _mutated(lambda b: b.update(extension={"x": _deep(900)}))
    assert client.post("/cds-services/spine-imaging-order-sign", json=body).status_code == 200


FEEDBACK_REGRESSIONS = {
    "timestamp before year 1 in UTC": ({"outcomeTimestamp": "0001-01-01T00:00:00+01:00"}, "outcomeTimestamp"),
    "timestamp after year 9999 in UTC": ({"outcomeTimestamp": "9999-12-31T23:00:00-05:00"}, "outcomeTimestamp"),
    "NUL in the card id": ({"card": "c\x00rd"}, "card"),
    "NUL in the comment": ({"overrideReason": {"userComment": "a\x00b"}}, "userComment"),
    "lone surrogate in the card id": ({"card": "\udc00"}, "surrogate"),
}


@pytest.mark.parametrize("name", sorted(FEEDBACK_REGRESSIONS))
def test_feedback_regressions_are_400_naming_the_field(client, name):
    change, fragment = FEEDBACK_REGRESSIONS[name]
    item = {"card": "c1", "outcome": "overridden", "outcomeTimestamp": "2026-11-22T10:00:00Z",
            "overrideReason": {"userComment": "seen"}, **change}
    response = client.post("/cds-services/spine-imaging-order-sign/feedback", json={"feedback": [item]})
    assert response.status_code == 400, response.get_json()
    assert fragment in response.get_json()["issue"][0]["diagnostics"]


def test_a_valid_surrogate_pair_is_text_not_an_error(client):
    select = json.loads((SAMPLES / "radiculopathy-conservative-care-failed.json").read_text())
    card = client.post("/cds-services/spine-imaging-order-select", json=select).get_json()["cards"][0]["uuid"]
    item = {"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-22T10:00:00Z",
            "overrideReason": {"userComment": "\U0001F600"}}
    response = client.post("/cds-services/spine-imaging-order-select/feedback", data=json.dumps({"feedback": [item]}),
                           content_type="application/json")  # json.dumps escapes the emoji as a surrogate pair
    assert response.status_code == 200, response.get_json()


def test_405_says_which_methods_are_allowed(client):
    response = client.delete("/cds-services")
    assert response.status_code == 405 and response.get_json()["resourceType"] == "OperationOutcome"
    assert {m.strip() for m in response.headers["Allow"].split(",")} >= {"GET", "OPTIONS"}


@pytest.mark.parametrize("raw", [
    b'{"a": NaN, "b": -Infinity}', b'{"a": "\\ud800"}', b'{"a": "\\ud83d\\ude00"}', '{"a": "é"}'.encode("utf-16"),
    '\ufeff{"a": 1}'.encode(), b"[" * 1100 + b"]" * 1100, b"[" * 5000 + b"]" * 5000, b"\xff", b'{"a": 1e400}',
    b'{"a": 1, "a": 2}', b' {"a": [1.5, -0, true, null]} ', b'{"a": "\\u0000"}', b"", b"nul",
])
def test_the_fast_parser_accepts_and_refuses_what_the_standard_library_does(raw):
    """routes.parse_json tries orjson first; whatever orjson refuses goes to the standard library,
    so the set of accepted bodies, their values and the errors (400, never 500) are unchanged."""
    from cds_service.errors import CdsBadRequest
    from cds_service.protocol.routes import parse_json
    try:
        expected = json.loads(raw)
    except (ValueError, RecursionError):
        with pytest.raises(CdsBadRequest):
            parse_json(raw)
        return
    if raw == b'{"a": "\\ud800"}':  # accepted by json.loads, refused by us: not Unicode text
        with pytest.raises(CdsBadRequest, match="unpaired surrogate"):
            parse_json(raw)
        return
    got = parse_json(raw)
    assert json.dumps(got) == json.dumps(expected)


def test_date_arithmetic_past_the_calendar_is_held_not_a_crash():
    """Hypothesis found it: a prescription supplied for 10^8 days ran past year 9999 (500)."""
    from datetime import date
    from cds_service.engine.fhir_dates import add_days
    from cds_service.engine.record_dates import medication_end
    supply = {"dispenseRequest": {"expectedSupplyDuration": {"value": 10 ** 8, "unit": "d", "code": "d",
                                                             "system": "http://unitsofmeasure.org"}}}
    assert medication_end(supply, date(2026, 1, 1)) is None   # no clinical supply: its end is unknown
    assert add_days(date(1, 1, 2), -10) == date.min and add_days(date(2026, 1, 1), 1) == date(2026, 1, 2)
