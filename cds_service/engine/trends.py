"""A change between dated results: "weight loss of more than 5 % in 2 months".

An ``observation`` leaf with ``percent_change`` compares the latest result with each earlier one
taken at most ``over_days`` before it (both converted to ``unit``), as a percentage of the earlier
value.  Met when any such change passes the test; not-met when there are pairs and none passes;
unknown with fewer than two comparable dated results (a single weight says nothing about a
change).  Pure.
"""
from __future__ import annotations

import operator
from datetime import timedelta

from cds_service.engine import units
from cds_service.engine.fhir_dates import human_date
from cds_service.model import ClinicalItem, Facts, Result, Status

COMPARISONS = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}


def percent_change(node: dict, facts: Facts, items: list[ClinicalItem]) -> Result:
    test, label = node["percent_change"], node["label"]
    dated = sorted(((i.when, value, i) for i in items if i.when is not None and i.when <= facts.today
                    and (value := _value(i, test["unit"])) is not None), key=lambda t: t[0])
    window = node.get("within_days")
    if window is not None:
        dated = [t for t in dated if t[0] >= facts.today - timedelta(days=window + test["over_days"])]
    if len(dated) < 2:
        status = Status.NOT_MET if node.get("if_absent") == "not-met" and not items else Status.UNKNOWN
        return Result(status, label, tuple(dict.fromkeys(t[2].ref for t in dated)),
                      detail="fewer than two dated results to compare")
    latest_day, latest, latest_item = dated[-1]
    if window is not None and latest_day < facts.today - timedelta(days=window):
        return Result(Status.UNKNOWN, label, (latest_item.ref,), detail=f"no result in the last {window} days")
    earlier = [t for t in dated[:-1] if latest_day - t[0] <= timedelta(days=test["over_days"]) and t[1] > 0]
    if not earlier:
        return Result(Status.UNKNOWN, label, (latest_item.ref,),
                      detail=f"no earlier result within {test['over_days']} days of {human_date(latest_day)}")
    changes = [((latest - value) / value * 100, day, item) for day, value, item in earlier]
    hits = [c for c in changes if all(COMPARISONS[op](c[0], bound) for op, bound in test.items() if op in COMPARISONS)]
    best = min(changes, key=lambda c: c[0]) if not hits else min(hits, key=lambda c: c[0])
    detail = f"{best[0]:+.1f}% from {human_date(best[1])} to {human_date(latest_day)}"
    status = Status.MET if hits else Status.NOT_MET
    return Result(status, label, (best[2].ref, latest_item.ref), detail=detail)


def _value(item: ClinicalItem, unit: str) -> float | None:
    return None if item.value is None else units.convert(item.value, item.unit, unit)
