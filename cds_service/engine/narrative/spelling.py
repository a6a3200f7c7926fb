"""Misspelled words read as the lexicon word they were meant to be: "mornign stiffnes",
"decresed rectal tone", "deneis fever".

Clinicians type fast, and a misspelling is a word the matcher cannot see: listing every
misspelling of every phrase in the lexicon never ends (each new corpus brought new ones).  So
a word that is in no English dictionary (pyspellchecker's list of about 160,000 words) nor in
ICD-10-CM (``known_words``) nor the lexicon, but is one edit (a letter dropped, added, changed,
or two neighbours swapped) from a correctly spelled word the rules use, is read as that word.
Real words are never changed ("never" stays "never", though it is one letter from "fever"),
nor short ones (``spelling.min_length``: "drip" is not "drop"), nor a first letter (typists
rarely miss it, and medicine's prefixes live there: "apyrexia" is no fever, "Keflex" no
reflex).  Where two rule words are in reach, the likelier slip decides (a swap, then a letter
dropped or added, then one changed: "wrose" is "worse", not "wrote"); a tie is left alone.  A
corrected word feeds the negation rules too: "deneis fever" is negated, as it should be.
"""
from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from typing import Iterable

LETTERS = re.compile(r"[a-z]+")
MAX_LENGTH = 30             # a longer run of letters is not a word a clinician misspelled
MEMO_WORDS = 20_000         # distinct words whose correction is remembered (bounded: words ≤ 30 letters)


class Speller:
    """``corrections(words)``: {misspelled word: lexicon word} for the words of a sentence.

    ``vocabulary``: the words the rules use; ``known``: words that are never misspellings (the
    lexicon's ``spelling.keep`` and ``known_words``: ICD-10-CM's, which hold "peroneal")."""

    def __init__(self, vocabulary: Iterable[str], min_length: int = 5, known: Iterable[str] = ()):
        from spellchecker import SpellChecker
        self.min_length = min_length
        self._english = SpellChecker(distance=1)
        self._known = frozenset(known)
        words = {w for w in vocabulary if LETTERS.fullmatch(w) and len(w) >= min_length}
        self.vocabulary = frozenset(words)
        self.targets = self._spelled_right(words)
        self._rules = OneEdit(self.targets)
        self.correct = lru_cache(maxsize=MEMO_WORDS)(self._correct)
        from importlib.metadata import version
        known_hash = hashlib.sha256("\n".join(sorted(self._known)).encode()).hexdigest()[:12]
        self.version = f"pyspellchecker {version('pyspellchecker')}, known {known_hash}, min {min_length}"
        """What decides the corrections besides the lexicon: part of the mention cache key."""

    def _spelled_right(self, words: set[str]) -> frozenset[str]:
        """The rule words a misspelling may be read as: not the lexicon's own listed misspellings
        ("mylopathy" beside "myelopathy": "myopathy" must not become myelopathy through it).  A
        rule word that is no known word but one edit from a known rule word is such a misspelling."""
        real = {w for w in words if self._is_word(w)}
        near_real = OneEdit(real)
        return frozenset(w for w in words if w in real or not near_real.near(w))

    def _is_word(self, word: str) -> bool:
        return word in self._known or word in self._english

    def corrections(self, words: Iterable[str]) -> dict[str, str]:
        found = {}
        for word in words:
            if len(word) >= self.min_length and (meant := self.correct(word)):
                found[word] = meant
        return found

    def _correct(self, word: str) -> str | None:
        """The one rule word ``word`` is an edit from, when ``word`` is no word itself."""
        if len(word) > MAX_LENGTH or not LETTERS.fullmatch(word) or word in self.vocabulary or self._is_word(word):
            return None
        candidates = [c for c in self._rules.near(word) if c[0] == word[0]]
        if not candidates:
            return None
        best = min(map(edit_kind, [word] * len(candidates), candidates))
        likeliest = [c for c in candidates if edit_kind(word, c) == best]
        return likeliest[0] if len(likeliest) == 1 else None


class OneEdit:
    """The words one edit from a query (a letter dropped, added or changed, or two neighbours
    swapped), found through an index of each word's one-letter deletions (SymSpell's symmetric
    deletes): a query costs a lookup per letter, where generating every string one edit away
    (pyspellchecker's way) cost half a millisecond a word — a note of made-up words could have
    taken seconds."""

    def __init__(self, words: Iterable[str]):
        self.words = frozenset(words)
        self.by_deletion: dict[str, set[str]] = {}
        for word in self.words:
            for shorter in _deletions(word):
                self.by_deletion.setdefault(shorter, set()).add(word)

    def near(self, word: str) -> set[str]:
        found = set(self.by_deletion.get(word, ()))          # a letter dropped from the word
        for shorter in _deletions(word):
            if shorter in self.words:                         # a letter added
                found.add(shorter)
            found.update(self.by_deletion.get(shorter, ()))    # changed or swapped: a deletion shared
        return {other for other in found if one_edit(word, other)}


def _deletions(word: str) -> set[str]:
    return {word[:i] + word[i + 1:] for i in range(len(word))}


def edit_kind(a: str, b: str) -> int:
    """How likely a typist's slip the one edit from ``a`` to ``b`` is: two neighbours swapped (0:
    "wrose" is "worse" before it is "wrote"), then a letter dropped or doubled (1), then a letter
    changed (2)."""
    if len(a) != len(b):
        return 1
    return 0 if sorted(a) == sorted(b) else 2


def one_edit(a: str, b: str) -> bool:
    """Whether ``b`` is ``a`` with one letter dropped, added or changed, or two neighbours swapped."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    i = 0
    while i < min(len(a), len(b)) and a[i] == b[i]:
        i += 1
    if len(a) > len(b):
        return a[i + 1:] == b[i:]
    if len(a) < len(b):
        return a[i:] == b[i + 1:]
    return a[i + 1:] == b[i + 1:] or (i + 1 < len(a) and a[i] == b[i + 1] and a[i + 1] == b[i] and a[i + 2:] == b[i + 2:])


def recased(meant: str, written: str) -> str:
    """``meant`` in the case ``written`` was in ("Mornign" -> "Morning", "DORP" -> "DROP")."""
    if written.isupper() and len(written) > 1:
        return meant.upper()
    return meant.capitalize() if written[:1].isupper() else meant
