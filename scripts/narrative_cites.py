"""Write each narrative concept's guideline citations into mappings/narrative.json.

A concept stands for value sets and documented-leaf labels; the rules (indications, gates,
alternatives) whose criteria read those are where the guideline asks for it.  This script files
up to three of them per concept as ``cites`` (guideline, rule id, section, quote), so a clinical
reviewer reading the lexicon sees why each concept is there.  ``tests/test_narrative.py`` checks
that every concept cites at least one rule and that each citation still reads the concept.

    .venv/bin/python scripts/narrative_cites.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cds_service.engine.registry import load_registry  # noqa: E402

MAX_CITES = 3


def rules_reading(registry, tags: frozenset[str]):
    """(guideline, rule) pairs whose criteria read one of ``tags`` (value sets or NOTED labels)."""
    from cds_service.engine.narrative.lexicon import NOTED
    from cds_service.engine.attestation import link_id
    for guideline in registry.guidelines.values():
        for rule in (*guideline.indications, *guideline.gates, *guideline.alternatives):
            if tags & read_by(rule.criteria, guideline.definitions, NOTED, link_id):
                yield guideline, rule


def read_by(node, definitions, noted: str, link_id) -> frozenset[str]:
    """The value sets and NOTED tags a criterion reads, following refs."""
    found, todo = set(), [node]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            if "ref" in node and node["ref"] in definitions:
                todo.append(definitions[node["ref"]])
            if node.get("kind") == "documented":
                found.add(noted + link_id(node["label"]))
            if isinstance(node.get("valueset"), str):
                found.add(node["valueset"])
            todo.extend(v for k, v in node.items() if k != "ref")
        elif isinstance(node, list):
            todo.extend(node)
    return frozenset(found)


def main() -> int:
    registry = load_registry(ROOT / "mappings", ROOT / "valuesets", "nia")
    path = ROOT / "mappings" / "narrative.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    for entry in data["concepts"]:
        concept = registry.narrative.lexicon.concepts[entry["id"]]
        entry["cites"] = [{"guideline": g.id, "rule": r.id, "section": r.source["section"],
                           **({"quote": r.source["quote"]} if r.source.get("quote") else {})}
                          for g, r in list(rules_reading(registry, concept.tags))[:MAX_CITES]]
        print(f"{entry['id']}: {len(entry['cites'])} citation(s)", file=sys.stderr)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
