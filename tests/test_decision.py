"""Decision precedence on a small test guideline (tests/fixtures/engine), table-driven."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cds_service.engine.registry import load_registry
from test_cases import check_case

ENGINE = Path(__file__).parent / "fixtures" / "engine"
TABLE = json.loads((Path(__file__).parent / "tables" / "decisions.json").read_text())


@pytest.fixture(scope="module")
def engine_registry():
    return load_registry(ENGINE / "mappings", ENGINE / "valuesets", "test")


@pytest.mark.parametrize("case", TABLE["cases"], ids=[c["name"] for c in TABLE["cases"]])
def test_decision(case, engine_registry):
    check_case(TABLE, case, engine_registry)
