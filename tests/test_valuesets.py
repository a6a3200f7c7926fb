"""Every shipped value set obeys valuesets/README.md, and generated ones match their recipe."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import warnings

import pytest
from fhir.resources.R4B.valueset import ValueSet

with warnings.catch_warnings():  # simple-icd-10-cm 1.5 loads its data with a deprecated importlib call
    warnings.simplefilter("ignore", DeprecationWarning)
    import simple_icd_10_cm as icd

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "valuesets"
BASE_URL = "https://spine-cds.example.org/fhir/ValueSet/"
RECIPE_EXTENSION = "https://spine-cds.example.org/fhir/StructureDefinition/expansion-recipe"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
KNOWN_SYSTEMS = {ICD10CM, "http://snomed.info/sct", "http://www.ama-assn.org/go/cpt", "http://loinc.org",
                 "http://www.nlm.nih.gov/research/umls/rxnorm", "http://nucc.org/provider-taxonomy"}
PATHS = sorted(FOLDER.glob("*.json"))


def _load_builder():
    spec = importlib.util.spec_from_file_location("build_valuesets", ROOT / "scripts" / "build_valuesets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILDER = _load_builder()
RECIPES = BUILDER.load_recipes()


def _contains(resource: dict) -> list[dict]:
    found, stack = [], list(resource["expansion"].get("contains", []))
    while stack:
        entry = stack.pop(0)
        found.append(entry)
        stack.extend(entry.get("contains", []))
    return found


@pytest.fixture(scope="module", params=PATHS, ids=[p.stem for p in PATHS])
def valueset(request) -> tuple[Path, dict]:
    return request.param, json.loads(request.param.read_text(encoding="utf-8"))


def test_there_are_value_sets():
    assert PATHS, "valuesets/ holds no ValueSet files"


def test_parses_as_r4b_valueset(valueset):
    _, resource = valueset
    ValueSet.model_validate(resource)


def test_identity_and_metadata(valueset):
    path, resource = valueset
    assert resource["resourceType"] == "ValueSet"
    assert resource["id"] == path.stem
    assert resource["url"] == BASE_URL + path.stem
    for key in ("status", "name", "title", "description"):
        assert resource.get(key), f"{path.name} lacks {key}"


def test_expansion_entries_are_complete(valueset):
    path, resource = valueset
    entries = _contains(resource)
    assert entries, f"{path.name} has an empty expansion"
    for entry in entries:
        assert entry.get("system") and entry.get("code") and entry.get("display"), f"{path.name}: {entry}"
        assert entry["system"] in KNOWN_SYSTEMS, f"{path.name}: unexpected system {entry['system']}"


def test_no_duplicate_codes(valueset):
    path, resource = valueset
    keys = [(e["system"], e["code"].replace(".", "").upper() if e["system"] == ICD10CM else e["code"])
            for e in _contains(resource)]
    duplicates = {k for k in keys if keys.count(k) > 1}
    assert not duplicates, f"{path.name} repeats {sorted(duplicates)}"


def test_icd10cm_codes_exist(valueset):
    path, resource = valueset
    unknown = [e["code"] for e in _contains(resource) if e["system"] == ICD10CM and not icd.is_valid_item(e["code"])]
    assert not unknown, f"{path.name}: not in the ICD-10-CM release: {unknown}"


def test_icd10cm_codes_are_codes_not_blocks(valueset):
    path, resource = valueset
    blocks = [e["code"] for e in _contains(resource) if e["system"] == ICD10CM and not BUILDER.is_code(e["code"])]
    assert not blocks, f"{path.name}: chapters or blocks are not codes: {blocks}"


def test_provenance(valueset):
    path, resource = valueset
    assert resource.get("description") or resource.get("purpose"), f"{path.name} says nothing of its source"
    if any(e["system"] == ICD10CM for e in _contains(resource)) and path.stem in {r["id"] for r in RECIPES["valuesets"]}:
        recipe = [x for x in resource.get("extension", []) if x.get("url") == RECIPE_EXTENSION]
        assert recipe and recipe[0].get("valueString"), f"{path.name} lacks the expansion-recipe extension"


@pytest.mark.parametrize("recipe", RECIPES["valuesets"], ids=[r["id"] for r in RECIPES["valuesets"]])
def test_recipe_reproduces_file(recipe):
    path = FOLDER / f"{recipe['id']}.json"
    assert path.exists(), f"{path.name} missing: run scripts/build_valuesets.py"
    resource = json.loads(path.read_text(encoding="utf-8"))
    assert resource["expansion"]["contains"] == BUILDER.expand(recipe), f"{path.name} is stale: run scripts/build_valuesets.py"
    recipe_ext = [x["valueString"] for x in resource.get("extension", []) if x.get("url") == RECIPE_EXTENSION]
    assert recipe_ext == [BUILDER.recipe_text(recipe)]


def test_recipe_ids_are_unique():
    ids = [r["id"] for r in RECIPES["valuesets"]]
    assert len(ids) == len(set(ids))


def test_icd10_expansion_includes_roots_and_descendants():
    codes = BUILDER.icd10_codes(["M54.1"])
    assert codes[0] == "M54.1" and "M54.16" in codes and set(icd.get_descendants("M54.1")) <= set(codes)


def test_icd10_expansion_rejects_unknown_roots():
    with pytest.raises(ValueError):
        BUILDER.icd10_codes(["M99.999"])


def test_icd10_expansion_skips_blocks():
    codes = BUILDER.icd10_codes(["C00-C14"])
    assert "C00-C14" not in codes and "C00.0" in codes and all(BUILDER.is_code(c) for c in codes)


def test_icd10_expansion_keeps_categories_named_like_their_block():
    assert BUILDER.icd10_codes(["B20"]) == ["B20"]
    assert "C50" in BUILDER.icd10_codes(["C50"])


def test_mapping_value_sets_exist():
    """Every value set a guideline mapping names has a file (the loader checks this too)."""
    files = {p.stem for p in PATHS}
    for mapping in sorted((ROOT / "mappings").glob("*.json")):
        if mapping.stem in ("programs", "studies"):
            continue
        text = mapping.read_text(encoding="utf-8")
        for name in _valueset_names(json.loads(text)):
            assert name in files, f"{mapping.name} names missing value set {name}"


def _valueset_names(node) -> set[str]:
    names = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "valueset" and isinstance(value, str):
                names.add(value)
            elif key == "valuesets" and isinstance(value, list):
                names.update(v for v in value if isinstance(v, str))
            else:
                names |= _valueset_names(value)
    elif isinstance(node, list):
        for item in node:
            names |= _valueset_names(item)
    return names
