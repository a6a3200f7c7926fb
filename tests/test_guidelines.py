"""Mappings are checked against the closed vocabulary, and the docs cover every kind."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from cds_service.errors import CdsConfigError
from cds_service.engine.guidelines import SHARED_TABLES, KINDS, load_guidelines
from cds_service.engine.registry import load_registry

ROOT = Path(__file__).resolve().parent.parent
ENGINE = Path(__file__).parent / "fixtures" / "engine"


def test_every_kind_is_documented_in_mappings_readme():
    readme = (ROOT / "mappings" / "README.md").read_text()
    documented = set(re.findall(r"^### `(\w+)`", readme, flags=re.M))
    assert documented == set(KINDS)


def test_every_guideline_document_has_a_mapping_file():
    stems = {p.stem for p in (ROOT / "mappings").glob("*.json")} - set(SHARED_TABLES)
    assert stems == {"nia-lumbar-spine-mri", "nia-lumbar-spine-ct", "aim-imaging-of-the-spine",
                     "cohere-mri-spine", "healthhelp-mri-lumbar-spine"}


def test_shipped_mappings_load(registry):
    assert registry.guidelines["nia-lumbar-spine-mri"].encoded
    for guideline in registry.guidelines.values():
        for rule in guideline.indications + guideline.gates + guideline.alternatives:
            assert rule.label and rule.source["section"]


def _broken(tmp_path, mutate) -> Path:
    target = tmp_path / "mappings"
    shutil.copytree(ENGINE / "mappings", target)
    path = target / "test-guideline.json"
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    return target


@pytest.mark.parametrize("mutate,message", [
    (lambda g: g["indications"][0]["criteria"].update(kind="regex"), "unknown kind"),
    (lambda g: g["indications"][0]["criteria"].update(valueset="nope"), "does not exist"),
    (lambda g: g["indications"][0]["criteria"].pop("label"), "needs a label"),
    (lambda g: g["indications"][0].pop("source"), "needs 'source'"),
    (lambda g: g["indications"][1]["criteria"]["all"][1].update(ref="undefined"), "not in definitions"),
    (lambda g: g["indications"][0]["criteria"].update(within="90"), "unknown ['within']"),
    (lambda g: g["alternatives"][0].update(when="sometimes"), "when must be"),
    (lambda g: g["indications"].append(dict(g["indications"][0])), "duplicate id"),
    (lambda g: g["indications"][0]["criteria"].update(if_absent="maybe"), "if_absent"),
])
def test_invalid_mappings_are_refused_with_the_path(tmp_path, mutate, message):
    with pytest.raises(CdsConfigError, match=re.escape(message)) as info:
        load_registry(_broken(tmp_path, mutate), ENGINE / "valuesets", "test")
    assert "test-guideline.json" in str(info.value)


def test_unknown_default_program_is_refused():
    with pytest.raises(CdsConfigError, match="SPINE_CDS_DEFAULT_PROGRAM"):
        load_registry(ENGINE / "mappings", ENGINE / "valuesets", "nope")


def test_guideline_files_other_than_routing_are_loaded(registry):
    assert set(load_guidelines(ROOT / "mappings", registry.terminology)) == set(registry.guidelines)
