"""The lexicon's phrases and token patterns, matched in a note as ``doc.ents``.

Phrases go through medspaCy's target matcher (a hash lookup per token).  Token patterns that
mix words with a regular expression or a wildcard cannot become phrases, and spaCy's token
Matcher checks every pattern's predicates on every token: so each pattern is tried only on the
sentences that hold what it needs (:class:`GatedPatterns`).
"""
from __future__ import annotations

from bisect import bisect_right

from cds_service.engine.narrative.needs import meets
from cds_service.engine.narrative.words import Words


LOWER_TEXT = "spine_cds_lower_text"
"""``Doc.user_data`` key of the document's text in lower case, when the caller has it
(``Doc.text`` joins every token's text again on each access)."""
WORDS = "spine_cds_words"
"""``Doc.user_data`` key of the document's word set: the target gates and ConText's gates read it."""


def doc_words(doc, words: Words) -> tuple[str, set[str]]:
    """The document's lower-case text and its word set (``words`` of it), worked out once per
    document and kept in its ``user_data`` for the next gate."""
    lower = doc.user_data.get(LOWER_TEXT) or doc.text.lower()
    found = doc.user_data.get(WORDS)
    if found is None:
        found = doc.user_data[WORDS] = words(lower)
    return lower, found


class Targets:
    """The lexicon's phrases (medspaCy's ``TargetMatcher``) and token patterns (:class:`GatedPatterns`)
    as ``doc.ents``, set once.

    Why not the target matcher as a pipe: it adds each match with ``doc.ents += (span,)``, which
    re-validates every entity so far (quadratic: a quarter of the matching time on 30 notes).
    Here it returns its spans (``result_type=None``) and they join the pattern matches in one
    assignment, the longest span winning an overlap as in medspaCy (its matches never overlap)."""

    def __init__(self, nlp, rules, words: Words):
        from medspacy.target_matcher import TargetMatcher
        self.phrases = TargetMatcher(nlp, result_type=None)
        self.phrases.add([rule for rule in rules if rule.pattern is None])
        self.patterns = GatedPatterns(nlp.vocab, [rule for rule in rules if rule.pattern is not None], words)

    def __call__(self, doc):
        from spacy.util import filter_spans
        doc.ents = filter_spans([*self.phrases(doc), *self.patterns.spans(doc)])
        return doc


class GatedPatterns:
    """The lexicon's token patterns, each tried only on sentences that hold a word of every one of
    its required tokens, and text matching each of its required regular expressions.

    spaCy's Matcher checks every pattern's predicates on every token, and a pattern mixing words
    with a regular expression or a wildcard cannot become phrases: on a 60 KB note that was most
    of the reading time.  The gates are necessary conditions (a pattern cannot match a sentence
    that lacks a word it requires, or any text its token expression matches), so gating never
    loses a match; on 30 notes they let through 25 calls that matched where words alone let 186."""

    def __init__(self, vocab, rules, words: Words):
        from spacy.matcher import Matcher
        from cds_service.engine.narrative.needs import pattern_needs, rarest, text_needs
        self.words = words
        self.entries = []
        self.anchors: list[frozenset[str]] = []
        self.by_word: dict[str, list[int]] = {}     # a word of each pattern's rarest required token
        for n, rule in enumerate(rules):
            matcher = Matcher(vocab)
            matcher.add(rule.category, [rule.pattern])
            needs = pattern_needs(rule.pattern)
            self.entries.append((needs, text_needs(rule.pattern), matcher))
            self.anchors.append(rarest(needs))
            for word in rarest(needs):
                self.by_word.setdefault(word, []).append(n)
        self.anchor_words = frozenset(self.by_word)     # a set: ``set.intersection(dict)`` walks the whole dict
        self.ungated = [n for n, (needs, _, _) in enumerate(self.entries) if not needs]
        self.piece = {joined: first for (first, _), joined in self.words.joins.items()}

    def spans(self, doc) -> list:
        """Matches of the patterns whose gates a sentence passes.  The note is checked first:
        only patterns it could match are tried, and only on the sentences holding (as text) a
        word of their rarest required token.  (Sentences are read as slices of the lower-cased
        text: ``Span.text`` visits every token.)"""
        lower, words = doc_words(doc, self.words)
        candidates = self._candidates(words, lower)
        if not candidates:
            return []
        sentences = list(doc.sents)
        found = []
        for index in self._holding(candidates, lower, sentences):
            sentence = sentences[index]
            text = lower[sentence.start_char:sentence.end_char]
            words = self.words(text)
            for n in self._candidates(words, text, candidates):
                found.extend(self.entries[n][2](sentence, as_spans=True))
        return found

    def _candidates(self, words: set[str], text: str, among=None) -> list[int]:
        """The patterns whose required words and expressions ``text`` (with ``words``) holds."""
        anchored = {n for word in words & self.anchor_words for n in self.by_word[word]}
        return [n for n in sorted(anchored.union(self.ungated)) if (among is None or n in among)
                and meets(self.entries[n][0], self.entries[n][1], words, text)]

    def _holding(self, candidates: list[int], lower: str, sentences) -> list[int]:
        """Indexes of the sentences that hold an anchor word of a candidate as text (a superset:
        ``str.find`` sees "can" in "cannot"; a word the gates see only joined, "can not" read as
        "cannot", is looked for by its first piece)."""
        if any(n in self.ungated for n in candidates):
            return list(range(len(sentences)))
        starts = [sentence.start_char for sentence in sentences]
        found: set[int] = set()
        for word in {self.piece.get(w, w) for n in candidates for w in self.anchors[n]}:
            at = lower.find(word)
            while at != -1:
                found.add(bisect_right(starts, at) - 1)
                at = lower.find(word, at + 1)
        return sorted(i for i in found if i >= 0)


class GatedContextPatterns:
    """Stands in for the token Matcher inside medspaCy's ConText: each ConText token pattern
    ("return to ED if", "per wife") is tried only on documents holding a word of each of its
    required tokens.  spaCy's Matcher checks every pattern on every token: with 13 such rules it
    was half of ConText's time on the 30 bench notes, matching in few of them.  Same matches,
    same keys (each rule's id), in the order the single Matcher gave them."""

    def __init__(self, vocab, rules, words: Words):
        from spacy.matcher import Matcher
        from cds_service.engine.narrative.needs import pattern_needs, text_needs
        self.words = words
        self.entries = []
        for rule in rules:
            matcher = Matcher(vocab)
            matcher.add(rule._rule_id, [rule.pattern], on_match=rule.on_match)
            self.entries.append((pattern_needs(rule.pattern), text_needs(rule.pattern), matcher))

    @classmethod
    def install(cls, context, words: Words) -> None:
        """Replace the token Matcher of ``context`` (medspaCy 1.3's ConText: a MedspacyMatcher
        holding spaCy's Matcher, PhraseMatcher and a regex matcher) with the gated patterns."""
        inner = context._ConText__matcher
        rules = [rule for rule in inner.rules if isinstance(rule.pattern, list)]
        inner._MedspacyMatcher__matcher = cls(context.nlp.vocab, rules, words)

    def __call__(self, doc) -> list[tuple[int, int, int]]:
        lower, words = doc_words(doc, self.words)
        found = []
        for needs, expressions, matcher in self.entries:
            if meets(needs, expressions, words, lower):
                found.extend(matcher(doc))
        return sorted(found, key=lambda match: (match[1], match[2]))
