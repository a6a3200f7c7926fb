"""Hypothesis strategies for *near-valid* CDS Hooks and feedback requests, for tests/test_fuzz.py.

A schema fuzzer mostly bounces off the first 400 (wrong ``hook``, missing ``context``), so it
rarely reaches prefetch, fact extraction, rules and cards.  These strategies start from the real
sample requests in ``cds_service/samples/`` (and one enlarged copy of a record) and apply a few
random mutations each — wrong types, nulls, deleted members, deep nesting, huge or odd strings,
unknown resourceTypes, bad dates, missing codes, duplicated entries — so most requests get deep
into the service before anything can go wrong.  A valid feedback body is mutated the same way.

:func:`mutation_runs` draws one sample and a list of mutations; the test sends the body after
each mutation (cumulatively), so one cheap draw yields several increasingly broken requests.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "cds_service" / "samples"
SERVICE_OF_HOOK = {"order-select": "spine-imaging-order-select", "order-sign": "spine-imaging-order-sign"}


def _load_samples() -> dict[str, dict]:
    samples = {}
    for path in sorted(SAMPLES_DIR.glob("*.json")):
        body = json.loads(path.read_text())
        if isinstance(body, dict) and body.get("hook") in SERVICE_OF_HOOK:
            samples[path.stem] = body
    return samples


def enlarged(body: dict, copies: int) -> dict:
    """The same request with every prefetched Bundle's entries repeated ``copies`` times under
    new ids: a record of a few hundred resources that still decides like the original."""
    big = copy.deepcopy(body)
    for value in (big.get("prefetch") or {}).values():
        if isinstance(value, dict) and isinstance(value.get("entry"), list):
            originals = value["entry"]
            value["entry"] = [_renamed(entry, n) for n in range(copies) for entry in originals]
    return big


def _renamed(entry: dict, n: int) -> dict:
    entry = copy.deepcopy(entry)
    resource = entry.get("resource")
    if n and isinstance(resource, dict) and isinstance(resource.get("id"), str) and resource["resourceType"] != "Organization":
        resource["id"] = f"{resource['id']}-copy{n}"
    return entry


SAMPLES = _load_samples()
SMALL = sorted(SAMPLES)
LARGE = {"order-sign-with-coverage-x60": enlarged(SAMPLES["order-sign-with-coverage"], 60)}
FEEDBACK = {"feedback": {"feedback": [
    {"card": "6f1c2b9e-0d4a-5e8f-9a7b-3c2d1e0f4a5b", "outcome": "accepted", "outcomeTimestamp": "2026-11-22T10:09:00Z",
     "acceptedSuggestions": [{"id": "98ad68f1-f9f0-560a-9256-5578b58c22f9"}]},
    {"card": "0b5e7c1d-2f3a-5b4c-8d9e-1f2a3b4c5d6e", "outcome": "overridden", "outcomeTimestamp": "2026-11-22T10:00:00+01:00",
     "overrideReason": {"reason": {"system": "https://spine-cds.example.org/fhir/CodeSystem/override-reason",
                                   "code": "documented-elsewhere", "display": "Criteria are documented in notes"},
                        "userComment": "PT notes scanned"}}]}}
FEEDBACK_PATH = "/cds-services/spine-imaging-order-sign/feedback"

# --- what the mutations put in ------------------------------------------------------------------

WRONG_TYPES = [None, 0, -1, 2**63, 1.5, -0.0, 1e308, float("nan"), float("inf"), True, False, "", " ", "x",
               [], {}, [None], [[]], {"": None}, {"resourceType": "OperationOutcome"}, {"resourceType": 7}]
BAD_DATES = ["", "2026-13-45", "2026-02-30", "0000-00-00", "0001-01-01", "9999-12-31T23:59:59+14:00",
             "2026-11-22T25:61:61Z", "yesterday", "2026", "2026-11", "20261122", "-0001-01-01",
             "2026-11-22T10:00:00", "2026-11-22T10:00:00+99:99", "１２３４-05-06", 20261122, 1.5e9, None,
             {"start": "2026-01-01", "end": "2025-01-01"}, {"start": "nope"}, []]
UNKNOWN_TYPES = ["", "Foo", "patient", "Bundle", "OperationOutcome", "Patient", "ServiceRequest", "Binary",
                 "Questionnaire", "Condition ", "Condition\x00", "DomainResource", "x" * 300]
NO_CODES = [[], [{}], [{"system": "http://snomed.info/sct"}], [{"code": ""}], [{"code": None}],
            {"text": "only text"}, {}, None, [{"system": "urn:oid:1.2", "code": "X"}], [{"code": 72148}]]
ODD_TEXT = ["\x00", "a\x00b", "\ud800", "x\udfffy", "\u202etext", "😀" * 50, "\t\n ", "\u00a0", "Patient/",
            "/", "..", "ServiceRequest/", "%00", "<script>alert(1)</script>", "{{context.patientId}}",
            "'; DROP TABLE decisions; --", "Ω" * 3000, "\ufeff", "\u0085"]

_DATE_KEY = re.compile(r"(date|Date|DateTime|Period|Instant|Timestamp|authoredOn|issued|recorded|onset|performed|"
                       r"effective|abatement|start|end|started|occurrence|birth)")
_CODE_KEY = {"code", "coding", "system", "reasonCode", "valueCodeableConcept", "medicationCodeableConcept",
             "category", "clinicalStatus", "verificationStatus", "identifier", "payor", "valueQuantity"}


def json_paths(value, prefix=()):
    """Every path into a JSON value, the root included."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from json_paths(item, prefix + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from json_paths(item, prefix + (i,))


