"""The same patient record through all four programs: each answers by its own guideline."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_cases import check_case

TABLE = json.loads((Path(__file__).parent / "tables" / "cross_program.json").read_text())
GUIDELINES = {"nia": {"MR": "nia-lumbar-spine-mri", "CT": "nia-lumbar-spine-ct"},
              "aim": {"MR": "aim-imaging-of-the-spine", "CT": "aim-imaging-of-the-spine"},
              "cohere": {"MR": "cohere-mri-spine"}, "healthhelp": {"MR": "healthhelp-mri-lumbar-spine"}}
PARAMS = [pytest.param(case, program, id=f"{case['name']}::{program}")
          for case in TABLE["cases"] for program in ("nia", "aim", "cohere", "healthhelp")]


@pytest.mark.parametrize("case,program", PARAMS)
def test_each_program_gives_its_own_answer(case, program, registry):
    modality = "CT" if registry.catalog.by_cpt[case["order"]].modality == "CT" else "MR"
    guideline = GUIDELINES[program].get(modality)
    table = {"guideline": guideline, "program": program, "today": TABLE["today"]}
    check_case(table, {**case, "expect": case["expect"][program]}, registry)
