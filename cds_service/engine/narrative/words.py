"""The words of a sentence as the gates see them: every word spaCy's tokens could give.

The pre-filter and the pattern gates compare a sentence's words (``WORD`` runs of letters and
digits) with the words the lexicon's phrases and patterns need.  spaCy cuts some runs
differently: "cannot" is the tokens "can" "not", "couldn't" is "could" "n't", "10mg" is "10"
"mg".  A rule needing "can" + "not" then never ran on "cannot" — the gate said no to a sentence
the matcher would have matched.  So a sentence's words here are its runs, plus the pieces spaCy's
tokenizer exceptions cut them into, plus letter/digit parts, plus the joined form of two runs
an exception joins ("can not" also holds "cannot"): a superset, so a gate may let a sentence
through in vain but never keeps a match out.
"""
from __future__ import annotations

import re

from cds_service.engine.narrative.needs import WORD

PARTS = re.compile(r"[a-z]+|[0-9]+")
MIXED = re.compile(r"[a-z][0-9]|[0-9][a-z]")


class Words:
    """``words(text)``: the word set of a lower-case text (see the module docstring)."""

    def __init__(self, splits: dict[str, frozenset[str]] | None = None,
                 joins: dict[tuple[str, str], str] | None = None):
        self.splits, self.joins = splits or {}, joins or {}
        self._firsts = frozenset(first for first, _ in self.joins)
        self._split = frozenset(self.splits)

    @classmethod
    def of_tokenizer(cls, tokenizer, wanted: frozenset[str] | None = None) -> Words:
        """From the tokenizer's exceptions ("cannot" -> "can", "not"); joins only into ``wanted``
        words (the lexicon's: "can not" matters where a rule needs "cannot", "i m" nowhere)."""
        from spacy.attrs import ORTH
        splits: dict[str, set[str]] = {}
        joins: dict[tuple[str, str], str] = {}
        for text, pieces in tokenizer.rules.items():
            whole = WORD.findall(text.lower())
            cut = WORD.findall(" ".join(str(piece.get(ORTH, "")) for piece in pieces).lower())
            if not whole or cut == whole:
                continue
            for word in whole:     # "couldn" (of "couldn't") -> "could", "n": the pieces inside it
                splits.setdefault(word, set()).update(w for w in cut if w != word and w in word)
            if len(whole) == 1 and len(cut) == 2 and (wanted is None or whole[0] in wanted):
                joins[(cut[0], cut[1])] = whole[0]
        return cls({w: frozenset(s) for w, s in splits.items() if s}, joins)

    def __call__(self, text: str) -> set[str]:
        runs = WORD.findall(text)
        found = set(runs)
        for run in found & self._split:
            found |= self.splits[run]
        if MIXED.search(text):
            found.update(PARTS.findall(text))
        if not self._firsts.isdisjoint(found):
            found.update(joined for pair in zip(runs, runs[1:]) if (joined := self.joins.get(pair)))
        return found

