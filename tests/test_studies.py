"""Recognising spine CT/MRI orders by CPT, and resolving alternative studies."""
from __future__ import annotations

import pytest

from cds_service.engine.studies import spine_orders


def _order(oid, system, code):
    return {"resourceType": "ServiceRequest", "id": oid, "code": {"coding": [{"system": system, "code": code}]}}


CPT = "http://www.ama-assn.org/go/cpt"


@pytest.mark.parametrize("code,expected", [
    ("72125", ("CT", "cervical", "without")), ("72133", ("CT", "lumbar", "without-and-with")),
    ("72141", ("MR", "cervical", "without")), ("72147", ("MR", "thoracic", "with")),
    ("72158", ("MR", "lumbar", "without-and-with")),
])
def test_spine_ct_and_mri_codes_are_recognised(catalog, code, expected):
    [order] = spine_orders((_order("o", CPT, code),), catalog)
    assert (order.study.modality, order.study.region, order.study.contrast) == expected
    assert order.reference == "ServiceRequest/o"


@pytest.mark.parametrize("order", [
    _order("a", CPT, "70551"),                                   # brain MRI
    _order("b", CPT, "72100"),                                   # lumbar radiographs: not advanced imaging
    _order("c", "http://snomed.info/sct", "72148"),             # the right digits in the wrong system
    {"resourceType": "MedicationRequest", "id": "d"},
    {"resourceType": "ServiceRequest", "id": "e", "code": {"coding": [{}]}},
    {"resourceType": "ServiceRequest", "id": "f"},
])
def test_other_orders_are_not_ours(catalog, order):
    assert spine_orders((order,), catalog) == []


def test_cpt_by_oid_is_recognised(catalog):
    assert spine_orders((_order("o", "urn:oid:2.16.840.1.113883.6.12", "72148"),), catalog)


@pytest.mark.parametrize("spec,ordered,expected", [
    ({"cpt": "76800"}, "72148", "76800"),
    ({"modality": "CT", "region": "ordered", "contrast": "ordered"}, "72158", "72133"),
    ({"modality": "CT", "region": "ordered", "contrast": "ordered"}, "72142", "72126"),
    ({"modality": "MR", "region": "ordered", "contrast": "ordered"}, "72131", "72148"),
    ({"modality": "XR", "region": "ordered"}, "72141", "72040"),
    ({"modality": "XR", "region": "ordered"}, "72146", "72070"),
    ({"modality": "XR", "region": "ordered"}, "72148", "72100"),
])
def test_alternative_study_resolution(catalog, spec, ordered, expected):
    assert catalog.resolve(spec, catalog.by_cpt[ordered]).cpt == expected
