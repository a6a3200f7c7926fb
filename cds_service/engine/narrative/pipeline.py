"""medspaCy on a blank spaCy pipeline: which lexicon concepts a text mentions, and how.

The pipeline is rule-based and offline (no model download at install or run time):
``sentencizer`` (spaCy's rule-based splitter, about 7 times faster here than medspaCy's default
PyRuSH) with a line break always ending a sentence, medspaCy's ``target_matcher`` (the lexicon),
``context`` (negated, possible, hypothetical, historical and family modifiers: medspaCy's
default rules plus ``context_rules`` of the lexicon) and ``sectionizer`` (a mention under
"Family history:" is about a relative; ``sections`` of the lexicon say which sections mean what).

Built once per process and worker (about half a second), at start-up.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

from cds_service.engine.narrative.lexicon import WORD, Lexicon
from cds_service.engine.narrative.sentences import Shortened

FLAGS = ("negated", "family", "historical", "hypothetical", "uncertain")


@dataclass(frozen=True)
class Mention:
    """One mention of a concept, with offsets in the original text (cached as a plain list)."""

    concept: str
    start: int
    end: int
    sentence_start: int
    sentence_end: int
    negated: bool = False
    family: bool = False
    historical: bool = False
    hypothetical: bool = False
    uncertain: bool = False

    @property
    def counts(self) -> bool:
        """Asserted about the patient: not negated, not about a relative, not conditional or
        doubtful.  (Historical mentions count, but not where the leaf asks for something new.)"""
        return not (self.negated or self.family or self.hypothetical or self.uncertain)

    def to_list(self) -> list:
        return [self.concept, self.start, self.end, self.sentence_start, self.sentence_end,
                *(int(getattr(self, f)) for f in FLAGS)]

    @classmethod
    def from_list(cls, values: list) -> Mention:
        concept, start, end, s_start, s_end, *flags = values
        return cls(concept, start, end, s_start, s_end, *(bool(f) for f in flags))


class Pipeline:
    """The spaCy pipeline for one lexicon."""

    def __init__(self, lexicon: Lexicon):
        self.lexicon = lexicon
        self.section_flags = {category: flag for flag, categories in lexicon.sections.items() for category in categories}
        self.nlp = _build(lexicon)

    def mentions(self, shortened: Shortened) -> list[Mention]:
        """Every mention in ``shortened``, in original-text offsets."""
        doc = self.nlp(shortened.text)
        found = []
        for ent in doc.ents:
            sentence = ent.sent
            flags = {"negated": ent._.is_negated, "family": ent._.is_family, "historical": ent._.is_historical,
                     "hypothetical": ent._.is_hypothetical, "uncertain": ent._.is_uncertain}
            section_flag = self.section_flags.get(ent._.section_category)
            if section_flag:
                flags[section_flag] = True
            found.append(Mention(ent.label_, shortened.original(ent.start_char), shortened.original(ent.end_char - 1) + 1,
                                 shortened.original(sentence.start_char), shortened.original(sentence.end_char - 1) + 1,
                                 **flags))
        return found


def _build(lexicon: Lexicon):
    _quiet()
    import spacy
    from spacy.language import Language
    from medspacy.context import ConTextRule

    if "spine_cds_line_breaks" not in Language.factories:
        Language.component("spine_cds_line_breaks", func=_line_breaks)
    from medspacy.target_matcher import TargetRule

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("spine_cds_line_breaks")
    targets = [variant for rule in lexicon.target_rules() for variant in literal_variants(rule, TargetRule)]
    nlp.add_pipe("medspacy_target_matcher").add([rule for rule in targets if rule.pattern is None])
    gated = f"spine_cds_patterns_{lexicon.digest}"
    if gated not in Language.factories:
        Language.component(gated, func=GatedPatterns(nlp.vocab, [rule for rule in targets if rule.pattern is not None]))
    nlp.add_pipe(gated)
    context = nlp.add_pipe("medspacy_context", config={"rules": None})
    rules = [*ConTextRule.from_json(_default_context_rules()), *(ConTextRule(**rule) for rule in lexicon.context_rules)]
    context.add([variant for rule in rules for variant in literal_variants(rule, ConTextRule)])
    nlp.add_pipe("medspacy_sectionizer")
    return nlp


MAX_VARIANTS = 500


def literal_variants(rule, kind) -> list:
    """``rule`` as literal rules, one per phrase its token pattern can match, when the pattern
    is only words (``LOWER`` / ``IN``, optionally ``OP: "?"``); else ``rule`` itself.

    Why: spaCy's token Matcher re-checks every predicate on every token (with medspaCy's default
    ConText rules and ours it took 90 % of the time on a 60 KB note), while literal rules go
    through the PhraseMatcher, a hash lookup.  The phrases are exactly what the pattern matches."""
    pattern = rule.pattern
    if not isinstance(pattern, list) or not pattern:
        return [rule]
    fields = {k: v for k, v in rule.__dict__.items() if k in _FIELDS[kind.__name__] and v is not None}
    choices = [_words(token) for token in pattern]
    if all(words is not None for words in choices):
        phrases = _product([[w] if w else [] for w in words] for words in choices)
        if phrases is not None:
            return [kind(**{**fields, "literal": " ".join(p), "pattern": None}) for p in dict.fromkeys(map(tuple, phrases)) if p]
    return [rule]   # words mixed with other tests (REGEX, wildcards): spelled out as LOWER variants, it measured slower


def _product(options) -> list[list] | None:
    """Every concatenation of one option per position; None when there would be too many."""
    found: list[list] = [[]]
    for choice in options:
        choice = list(choice)
        found = [f + c for f in found for c in choice]
        if len(found) > MAX_VARIANTS:
            return None
    return found


def _words(token: dict) -> list[str] | None:
    if not isinstance(token, dict) or set(token) - {"LOWER", "OP"} or token.get("OP") not in (None, "?"):
        return None
    spec = token.get("LOWER")
    words = [spec] if isinstance(spec, str) else spec.get("IN") if isinstance(spec, dict) and set(spec) == {"IN"} else None
    if not words or not all(isinstance(w, str) for w in words):
        return None
    return [w.lower() for w in words] + ([""] if token.get("OP") == "?" else [])


_FIELDS = {"TargetRule": ("literal", "category", "attributes", "metadata"),
           "ConTextRule": ("literal", "category", "direction", "on_modifies", "allowed_types", "excluded_types",
                           "max_scope", "max_targets", "terminated_by", "metadata")}


def _default_context_rules() -> str:
    """medspaCy's packaged English ConText rules (years of use at the US VA)."""
    from pathlib import Path
    import medspacy
    return str(Path(medspacy.__file__).resolve().parents[1] / "resources" / "en" / "context_rules.json")


