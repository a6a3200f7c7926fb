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
from dataclasses import dataclass, field
from pathlib import Path

from cds_service.engine.attestation import link_id
from cds_service.engine.narrative.needs import WORD, meets, pattern_needs, rarest, selectivity, text_needs
from cds_service.errors import CdsConfigError

NOTED = "noted:"
"""ClinicalItem.valuesets tag of a ``documented`` leaf answered by the narrative: ``NOTED + linkId``."""

CONTEXT_CATEGORIES = frozenset({"NEGATED_EXISTENCE", "POSSIBLE_EXISTENCE", "HYPOTHETICAL", "HISTORICAL", "FAMILY"})
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
    implies: tuple[str, ...] = ()   # concepts a mention of this one also is (foot drop: leg weakness)
    phrase_implies: dict[str, tuple[str, ...]] = field(default_factory=dict)  # one phrase's own ("spastic gait": spasticity)


@dataclass(frozen=True)
class Lexicon:
    concepts: dict[str, Concept]
    region_words: dict[str, str]    # lower-case word or phrase -> region
    anchors: frozenset[str]         # a sentence without any of these words mentions no concept
    digest: str                     # changes whenever the lexicon does: part of every cache key
    requirements: dict[str, list[tuple[frozenset[str], ...]]]   # anchor -> the words each of its rules needs
    sections: dict[str, list[str]]  # flag -> sectionizer categories ("family": ["family_history"])
    context_rules: list[dict]       # extra medspaCy ConTextRules (literal, category, direction...)
    section_titles: dict[str, list[str]] = field(default_factory=dict)   # category -> titles medspaCy lacks ("FHx:")
    spelling: dict = field(default_factory=dict)   # misspelled words read as meant: min_length, known (see .spelling)
    pattern_requirements: dict = field(default_factory=dict)   # anchor -> (required words, expressions) of token patterns
    pattern_anchors: frozenset[str] = frozenset()
    phrase_finder: object = None    # the phrases without spaces, one Aho-Corasick automaton (pyahocorasick)

    def may_mention(self, words: set[str]) -> bool:
        """Whether a sentence whose words (``WORD`` matches, lower case) are ``words`` can hold a
        match of any phrase or pattern: one of the anchors is there, and so is a word of every
        required token of a phrase or pattern it anchors.  Cheap, and never wrong the other way."""
        found = self.anchors.intersection(words)
        return any(all(not need.isdisjoint(words) for need in requirement)
                   for anchor in found for requirement in self.requirements[anchor])

    def may_match(self, words: set[str], text: str) -> bool:
        """Whether a sentence that passed :meth:`may_mention` (lower-case ``text``, ``words``)
        holds a phrase of the lexicon as it is written, or meets the words of a token pattern.

        Its words being there is not enough: "saddle" and "anesthesia" far apart match nothing,
        and most sentences the word check lets through held no match.  A phrase matches spaCy
        tokens whose texts follow each other, so with all spaces taken out of both, the phrase
        is a substring of the sentence wherever it matches (tokens split inside a word, "10mg",
        included): a superset again, never losing a match."""
        if next(self.phrase_finder.iter("".join(text.split())), None) is not None:
            return True
        return any(meets(needs, expressions, words, text) for anchor in self.pattern_anchors.intersection(words)
                   for needs, expressions in self.pattern_requirements[anchor])

    @property
    def words(self) -> frozenset[str]:
        """Every word a rule's pre-filter check may look for."""
        return frozenset(self.anchors).union(*(need for requirements in self.requirements.values()
                                               for requirement in requirements for need in requirement))

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
    for concept in concepts.values():
        unknown = [c for c in (*concept.implies, *(c for cs in concept.phrase_implies.values() for c in cs))
                   if c not in concepts or c == concept.id]
        if unknown:
            raise CdsConfigError(f"{path}: concept {concept.id!r} implies unknown concepts {unknown}")
    region_words = {w.lower(): region for region, words in data.get("region_words", {}).items() for w in words}
    if set(region_words.values()) - set(REGIONS):
        raise CdsConfigError(f"{path}: region_words may only name {', '.join(REGIONS)}")
    requirements = _requirements(concepts.values())
    anchors = frozenset(requirements)
    sections = data.get("sections", {})
    if set(sections) - {"family", "historical", "hypothetical"}:
        raise CdsConfigError(f"{path}: sections may only mean family, historical or hypothetical")
    for rule in data.get("context_rules", []):
        ends = rule.get("terminates") if isinstance(rule, dict) else None
        if ends is not None and not (isinstance(ends, list) and ends and set(ends) <= CONTEXT_CATEGORIES):
            raise CdsConfigError(f"{path}: context rule {rule.get('literal')!r}: terminates must list categories of "
                                 f"{', '.join(sorted(CONTEXT_CATEGORIES))}")
    titles = data.get("section_titles", {})
    if not isinstance(titles, dict) or not all(isinstance(k, str) and isinstance(v, list) and v and
                                               all(isinstance(t, str) and t.strip() for t in v) for k, v in titles.items()):
        raise CdsConfigError(f"{path}: section_titles must map a section category to a list of titles")
    gates = _pattern_gates(concepts.values())
    return Lexicon(concepts, region_words, anchors, hashlib.sha256(raw).hexdigest()[:16], requirements, sections,
                   list(data.get("context_rules", [])), titles, _spelling(path, data.get("spelling", {})),
                   gates, frozenset(gates), _phrase_finder(concepts.values()))


