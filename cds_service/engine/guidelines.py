"""Guideline mappings: load ``mappings/*.json``, check them against the closed vocabulary.

A mapping that uses an unknown kind, names a value set that does not exist, lacks a label or
a source, or refers to an undefined definition is refused at start-up with a message naming the
file and the JSON path — a mistake in the rules must never surface as a wrong card.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from cds_service.errors import CdsConfigError
from cds_service.model import Study
from cds_service.engine.prerequisites import prerequisites
from cds_service.engine.terminology import Terminology

COMMON = frozenset({"kind", "label", "source", "if_absent", "within_days"})
# kind -> (required params, optional params); the vocabulary documented in mappings/README.md
KINDS: dict[str, tuple[frozenset, frozenset]] = {
    "finding": (frozenset({"valueset"}), frozenset({"active_only", "onset_min_days", "onset_max_days",
                                                    "include_suspected", "regions"})),
    "observation": (frozenset({"valueset"}), frozenset({"abnormal", "value", "percent_change"})),
    "procedure": (frozenset({"valueset"}), frozenset({"regions"})),
    "medication": (frozenset({"valueset"}), frozenset()),
    "imaging": (frozenset(), frozenset({"valueset", "modalities", "regions"})),
    "age": (frozenset(), frozenset({"min_years", "max_years", "min_months", "max_months"})),
    "conservative_care": (frozenset({"lookback_days", "min_weeks", "components", "require"}), frozenset({"regions"})),
    "draft_order": (frozenset({"modalities"}), frozenset({"regions"})),
    "ordered_study": (frozenset(), frozenset({"modalities", "regions", "contrast"})),
    "documented": (frozenset(), frozenset()),
    "requester": (frozenset({"valueset"}), frozenset()),
}
COMBINATORS = ("all", "any", "not", "ref")
SHARED_TABLES = ("programs", "studies", "regions", "narrative", "known_words")   # mappings/*.json that are not guidelines
REGIONS = frozenset({"cervical", "thoracic", "lumbar", "spine"})   # what a leaf's "regions" may list (or "ordered")
DAY_PARAMS = ("within_days", "onset_min_days", "onset_max_days")


@dataclass(frozen=True)
class Rule:
    """An indication, gate or alternative of a guideline."""

    id: str
    label: str
    source: dict
    criteria: dict
    applies_if: dict | None = None     # gates only
    when: str | None = None            # alternatives: always | unless_approved
    study: dict | None = None          # alternatives: the study to suggest
    reason: str | None = None          # alternatives: one line for the card
    needs: tuple = ()                  # prerequisites of criteria (prerequisites.py)
    applies_needs: tuple = ()          # ... of applies_if


@dataclass(frozen=True)
class Guideline:
    id: str
    title: str
    publisher: str
    version: str
    document: str
    status: str
    modalities: frozenset[str]
    regions: frozenset[str]
    definitions: MappingProxyType
    indications: tuple[Rule, ...] = ()
    gates: tuple[Rule, ...] = ()
    alternatives: tuple[Rule, ...] = ()
    not_computable: tuple[dict, ...] = field(default=())
    nodes: dict = field(default_factory=dict, compare=False, repr=False)
    """The compiled criteria, by id of their mapping node (filled by evaluation.compiled)."""

    @property
    def encoded(self) -> bool:
        return self.status == "encoded"

    def applies_to(self, study: Study) -> bool:
        return study.modality in self.modalities and study.region in self.regions

    def documented_labels(self) -> set[str]:
        """The label of every ``documented`` leaf (the narrative lexicon answers them by label)."""
        found: set[str] = set()
        roots = [*self.definitions.values(), *(r.criteria for r in (*self.indications, *self.gates, *self.alternatives)),
                 *(r.applies_if for r in self.gates if r.applies_if)]
        while roots:
            node = roots.pop()
            if isinstance(node, dict):
                if node.get("kind") == "documented":
                    found.add(node["label"])
                roots.extend(node.values())
            elif isinstance(node, list):
                roots.extend(node)
        return found


def load_guidelines(folder: Path, terminology: Terminology) -> dict[str, Guideline]:
    """Every guideline file in ``folder`` (all but the shared tables), validated."""
    guidelines = {}
    for path in sorted(Path(folder).glob("*.json")):
        if path.stem in SHARED_TABLES:
            continue
        data = _read(path)
        guidelines[data["id"]] = _build(data, path.name, terminology)
    return guidelines


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CdsConfigError(f"{path.name}: not readable JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("id") != path.stem:
        raise CdsConfigError(f"{path.name}: must be an object whose id is {path.stem!r}")
    return data


def _build(data: dict, name: str, terminology: Terminology) -> Guideline:
    checker = _Checker(name, terminology, data.get("definitions") or {})
    for key, node in checker.definitions.items():
        checker.node(node, f"definitions.{key}")
    rules = {}
    for section in ("indications", "gates", "alternatives"):
        rules[section] = tuple(checker.rule(r, f"{section}[{i}]", section)
                               for i, r in enumerate(data.get(section) or []))
    applies = data.get("applies_to") or {}
    return Guideline(
        id=data["id"], title=data.get("title", data["id"]), publisher=data.get("publisher", ""),
        version=str(data.get("version", "")), document=data.get("document", ""),
        status=data.get("status", "not-yet-encoded"),
        modalities=frozenset(applies.get("modalities", [])), regions=frozenset(applies.get("regions", [])),
        definitions=MappingProxyType(dict(checker.definitions)), not_computable=tuple(data.get("not_computable") or []),
        **rules)


class _Checker:
    """Validates nodes and rules of one mapping file, raising with the JSON path."""

    def __init__(self, name: str, terminology: Terminology, definitions: dict):
        self.name, self.terms, self.definitions = name, terminology, definitions
        self.ids: set[str] = set()

    def fail(self, path: str, message: str):
        raise CdsConfigError(f"{self.name} {path}: {message}")

    def rule(self, raw: dict, path: str, section: str) -> Rule:
        if not isinstance(raw, dict):
            self.fail(path, "must be an object")
        for key in ("id", "label", "source"):
            if not raw.get(key):
                self.fail(path, f"needs {key!r}")
        if raw["id"] in self.ids:
            self.fail(path, f"duplicate id {raw['id']!r}")
        self.ids.add(raw["id"])
        self.source(raw["source"], path)
        criteria_key = "requires" if section == "gates" else "criteria"
        self.node(raw.get(criteria_key), f"{path}.{criteria_key}")
        if section == "gates":
            self.node(raw.get("applies_if"), f"{path}.applies_if")
        if section == "alternatives":
            if raw.get("when") not in ("always", "unless_approved"):
                self.fail(path, "when must be 'always' or 'unless_approved'")
            if not isinstance(raw.get("study"), dict) or not raw.get("reason"):
                self.fail(path, "needs a study object and a one-line reason")
        return Rule(id=raw["id"], label=raw["label"], source=raw["source"], criteria=raw[criteria_key],
                    applies_if=raw.get("applies_if"), when=raw.get("when"), study=raw.get("study"),
                    reason=raw.get("reason"), needs=prerequisites(raw[criteria_key], self.definitions),
                    applies_needs=prerequisites(raw["applies_if"], self.definitions) if raw.get("applies_if") else ())

    def source(self, source: object, path: str) -> None:
        if not isinstance(source, dict) or not source.get("section"):
            self.fail(path, "source needs a 'section' (and a short 'quote')")

    def node(self, node: object, path: str) -> None:
        if not isinstance(node, dict):
            self.fail(path, "a criterion must be an object")
        combinator = next((k for k in COMBINATORS if k in node), None)
        if combinator == "ref":
            if node["ref"] not in self.definitions:
                self.fail(path, f"ref {node['ref']!r} is not in definitions")
        elif combinator == "not":
            self.node(node["not"], f"{path}.not")
        elif combinator:
            children = node[combinator]
            if not isinstance(children, list) or not children:
                self.fail(path, f"{combinator} needs a non-empty list")
            for i, child in enumerate(children):
                self.node(child, f"{path}.{combinator}[{i}]")
        else:
            self.leaf(node, path)

    def leaf(self, node: dict, path: str) -> None:
        kind = node.get("kind")
        if kind not in KINDS:
            self.fail(path, f"unknown kind {kind!r}; known: {', '.join(sorted(KINDS))}")
        if not node.get("label"):
            self.fail(path, "every criterion needs a label (what the card asks to document)")
        required, optional = KINDS[kind]
        missing = required - node.keys()
        unknown = node.keys() - required - optional - COMMON
        if missing or unknown:
            self.fail(path, f"{kind}: missing {sorted(missing)} / unknown {sorted(unknown)}")
        if node.get("if_absent", "unknown") not in ("unknown", "not-met"):
            self.fail(path, "if_absent must be 'unknown' or 'not-met'")
        if "source" in node:
            self.source(node["source"], path)
        if kind == "observation" and not (node.get("abnormal") is True or self._value_test(node.get("value"))
                                          or self._change_test(node.get("percent_change"))):
            self.fail(path, "observation needs abnormal: true, value: {gt|ge|lt|le: number, unit: UCUM} or "
                            "percent_change: {gt|ge|lt|le: percent, over_days: days, unit: UCUM}")
        regions = node.get("regions", "ordered")
        if regions not in ("ordered", "any") and not (isinstance(regions, list) and regions and set(regions) <= REGIONS):
            self.fail(path, f"regions must be \"ordered\", \"any\" or a list of {sorted(REGIONS)}")
        for key in DAY_PARAMS:
            if key in node and not (isinstance(node[key], int) and node[key] >= 0):
                self.fail(path, f"{key} must be a whole number of days")
        for vs in self._valuesets(node):
            if vs not in self.terms.valuesets:
                self.fail(path, f"value set {vs!r} does not exist in valuesets/")

    @staticmethod
    def _value_test(test: object) -> bool:
        if not isinstance(test, dict) or not test.keys() & {"gt", "ge", "lt", "le"}:
            return False
        return test.keys() <= {"gt", "ge", "lt", "le", "unit"} and all(
            isinstance(v, (int, float)) for k, v in test.items() if k != "unit")

    @classmethod
    def _change_test(cls, test: object) -> bool:
        if not isinstance(test, dict) or not isinstance(test.get("over_days"), int) or not isinstance(test.get("unit"), str):
            return False
        return cls._value_test({k: v for k, v in test.items() if k != "over_days"})

    @staticmethod
    def _valuesets(node: dict) -> list[str]:
        found = [node["valueset"]] if "valueset" in node else []
        for component in node.get("components", []):
            found.extend(component.get("valuesets", []))
        return found
