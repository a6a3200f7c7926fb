"""medspaCy on a blank spaCy pipeline: which lexicon concepts a text mentions, and how.

The pipeline is rule-based and offline (no model download at install or run time):
``sentencizer`` (spaCy's rule-based splitter, about 7 times faster here than medspaCy's default
PyRuSH) with a line break always ending a sentence; medspaCy's target matcher for the lexicon's
phrases and :class:`GatedPatterns` for its token patterns (:class:`Targets`); ``context``
(negated, possible, hypothetical, historical and family modifiers: medspaCy's default rules plus
``context_rules`` of the lexicon); and medspaCy's section rules (:mod:`.sections`: a mention
under "Family history:" is about a relative; ``sections`` of the lexicon say which sections
mean what).

Built once per process and worker (about half a second), at start-up.
"""
from __future__ import annotations

import logging
import warnings
from bisect import bisect_right
from dataclasses import dataclass

from cds_service.engine.narrative.lexicon import Lexicon
from cds_service.engine.narrative.needs import WORD, token_words
from cds_service.engine.narrative.sections import Sections
from cds_service.engine.narrative.targets import LOWER_TEXT, GatedContextPatterns, Targets
from cds_service.engine.narrative.sentences import ABBREVIATIONS, Shortened
from cds_service.engine.narrative.spelling import Speller
from cds_service.engine.narrative.words import Words

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
        self.nlp, self.words, self.speller = _build(lexicon)
        self.sections = Sections(self.nlp, lexicon.sections, lexicon.section_titles)
        self.is_section = self.sections.may_be_title

    def mentions(self, shortened: Shortened) -> list[Mention]:
        """Every mention in ``shortened``, in original-text offsets."""
        doc = self.nlp.make_doc(shortened.text)
        doc.user_data[LOWER_TEXT] = shortened.text.lower()
        for _name, component in self.nlp.pipeline:
            doc = component(doc)
        if not doc.ents:
            return []
        section_flags = self.sections.flagger(doc)
        sentences = list(doc.sents)      # once: ``Span.sent`` walks the tokens back to the start
        starts = [sentence.start for sentence in sentences]
        found = []
        for ent in doc.ents:
            sentence = sentences[bisect_right(starts, ent.start) - 1]
            flags = {"negated": ent._.is_negated, "family": ent._.is_family, "historical": ent._.is_historical,
                     "hypothetical": ent._.is_hypothetical, "uncertain": ent._.is_uncertain}
            for flag in section_flags(ent.start):
                flags[flag] = True
            found.append(Mention(ent.label_, shortened.original(ent.start_char), shortened.original(ent.end_char - 1) + 1,
                                 shortened.original(sentence.start_char), shortened.original(sentence.end_char - 1) + 1,
                                 **flags))
        return found


def _build(lexicon: Lexicon) -> tuple:
    """The spaCy pipeline, and the word reader its tokenizer implies (for the pre-filter and the
    pattern gates alike)."""
    _quiet()
    import spacy
    from spacy.attrs import ORTH
    from spacy.language import Language
    from medspacy.context import ConTextRule

    if "spine_cds_line_breaks" not in Language.factories:
        Language.component("spine_cds_line_breaks", func=_line_breaks)
    from medspacy.target_matcher import TargetRule

    nlp = spacy.blank("en")
    for abbreviation in ABBREVIATIONS:       # one token, so the sentencizer does not end a sentence there
        for form in {abbreviation, abbreviation.capitalize(), abbreviation.upper()}:
            nlp.tokenizer.add_special_case(form, [{ORTH: form}])
    words = Words.of_tokenizer(nlp.tokenizer, lexicon.words)
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("spine_cds_line_breaks")
    targets = [variant for rule in lexicon.target_rules() for variant in literal_variants(rule, TargetRule)]
    name = f"spine_cds_targets_{lexicon.digest}"
    if name not in Language.factories:
        Language.component(name, func=Targets(nlp, targets, words))
    nlp.add_pipe(name)
    context = nlp.add_pipe("medspacy_context", config={"rules": None})
    defaults = ConTextRule.from_json(_default_context_rules())
    rules = spelled_out(defaults, selective_terminators(defaults, lexicon.context_rules, ConTextRule), ConTextRule)
    context.add(rules)
    GatedContextPatterns.install(context, words)
    return nlp, words, Speller(_rule_words(targets, rules, lexicon), **lexicon.spelling)


def _rule_words(targets, context_rules, lexicon: Lexicon) -> set[str]:
    """Every word a target, ConText or section rule names: what a misspelling may have meant."""
    found = set(lexicon.words)
    for rule in (*targets, *context_rules):
        if rule.pattern is None:
            found.update(WORD.findall(rule.literal.lower()))
        elif isinstance(rule.pattern, list):
            found.update(w for token in rule.pattern if isinstance(token, dict) for w in token_words(token))
    found.update(w for titles in lexicon.section_titles.values() for t in titles for w in WORD.findall(t.lower()))
    return found


def selective_terminators(defaults, raw_rules: list[dict], kind) -> list:
    """The lexicon's ConText rules; one with ``terminates`` (a list of categories) ends the scope
    of those categories only.

    medspaCy's TERMINATE ends every scope: "reports" rightly ends the negation in "denies fever,
    reports chills", but also the family scope in "Mother reported to have osteoporosis".  So such
    a rule becomes a PSEUDO rule (it modifies nothing) of its own category, which every default
    and lexicon rule of the listed categories names in ``terminated_by``."""
    rules, selective = [], {}
    for raw in raw_rules:
        raw = dict(raw)
        if terminates := raw.pop("terminates", None):
            name = "ENDS_" + "_".join(sorted(terminates))
            raw.update(category=name, direction="PSEUDO")
            selective[name] = set(terminates)
        rules.append(kind(**raw))
    for rule in (*defaults, *rules):
        ended_by = {name for name, categories in selective.items() if rule.category.upper() in categories}
        if ended_by:
            rule.terminated_by = set(rule.terminated_by) | ended_by
    return rules