def _pattern_gates(concepts) -> dict[str, list[tuple[tuple[frozenset[str], ...], tuple[re.Pattern, ...]]]]:
    """Each token pattern's required words and expressions (:func:`text_needs`), filed under
    its anchors."""
    found: dict[str, list] = {}
    for concept in concepts:
        for pattern in concept.patterns:
            needs = pattern_needs(pattern)
            for anchor in rarest(needs):
                found.setdefault(anchor, []).append((tuple(n for n in needs if anchor not in n), text_needs(pattern)))
    return found


def _phrase_finder(concepts):
    """Every phrase, spaces taken out, in one automaton (:meth:`Lexicon.may_match`)."""
    import ahocorasick
    finder = ahocorasick.Automaton()
    for concept in concepts:
        for phrase in concept.phrases:
            if squeezed := "".join(phrase.split()):
                finder.add_word(squeezed, None)
    finder.make_automaton()
    return finder


def _spelling(path: Path, spelling) -> dict:
    """``{"min_length": 5, "keep": [words], "known_words": "file.json"}``: the shortest word
    corrected, words never corrected, and a file of more such words (a ``words`` list) beside
    the lexicon."""
    if not isinstance(spelling, dict) or set(spelling) - {"min_length", "keep", "known_words", "about"}:
        raise CdsConfigError(f"{path}: spelling may only hold min_length, keep, known_words and about")
    length, keep = spelling.get("min_length", 5), spelling.get("keep", [])
    if not isinstance(length, int) or length < 4 or not isinstance(keep, list) or not all(isinstance(w, str) for w in keep):
        raise CdsConfigError(f"{path}: spelling.min_length must be a whole number of at least 4 and keep a list of words")
    known = [w.lower() for w in keep]
    if spelling.get("known_words"):
        source = path.parent / spelling["known_words"]
        try:
            words = json.loads(source.read_text(encoding="utf-8"))["words"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CdsConfigError(f"{source}: cannot read the known words of the spelling rules ({exc}); "
                                 "rebuild it with scripts/build_known_words.py") from exc
        known.extend(w.lower() for w in words if isinstance(w, str))
    return {"min_length": length, "known": frozenset(known)}


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
        if not pattern_needs(pattern):
            raise CdsConfigError(f"{path}: concept {cid!r}: every token pattern needs a required token with LOWER or IN "
                                 "(the pre-filter looks for its words)")
    return Concept(cid, entry["label"], tags, documented, entry.get("region"),
                   tuple(p.lower() for p in entry.get("phrases", ())), patterns,
                   frozenset(w.lower() for w in entry.get("context_words", ())), tuple(entry.get("implies", ())),
                   _phrase_implies(path, cid, entry))


def _phrase_implies(path: Path, cid: str, entry: dict) -> dict[str, tuple[str, ...]]:
    """``phrase_implies``: a phrase of the concept that is also other concepts ("spastic gait" is
    spasticity too), keyed by its words so a match is found whatever its spacing or case."""
    raw = entry.get("phrase_implies", {})
    phrases = {" ".join(WORD.findall(p.lower())) for p in entry.get("phrases", ())}
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        raise CdsConfigError(f"{path}: concept {cid!r}: phrase_implies must map a phrase to a list of concepts")
    keyed = {" ".join(WORD.findall(phrase.lower())): tuple(concepts) for phrase, concepts in raw.items()}
    if missing := sorted(set(keyed) - phrases):
        raise CdsConfigError(f"{path}: concept {cid!r}: phrase_implies names phrases it does not list: {missing}")
    return keyed


def _requirements(concepts) -> dict[str, list[tuple[frozenset[str], ...]]]:
    """For each rule (phrase or pattern): the word sets a sentence must meet (one word of each),
    filed under the rule's anchors (its most selective word, or the words of its most selective
    required token)."""
    found: dict[str, list[tuple[frozenset[str], ...]]] = {}
    for concept in concepts:
        for phrase in concept.phrases:
            words = WORD.findall(phrase)
            if words:
                found.setdefault(max(words, key=selectivity), []).append(tuple(frozenset({w}) for w in words))
        for pattern in concept.patterns:
            needs = pattern_needs(pattern)
            for anchor in rarest(needs):
                found.setdefault(anchor, []).append(needs)
    return {anchor: _simplest(anchor, requirements) for anchor, requirements in found.items()}


def _simplest(anchor: str, requirements) -> list[tuple[frozenset[str], ...]]:
    """The requirements filed under ``anchor`` without the needs the anchor itself meets, each
    once, the fewest needs first: a one-word phrase then answers at once (most rules are such)."""
    kept = {tuple(need for need in requirement if anchor not in need) for requirement in requirements}
    return sorted(kept, key=len)
