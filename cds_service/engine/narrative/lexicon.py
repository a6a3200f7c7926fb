"""The narrative lexicon (``mappings/narrative.json``), loaded and checked.

Each concept names what a mention of it stands for — value sets (a ``finding`` leaf) and/or the
labels of ``documented`` leaves — and how it is written: literal phrases (matched on spaCy
tokens, case-insensitive) and spaCy token patterns.  The rules are data; this module only
turns them into medspaCy target rules and the pre-filter's anchor words.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from cds_service.engine.attestation import link_id
from cds_service.errors import CdsConfigError

NOTED = "noted:"
"""ClinicalItem.valuesets tag of a ``documented`` leaf answered by the narrative: ``NOTED + linkId``."""

WORD = re.compile(r"[a-z0-9]+")
REGIONS = ("cervical", "thoracic", "lumbar")


@dataclass(frozen=True)
class Concept:
    id: str
    label: str
    tags: frozenset[str]            # value sets, and NOTED + link id of each documented label
    documented: tuple[str, ...]
    region: str | None              # the region the concept itself names (sciatica: lumbar)
    phrases: tuple[str, ...]
    patterns: tuple[tuple[dict, ...], ...]
    context_words: frozenset[str]   # if set, the sentence must also contain one of these words


@dataclass(frozen=True)
class Lexicon:
    concepts: dict[str, Concept]
    region_words: dict[str, str]    # lower-case word or phrase -> region
    anchors: frozenset[str]         # a sentence without any of these words mentions no concept
    digest: str                     # changes whenever the lexicon does: part of every cache key
    sections: dict[str, list[str]]  # flag -> sectionizer categories ("family": ["family_history"])
    context_rules: list[dict]       # extra medspaCy ConTextRules (literal, category, direction...)

    def target_rules(self):
        """medspaCy TargetRules for every phrase and pattern (imported here: spaCy is heavy)."""
        from medspacy.target_matcher import TargetRule
        rules = []
        for concept in self.concepts.values():
            rules.extend(TargetRule(p, concept.id) for p in concept.phrases)
            rules.extend(TargetRule(concept.label, concept.id, pattern=list(p)) for p in concept.patterns)
        return rules


def load_lexicon(path: Path) -> Lexicon:
    """Read and check the lexicon; CdsConfigError names the concept and what is wrong."""
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise CdsConfigError(f"{path}: cannot read the narrative lexicon ({exc}); restore it from the repository") from exc
    concepts = {}
    for entry in data.get("concepts", []):
        concept = _concept(path, entry)
        if concept.id in concepts:
            raise CdsConfigError(f"{path}: concept {concept.id!r} is defined twice")
        concepts[concept.id] = concept
    region_words = {w.lower(): region for region, words in data.get("region_words", {}).items() for w in words}
    if set(region_words.values()) - set(REGIONS):
        raise CdsConfigError(f"{path}: region_words may only name {', '.join(REGIONS)}")
    anchors = frozenset(a for c in concepts.values() for a in _anchors(c))
    sections = data.get("sections", {})
    if set(sections) - {"family", "historical", "hypothetical"}:
        raise CdsConfigError(f"{path}: sections may only mean family, historical or hypothetical")
    return Lexicon(concepts, region_words, anchors, hashlib.sha256(raw).hexdigest()[:16], sections,
                   list(data.get("context_rules", [])))


def _concept(path: Path, entry: dict) -> Concept:
    cid = entry.get("id")
    if not isinstance(cid, str) or not entry.get("label") or not (entry.get("phrases") or entry.get("patterns")):
        raise CdsConfigError(f"{path}: concept {cid!r} needs an id, a label and phrases or patterns")
    if entry.get("region") not in (None, *REGIONS):
        raise CdsConfigError(f"{path}: concept {cid!r}: region must be one of {', '.join(REGIONS)}")
    documented = tuple(entry.get("documented", ()))
    tags = frozenset(entry.get("valuesets", ())) | {NOTED + link_id(label) for label in documented}
    if not tags:
        raise CdsConfigError(f"{path}: concept {cid!r} stands for nothing: give valuesets or documented labels")
    patterns = tuple(tuple(p) for p in entry.get("patterns", ()))
    for pattern in patterns:
        if not _pattern_anchor(pattern):
            raise CdsConfigError(f"{path}: concept {cid!r}: every token pattern needs a required token with LOWER or IN "
                                 "(the pre-filter looks for its words)")
    return Concept(cid, entry["label"], tags, documented, entry.get("region"),
                   tuple(p.lower() for p in entry.get("phrases", ())), patterns,
                   frozenset(w.lower() for w in entry.get("context_words", ())))


def _anchors(concept: Concept) -> set[str]:
    """Words of which every match of the concept contains at least one: the longest word of each
    phrase, and the values of the most selective required literal token of each pattern."""
    found = {max(WORD.findall(p), key=len) for p in concept.phrases if WORD.findall(p)}
    for pattern in concept.patterns:
        found.update(_pattern_anchor(pattern))
    return found


def _pattern_anchor(pattern: tuple[dict, ...]) -> set[str]:
    best: set[str] = set()
    for token in pattern:
        if token.get("OP") not in (None, "+", "!") or token.get("OP") == "!":
            continue
        spec = token.get("LOWER")
        values = [spec] if isinstance(spec, str) else spec.get("IN", []) if isinstance(spec, dict) else []
        words = {w for v in values for w in WORD.findall(v.lower())[:1]}
        if words and (not best or min(map(len, words)) > min(map(len, best))):
            best = words
    return best
