"""Build valuesets/<id>.json from the declarative recipes in scripts/valueset_recipes/<id>.json.

A recipe names ICD-10-CM roots (each root and all its descendants are expanded with the
``simple-icd-10-cm`` package, so ranges are never typed by hand) and hand-listed codes of other
systems with their displays and a source note.  The recipe itself is written into the ValueSet's
``expansion-recipe`` extension, so every file says how it was made.

Usage::

    python scripts/build_valuesets.py           # write every recipe's value set
    python scripts/build_valuesets.py --check   # exit 1 if a file differs from its recipe
"""
from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import version
from pathlib import Path

import warnings

with warnings.catch_warnings():  # simple-icd-10-cm 1.5 loads its data with a deprecated importlib call
    warnings.simplefilter("ignore", DeprecationWarning)
    import simple_icd_10_cm as icd

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "scripts" / "valueset_recipes"
VALUESETS = ROOT / "valuesets"
BASE_URL = "https://spine-cds.example.org/fhir/ValueSet/"
RECIPE_EXTENSION = "https://spine-cds.example.org/fhir/StructureDefinition/expansion-recipe"
SYSTEMS = {
    "icd10": "http://hl7.org/fhir/sid/icd-10-cm",
    "sct": "http://snomed.info/sct",
    "cpt": "http://www.ama-assn.org/go/cpt",
    "loinc": "http://loinc.org",
    "rxnorm": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "nucc": "http://nucc.org/provider-taxonomy",
}
ICD_RELEASE = "ICD-10-CM FY2025 release"


def load_recipes(folder: Path = RECIPES) -> dict:
    """Every recipe (one file per value set, so parallel edits never collide), with the shared
    ``_about.json`` settings: ``{"expansion_timestamp": ..., "valuesets": [recipe, ...]}``."""
    folder = Path(folder)
    about = json.loads((folder / "_about.json").read_text(encoding="utf-8"))
    recipes = []
    for path in sorted(folder.glob("*.json")):
        if path.name == "_about.json":
            continue
        recipe = json.loads(path.read_text(encoding="utf-8"))
        if recipe.get("id") != path.stem:
            raise ValueError(f"{path.name}: id must be {path.stem!r}")
        recipes.append(recipe)
    return {**about, "valuesets": recipes}


def icd10_codes(roots: list[str]) -> list[str]:
    """Every ICD-10-CM code under ``roots`` (roots included; chapters and blocks are not codes).

    Raises ``ValueError`` for a root the release does not know, so a typo never silently
    empties a value set.
    """
    codes: list[str] = []
    for root in roots:
        if not icd.is_valid_item(root):
            raise ValueError(f"{root!r} is not an ICD-10-CM item")
        for code in [root, *icd.get_descendants(root)]:
            if is_code(code) and code not in codes:
                codes.append(code)
    return codes


def is_code(item: str) -> bool:
    """A category, subcategory or extended subcategory; not a chapter or block.

    (A few blocks share their name with their only category, e.g. B20 and C50, so asking
    "is it a block?" would wrongly drop those categories.)
    """
    return icd.is_category_or_subcategory(item) or icd.is_extended_subcategory(item)


def filter_icd10(codes: list[str], recipe: dict) -> list[str]:
    """Apply a recipe's optional ICD-10-CM filters.

    ``icd10cm_exclude``: roots whose codes (and descendants) are dropped.
    ``icd10cm_7th``: keep only 7-character codes whose 7th character is listed (e.g. ``["A", "B"]``
    for initial encounters); codes without a 7th character are dropped.
    """
    excluded = set(icd10_codes(recipe.get("icd10cm_exclude", [])))
    kept = [c for c in codes if c not in excluded]
    sevenths = recipe.get("icd10cm_7th")
    if sevenths:
        kept = [c for c in kept if len(c.replace(".", "")) == 7 and c[-1] in sevenths]
    return kept


def expand(recipe: dict) -> list[dict]:
    """The ``expansion.contains`` of one recipe: ICD-10-CM descendants, then the listed codes."""
    contains = [{"system": SYSTEMS["icd10"], "code": code, "display": icd.get_description(code)}
                for code in filter_icd10(icd10_codes(recipe.get("icd10cm", [])), recipe)]
    for system, code, display in recipe.get("codes", []):
        contains.append({"system": SYSTEMS[system], "code": code, "display": display})
    return contains


def recipe_text(recipe: dict) -> str:
    """One line that says how the expansion was made (stored in the ValueSet extension)."""
    parts = []
    if recipe.get("icd10cm"):
        text = (f"ICD-10-CM descendants of {', '.join(recipe['icd10cm'])} (roots included), "
                f"simple-icd-10-cm {version('simple-icd-10-cm')}, {ICD_RELEASE}")
        if recipe.get("icd10cm_exclude"):
            text += f", less descendants of {', '.join(recipe['icd10cm_exclude'])}"
        if recipe.get("icd10cm_7th"):
            text += f", only 7-character codes with 7th character {'/'.join(recipe['icd10cm_7th'])}"
        parts.append(text)
    listed = recipe.get("codes", [])
    if listed:
        counts = {}
        for system, _, _ in listed:
            counts[system] = counts.get(system, 0) + 1
        summary = ", ".join(f"{n} {system}" for system, n in counts.items())
        parts.append(f"hand-listed codes ({summary}); source: {recipe.get('codes_source', '')}")
    return "; ".join(parts) + f". Recipe: scripts/valueset_recipes/{recipe['id']}.json, built by scripts/build_valuesets.py."


def build_valueset(recipe: dict, timestamp: str) -> dict:
    """The FHIR R4 ValueSet resource for one recipe."""
    vs_id = recipe["id"]
    contains = expand(recipe)
    return {
        "resourceType": "ValueSet",
        "id": vs_id,
        "extension": [{"url": RECIPE_EXTENSION, "valueString": recipe_text(recipe)}],
        "url": BASE_URL + vs_id,
        "name": "".join(word.capitalize() for word in vs_id.split("-")),
        "title": recipe["title"],
        "status": "active",
        "experimental": False,
        "publisher": "spine-cds",
        "description": recipe["description"],
        "purpose": recipe["purpose"],
        "expansion": {"timestamp": timestamp, "total": len(contains), "contains": contains},
    }


def build_all(recipes: dict) -> dict[str, dict]:
    """Every value set of the recipe file, by id."""
    timestamp = recipes["expansion_timestamp"]
    return {r["id"]: build_valueset(r, timestamp) for r in recipes["valuesets"]}


def render(resource: dict) -> str:
    return json.dumps(resource, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report files that differ, write nothing")
    parser.add_argument("--only", nargs="+", metavar="ID", help="build just these value sets")
    args = parser.parse_args(argv)
    recipes = load_recipes()
    if args.only:
        unknown = set(args.only) - {r["id"] for r in recipes["valuesets"]}
        if unknown:
            parser.error(f"no recipe for {sorted(unknown)} in {RECIPES}")
        recipes["valuesets"] = [r for r in recipes["valuesets"] if r["id"] in args.only]
    stale = []
    for vs_id, resource in build_all(recipes).items():
        path = VALUESETS / f"{vs_id}.json"
        text = render(resource)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print("out of date:", ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