MAX_VARIANTS = 500          # a target pattern spelled out as at most this many phrases
MAX_CONTEXT_VARIANTS = 2000   # a ConText pattern: its token-matcher cost is paid on every token


def literal_variants(rule, kind, limit: int = MAX_VARIANTS) -> list:
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
        phrases = _product(([[w] if w else [] for w in words] for words in choices), limit)
        if phrases is not None:
            return [kind(**{**fields, "literal": " ".join(p), "pattern": None}) for p in dict.fromkeys(map(tuple, phrases)) if p]
    return [rule]   # words mixed with other tests (REGEX, wildcards): spelled out as LOWER variants, it measured slower


def spelled_out(defaults, ours, kind) -> list:
    """medspaCy's default rules and the lexicon's, each word-only pattern spelled out as phrases
    (:func:`literal_variants`); where a phrase of ours is also a default phrase, ours alone.

    Two rules with the same words match the same span, and medspaCy keeps only one of them: which
    one depended on the order the matchers listed them (a token pattern before a phrase).  The
    lexicon is where this service says what words mean, so its rule decides."""
    ours = [variant for rule in ours for variant in literal_variants(rule, kind, MAX_CONTEXT_VARIANTS)]
    taken = {variant.literal.lower() for variant in ours if variant.pattern is None}
    defaults = [variant for rule in defaults for variant in literal_variants(rule, kind, MAX_CONTEXT_VARIANTS)]
    return [*(v for v in defaults if v.pattern is not None or v.literal.lower() not in taken), *ours]


def _product(options, limit: int) -> list[list] | None:
    """Every concatenation of one option per position; None when there would be too many."""
    found: list[list] = [[]]
    for choice in options:
        choice = list(choice)
        found = [f + c for f in found for c in choice]
        if len(found) > limit:
            return None
    return found


def _words(token: dict) -> list[str] | None:
    """The words one pattern token matches, lower case ("" when optional); None when it tests
    anything else.  ``TEXT`` counts for a string without letters (":", "("), whose lower case is
    itself, and ``IS_SPACE: false`` adds nothing to a test of words."""
    if not isinstance(token, dict) or token.get("OP") not in (None, "?"):
        return None
    spec = {k: v for k, v in token.items() if k != "OP" and not (k == "IS_SPACE" and v is False)}
    if set(spec) == {"TEXT"} and _caseless(spec["TEXT"]):
        spec = {"LOWER": spec["TEXT"]}
    if set(spec) != {"LOWER"}:
        return None
    spec = spec["LOWER"]
    words = [spec] if isinstance(spec, str) else spec.get("IN") if isinstance(spec, dict) and set(spec) == {"IN"} else None
    if not words or not all(isinstance(w, str) for w in words):
        return None
    return [w.lower() for w in words] + ([""] if token.get("OP") == "?" else [])


def _caseless(value) -> bool:
    """A TEXT test that lower case cannot change: a string, or an IN list of strings, without letters."""
    values = value.get("IN") if isinstance(value, dict) and set(value) == {"IN"} else [value]
    return isinstance(values, list) and all(isinstance(v, str) and v.lower() == v.upper() for v in values)


_FIELDS = {"TargetRule": ("literal", "category", "attributes", "metadata"),
           "ConTextRule": ("literal", "category", "direction", "on_modifies", "allowed_types", "excluded_types",
                           "max_scope", "max_targets", "terminated_by", "metadata")}


def _default_context_rules() -> str:
    """medspaCy's packaged English ConText rules (years of use at the US VA)."""
    from pathlib import Path
    import medspacy
    return str(Path(medspacy.__file__).resolve().parents[1] / "resources" / "en" / "context_rules.json")


def _line_breaks(doc):
    """A line break always ends a sentence: the pre-filter puts one piece per line, and a
    negation must never reach from one piece into the next.  A question mark that opens a phrase
    ("? cauda equina", "pt w/ ? CES": after a space, a punctuation mark or a line start) marks
    doubt about what follows: it does not end a sentence.

    The starts are read and written as one array (``Doc.to_array`` / ``from_array``): setting
    ``Token.is_sent_start`` one token at a time re-checks the whole document each time."""
    if len(doc) < 2:
        return doc
    from spacy.attrs import IS_SPACE, ORTH, SENT_START
    spaces, orths, starts = doc.to_array([IS_SPACE, ORTH, SENT_START]).T
    starts = starts.astype("int64")      # 1 start, -1 not a start, 0 unset (read as uint64)
    for i in spaces.nonzero()[0]:
        if i + 1 < len(doc) and "\n" in doc[int(i)].text:
            starts[i + 1] = 1
    for i in (orths == doc.vocab.strings["?"]).nonzero()[0]:
        before = doc[int(i) - 1] if i else None       # "w/ ?": a space before the mark, kept on the word
        if i + 1 < len(doc) and (before is None or starts[i] == 1 or spaces[i - 1] or before.is_punct
                                 or before.whitespace_):
            starts[i + 1] = -1
    starts[0] = 1
    doc.from_array([SENT_START], starts.view("uint64").reshape(-1, 1))
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
    # medspaCy's section and ConText matchers keep a token matcher beside their phrase matcher,
    # empty when all their rules are phrases; spaCy would warn about it on every note.
    warnings.filterwarnings("ignore", message=r"\[W036\]", category=UserWarning)
