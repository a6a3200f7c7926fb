"""A safety net against false approvals: an approval rests on the evidence it cites.

For every case row of every guideline that approves, take away the record entries the approving
indication cites (and the order's reason when it is cited).  The same indication must then no
longer approve — unless the record still holds another path to it, in which case the new
approval must cite other evidence of its own.  An approval that survives with no evidence at
all would be an approval from nothing: the failure this test exists to catch.  Approvals that
rest only on facts a record cannot lose here (age, the ordered study, other draft orders) have
nothing to take away and are counted, not tested.
"""
from __future__ import annotations

import copy
from datetime import date

import pytest

from casebuilder import ORDER_ID, build_case, build_resource, case_tables
from cds_service.protocol.hooks import decide_orders

ORDER_REF = f"ServiceRequest/{ORDER_ID}"


def _approved_rows():
    for table in case_tables():
        for case in table["cases"]:
            if case["expect"]["outcome"] == "approve":
                yield pytest.param(table, case, id=f"{table['guideline']}::{case['name']}")


def _decide(table: dict, case: dict, registry):
    hook, record = build_case(case, table.get("defaults", {}))
    today = date.fromisoformat(case.get("today", table["today"]))
    [decision] = decide_orders(hook, record, registry, table["program"], today)
    return decision


def _without_cited(case: dict, cited: set[str]) -> tuple[dict, int]:
    """The case with every record entry (and the order's reason) the approval cited taken away."""
    stripped, removed = copy.deepcopy(case), 0
    kept = []
    for index, entry in enumerate(case.get("record", [])):
        resource = build_resource(entry, index)
        if f"{resource['resourceType']}/{resource['id']}" in cited and not entry.get("draft"):
            removed += 1
        else:
            kept.append(entry)
    stripped["record"] = kept
    if ORDER_REF in cited and case.get("reasons"):
        stripped["reasons"], removed = [], removed + 1
    return stripped, removed


@pytest.mark.parametrize("table,case", list(_approved_rows()))
def test_an_approval_does_not_survive_losing_its_evidence(table, case, registry):
    decision = _decide(table, case, registry)
    assert decision.outcome == "approve"
    cited = set(decision.indication.result.evidence)
    stripped, removed = _without_cited(case, cited)
    if removed == 0:
        pytest.skip("the approval rests on the order, age or other draft orders only")
    again = _decide(table, stripped, registry)
    if again.outcome == "approve" and again.indication_id == decision.indication_id:
        new_evidence = set(again.indication.result.evidence) - {"Patient"}
        assert new_evidence, f"{decision.indication_id} still approves with its evidence {sorted(cited)} taken away"
        assert not new_evidence & cited
