"""The traceability tables match the mappings and case tables, and every indication is tested
met and not met (issue: at least two scenarios per indication)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("traceability", ROOT / "scripts" / "traceability.py")
traceability = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(traceability)

ENCODED = [p.stem for p in sorted((ROOT / "mappings").glob("*.json"))
           if p.stem not in ("programs", "studies") and json.loads(p.read_text()).get("status") == "encoded"]


@pytest.mark.parametrize("path", sorted(traceability.tables()), ids=lambda p: p.name)
def test_traceability_table_is_up_to_date(path):
    assert path.exists() and path.read_text(encoding="utf-8") == traceability.tables()[path], \
        "run: python scripts/traceability.py"


def can_be_met_from_record(node: dict, definitions: dict) -> bool:
    """False when every path to "met" runs through a ``documented`` leaf (notes only)."""
    if "ref" in node:
        return can_be_met_from_record(definitions[node["ref"]], definitions)
    if "all" in node:
        return all(can_be_met_from_record(child, definitions) for child in node["all"])
    if "any" in node:
        return any(can_be_met_from_record(child, definitions) for child in node["any"])
    if "not" in node:
        return node["not"].get("kind") != "documented"
    return node["kind"] != "documented"


@pytest.mark.parametrize("guideline_id", ENCODED)
def test_every_indication_has_a_met_and_a_not_met_scenario(guideline_id):
    """Indications the record alone can satisfy need a met and a not-met scenario; those that
    always need the clinician's notes need a scenario showing the documentation card."""
    guideline = json.loads((ROOT / "mappings" / f"{guideline_id}.json").read_text())
    table = json.loads((ROOT / "tests" / "cases" / f"{guideline_id}.json").read_text())
    outcomes: dict[str, set[str]] = {}
    for case in table["cases"]:
        expect, about = case["expect"], case.get("indication")
        approved = expect.get("indication") if expect["outcome"] == "approve" else None
        if approved:
            outcomes.setdefault(approved, set()).add("met")
        if about and about != approved:  # the case's own indication was not the one met
            outcomes.setdefault(about, set()).add("not met")
    definitions = guideline.get("definitions", {})
    needed = {i["id"]: {"met", "not met"} if can_be_met_from_record(i["criteria"], definitions) else {"not met"}
              for i in guideline["indications"]}
    lacking = {rule: sorted(want - outcomes.get(rule, set())) for rule, want in needed.items()}
    lacking = {k: v for k, v in lacking.items() if v}
    assert not lacking, f"indications without a met/not-met scenario: {lacking}"