def _parent(body, path):
    target = body
    for part in path[:-1]:
        target = target[part]
    return target


_DEEP = re.compile(r'"\\u0000deep(\d+)\\u0000"')


def serialise(body: dict) -> str:
    """The body as JSON text, with each deep-nesting placeholder expanded to ``{"n": [{"n": [...`` of
    that depth (built as text: neither json.dumps nor these helpers should recurse that deep)."""
    def nested(match: re.Match) -> str:
        half = int(match[1]) // 2
        return '{"n": [' * half + "null" + "]}" * half
    return _DEEP.sub(nested, json.dumps(body))


def _targets(body, kind: str) -> list[tuple]:
    """The paths a mutation kind may hit (never the root: the body stays an object)."""
    paths = [p for p in json_paths(body) if p]
    if kind == "bad_date":
        return [p for p in paths if isinstance(p[-1], str) and _DATE_KEY.search(p[-1])]
    if kind == "resource_type":
        return [p for p in paths if p[-1] == "resourceType"]
    if kind == "no_code":
        return [p for p in paths if p[-1] in _CODE_KEY]
    if kind in ("huge_string", "odd_text"):
        return [p for p in paths if isinstance(_parent(body, p)[p[-1]], str)]
    if kind == "duplicate":
        return [p for p in paths if isinstance(p[-1], int)]
    return paths


@st.composite
def _value_for(draw, kind: str):
    if kind == "wrong_type":
        return copy.deepcopy(draw(st.sampled_from(WRONG_TYPES)))
    if kind == "bad_date":
        return copy.deepcopy(draw(st.sampled_from(BAD_DATES)))
    if kind == "resource_type":
        return draw(st.sampled_from(UNKNOWN_TYPES))
    if kind == "no_code":
        return copy.deepcopy(draw(st.sampled_from(NO_CODES)))
    if kind == "odd_text":
        return draw(st.sampled_from(ODD_TEXT) | st.text(max_size=40))
    if kind == "huge_string":
        return draw(st.sampled_from("xÿ😀 ")) * draw(st.integers(1_000, 60_000))
    if kind == "deep":
        return f"\x00deep{draw(st.sampled_from([30, 100, 400, 700, 950, 3_000]))}\x00"
    return None  # drop / duplicate take no value


KINDS = ["wrong_type", "drop", "bad_date", "resource_type", "no_code", "huge_string", "odd_text", "deep", "duplicate"]


def apply(body: dict, kind: str, path: tuple, value) -> None:
    """Apply one mutation in place."""
    parent, key = _parent(body, path), path[-1]
    if kind == "drop":
        del parent[key]
    elif kind == "duplicate":
        parent.insert(key, copy.deepcopy(parent[key]))
    else:
        parent[key] = value


@dataclass(frozen=True)
class Run:
    """One sample and its mutations: the bodies to send, in order, and a label naming each step
    (the repr hypothesis prints for a failure, instead of megabytes of JSON)."""

    url: str
    label: str
    bodies: tuple[str, ...]

    def __repr__(self) -> str:
        return f"Run({self.label!r})"


@st.composite
def mutation_runs(draw, names: list[str], max_mutations: int = 6) -> Run:
    """One sample with 1..max_mutations mutations, sent after each one (cumulatively)."""
    name = draw(st.sampled_from(names))
    body = copy.deepcopy({**SAMPLES, **LARGE, **FEEDBACK}[name])
    url = FEEDBACK_PATH if name in FEEDBACK else f"/cds-services/{SERVICE_OF_HOOK[body['hook']]}"
    bodies, steps = [], []
    for _ in range(draw(st.integers(1, max_mutations))):
        kind = draw(st.sampled_from(KINDS))
        targets = _targets(body, kind)
        if not targets:
            continue
        path = targets[draw(st.integers(0, len(targets) - 1))]
        value = draw(_value_for(kind))
        apply(body, kind, path, value)
        steps.append(f"{kind} at {'.'.join(map(str, path))}")
        bodies.append(serialise(body))
    return Run(url, f"{name}: " + "; ".join(steps), tuple(bodies))
