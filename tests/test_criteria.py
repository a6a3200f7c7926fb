"""Every criterion kind and combinator, from the table in tests/tables/criteria.json."""
from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from types import MappingProxyType

import pytest

from cds_service.engine.evaluation import evaluate_node
from cds_service.engine.guidelines import Guideline
from cds_service.model import ClinicalItem, Facts, SpineOrder

TABLE = json.loads((Path(__file__).parent / "tables" / "criteria.json").read_text())
EMPTY = Guideline(id="t", title="t", publisher="", version="", document="", status="encoded",
                  modalities=frozenset(), regions=frozenset(), definitions=MappingProxyType({}))


def _facts(case: dict, studies) -> Facts:
    catalog = studies.by_cpt
    items = tuple(ClinicalItem(ref=i["ref"], resource_type=i["type"], valuesets=frozenset(i.get("valuesets", [])),
                               display=i["ref"], when=date.fromisoformat(i["date"]) if i.get("date") else None,
                               status=i.get("status", "active"), value=i.get("value"), unit=i.get("unit"), abnormal=i.get("abnormal"),
                               study=catalog[i["study"]] if i.get("study") else None,
                               end=date.fromisoformat(i["end"]) if i.get("end") else None,
                               regions=frozenset(i.get("regions", [])), suspected=i.get("suspected", False),
                               dated_by=i.get("dated_by"))
                  for i in case.get("items", []))
    order = SpineOrder("ServiceRequest/o", {}, catalog["72148"])
    others = tuple(SpineOrder(f"ServiceRequest/x{n}", {}, catalog[cpt]) for n, cpt in enumerate(case.get("other_orders", [])))
    birth = case.get("birthDate", "1970-01-01")
    return Facts(today=date.fromisoformat(case.get("today", TABLE["today"])),
                 birth_date=date.fromisoformat(birth) if birth else None, items=items, order=order, other_orders=others)


@pytest.mark.parametrize("case", TABLE["cases"], ids=[c["name"] for c in TABLE["cases"]])
def test_criterion(case, catalog):
    result = evaluate_node(case["node"], _facts(case, catalog), EMPTY)
    assert result.status.value == case["expect"], result
    for ref in case.get("evidence", []):
        assert ref in result.evidence
    if "met_on" in case:
        assert result.met_on == date.fromisoformat(case["met_on"])
    if "detail_includes" in case:
        assert case["detail_includes"] in (result.detail or "")