class GatedPatterns:
    """The lexicon's token patterns, each tried only on sentences that hold a word of every one of
    its required tokens.

    spaCy's Matcher checks every pattern's predicates on every token, and a pattern mixing words
    with a regular expression or a wildcard cannot become phrases: on a 60 KB note that was most
    of the reading time.  Gating by words is exact (a pattern cannot match a sentence that lacks a
    word it requires); matches join the phrase matches, the longest span winning an overlap as in
    medspaCy's target matcher."""

    def __init__(self, vocab, rules):
        from spacy.matcher import Matcher
        from cds_service.engine.narrative.lexicon import pattern_needs, rarest
        self.entries = []
        self.by_word: dict[str, list[int]] = {}     # a word of each pattern's rarest required token
        for n, rule in enumerate(rules):
            matcher = Matcher(vocab)
            matcher.add(rule.category, [rule.pattern])
            needs = pattern_needs(rule.pattern)
            self.entries.append((needs, matcher))
            for word in rarest(needs):
                self.by_word.setdefault(word, []).append(n)
        self.ungated = [n for n, (needs, _) in enumerate(self.entries) if not needs]

    def __call__(self, doc):
        from spacy.util import filter_spans
        found = []
        for sentence in doc.sents:
            words = set(WORD.findall(sentence.text.lower()))
            candidates = {n for word in words.intersection(self.by_word) for n in self.by_word[word]}
            for n in sorted(candidates.union(self.ungated)):
                needs, matcher = self.entries[n]
                if all(not need.isdisjoint(words) for need in needs):
                    found.extend(matcher(sentence, as_spans=True))
        if found:
            doc.ents = filter_spans([*doc.ents, *found])
        return doc


def _line_breaks(doc):
    """A line break always ends a sentence: the pre-filter puts one piece per line, and a
    negation must never reach from one piece into the next.  A question mark that opens a phrase
    ("? cauda equina") marks doubt about what follows: it does not end a sentence."""
    for token in doc[1:]:
        before = doc[token.i - 1]
        if "\n" in before.text:
            token.is_sent_start = True
        elif before.text == "?" and (before.i == 0 or before.is_sent_start or doc[before.i - 1].is_space
                                     or doc[before.i - 1].is_punct):
            token.is_sent_start = False
    return doc


def _quiet() -> None:
    """PyRuSH (imported by medspaCy) logs every token through loguru at DEBUG unless silenced:
    a 25,000-word text took 44 s with it on.  And note text must never reach a log."""
    try:
        from loguru import logger
        logger.disable("PyRuSH")
        logger.disable("medspacy")
    except ImportError:  # pragma: no cover - loguru comes with medspaCy
        pass
    logging.getLogger("medspacy").setLevel(logging.WARNING)
    # medspaCy's sectionizer keeps an empty token matcher beside its phrase matcher (all its
    # default rules are literals); spaCy would warn about it on every note.
    warnings.filterwarnings("ignore", message=r"\[W036\]", category=UserWarning)
