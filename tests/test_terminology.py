"""Code lookups: system aliases, ICD-10-CM dots, and RxNorm products matched to ingredients."""
from __future__ import annotations

import pytest

from cds_service.engine.terminology import ingredient_name

RX, ICD = "http://www.nlm.nih.gov/research/umls/rxnorm", "http://hl7.org/fhir/sid/icd-10-cm"


@pytest.mark.parametrize("coding,valueset,expected", [
    ({"system": ICD, "code": "M54.16"}, "icd10-sct-lumbar-radiculopathy", True),
    ({"system": ICD, "code": "m5416"}, "icd10-sct-lumbar-radiculopathy", True),
    ({"system": "urn:oid:2.16.840.1.113883.6.90", "code": "M54.16"}, "icd10-sct-lumbar-radiculopathy", True),
    ({"system": "http://snomed.info/sct", "code": "M54.16"}, "icd10-sct-lumbar-radiculopathy", False),
    ({"system": RX, "code": "197807"}, "rxnorm-nsaids", True),                       # listed product
    ({"system": RX, "code": "197806", "display": "ibuprofen 600 MG Oral Tablet"}, "rxnorm-nsaids", True),
    ({"system": RX, "code": "849727", "display": "naproxen sodium 550 MG Oral Tablet"}, "rxnorm-nsaids", True),
    ({"system": RX, "code": "197806"}, "rxnorm-nsaids", False),                      # no display: cannot tell
    ({"system": RX, "code": "1049621", "display": "oxycodone hydrochloride 5 MG Oral Tablet"}, "rxnorm-nsaids", False),
    ({"system": ICD, "code": "Z99.99", "display": "ibuprofen 600 MG"}, "rxnorm-nsaids", False),  # names count only for RxNorm
])
def test_valueset_membership(registry, coding, valueset, expected):
    found = registry.terminology.valuesets_of(coding["system"], coding["code"], coding.get("display"))
    assert (valueset in found) is expected


@pytest.mark.parametrize("display,name", [
    ("ibuprofen 800 MG Oral Tablet", "ibuprofen"),
    ("cyclobenzaprine hydrochloride 10 MG Oral Tablet", "cyclobenzaprine hydrochloride"),
    ("Naproxen 500 MG Oral Tablet [Naprosyn]", "naproxen"),
    ("prednisone", "prednisone"),
    ("15 ML natalizumab 20 MG/ML Injection", None),
])
def test_ingredient_name(display, name):
    assert ingredient_name(display) == name


@pytest.mark.parametrize("coding,valueset,expected", [
    ({"system": ICD, "code": "M54.16"}, "icd10-sct-lumbar-radiculopathy", True),
    ({"system": "urn:oid:2.16.840.1.113883.6.90", "code": "m5416"}, "icd10-sct-lumbar-radiculopathy", True),
    ({"system": RX, "code": "197806", "display": "ibuprofen 600 MG Oral Tablet"}, "rxnorm-nsaids", True),
    ({"system": RX, "code": "197806"}, "rxnorm-nsaids", False),
])
def test_the_tagger_answers_as_the_terminology_does(registry, coding, valueset, expected):
    """The memoised lookup of fact extraction (tagging.py) gives the terminology's answer, twice."""
    for _ in range(2):
        found = registry.tagger.tags({"coding": [coding]})
        assert (found is not None and valueset in found[0]) is expected


def test_the_tagger_unions_codings_takes_the_first_study_and_skips_junk(registry):
    from cds_service.engine.tagging import Tagger
    tagger = Tagger(registry.terminology, registry.catalog, registry.regions, limit=2)
    cpt = "http://www.ama-assn.org/go/cpt"
    concept = {"coding": ["junk", None, {"system": ["a list"], "code": "M54.16"}, {"system": ICD, "code": {"x": 1}},
                         {"system": ICD, "code": "M54.16", "display": {"not": "text"}},
                         {"system": cpt, "code": "72100"}, {"system": cpt, "code": "72148"}]}
    valuesets, study, regions = tagger.tags(concept, [{"coding": [{"system": RX, "code": "197807"}]}, "junk"], 42, None)
    assert {"icd10-sct-lumbar-radiculopathy", "rxnorm-nsaids"} <= valuesets
    assert study.cpt == "72100" and regions == {"lumbar"}   # M54.16: 5th character 6; 72100 is a lumbar study
    assert tagger.tags({"coding": [{"system": ICD, "code": "Z00.00"}]}, {"coding": "not a list"}, []) is None
    assert len(tagger._memo) == 2  # bounded: hostile input cannot grow it
