"""Routing a patient's Coverage to a program, and naming the payer the patient knows (CRD)."""
from __future__ import annotations

import pytest

from cds_service.model import PatientRecord

PAYER = "http://example.org/fhir/sid/payer"


def _record(*resources: dict) -> PatientRecord:
    grouped: dict[str, list[dict]] = {}
    for resource in resources:
        grouped.setdefault(resource["resourceType"], []).append(resource)
    return PatientRecord(patient=None, resources={k: tuple(v) for k, v in grouped.items()}, sources={"coverage": "prefetch"})


@pytest.mark.parametrize("payor, organization, program, payer", [
    ({"reference": "Organization/o1", "display": "Acme Health Plan"}, {"name": "Acme Health Plan Inc."}, "aim", "Acme Health Plan"),
    ({"reference": "Organization/o1"}, {"name": "Blue Valley Health"}, "aim", "Blue Valley Health"),
    ({"identifier": {"system": PAYER, "value": "aim"}}, None, "aim", None),
    ({"reference": "Organization/o1"}, {"name": "  "}, "aim", None),
])
def test_the_card_names_the_insurer_and_routes_by_its_identifier(registry, payor, organization, program, payer):
    resources = [{"resourceType": "Coverage", "id": "c1", "status": "active", "payor": [payor]}]
    if organization is not None:
        resources.append({"resourceType": "Organization", "id": "o1", "identifier": [{"system": PAYER, "value": "aim"}],
                          **organization})
    route = registry.routing.route(_record(*resources), "nia")
    assert (route.program.id, route.routed_by, route.payer) == (program, "payer", payer)


def test_an_unknown_payer_is_still_named_and_falls_back_to_the_default_program(registry):
    coverage = {"resourceType": "Coverage", "id": "c1", "payor": [{"display": "Small Local Plan"}]}
    route = registry.routing.route(_record(coverage), "nia")
    assert (route.program.id, route.routed_by, route.payer) == ("nia", "default", "Small Local Plan")
