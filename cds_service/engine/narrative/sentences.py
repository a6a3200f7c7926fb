"""The pre-filter: only sentences that contain a lexicon word go through the NLP pipeline.

A 60 KB note holds a few dozen sentences that matter among hundreds that do not, and spaCy's
pipeline reads about 10,000 words a second here.  So a note is cut into sentences with one
regular expression, each sentence's words are checked against what the lexicon's rules need
(``Lexicon.may_mention``: an anchor word, then a word of every required token — set lookups),
and the pipeline reads a shortened text: the hit sentences, each on its own line, with
the section headers above them ("FAMILY HISTORY:") so the sectionizer still knows where each
sentence sits.  Offsets map back to the original text, so a quote and its ``#char=`` range are
the note's own.
"""
from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from typing import Callable

from cds_service.engine.narrative.needs import WORD
from cds_service.engine.narrative.spelling import Speller, recased

ABBREVIATIONS = ("e.g.", "i.e.", "vs.", "incl.", "approx.", "esp.", "cf.")
"""Abbreviations that end in a period inside a sentence: "return if new sx, e.g. incontinence"."""
BOUNDARY = re.compile(r"(?<=[.!])" + "".join(rf"(?<!\b(?i:{re.escape(a)}))" for a in ABBREVIATIONS)
                      + r"\s+|(?<=\w\?)\s+|\n(?![ \t]*[a-z])")
"""A sentence ends at . ! (not an abbreviation's period) or a question mark after a word
("worse?") followed by space, and at a line break unless the next line carries on in lower case
(a wrapped line).  A question mark before a word ("? cauda equina") is a clinician's doubt about
what follows, not an ending."""
HEADER = re.compile(r"\s*([A-Za-z][A-Za-z0-9 /&(),'-]{1,48}:)")
"""A section header at the start of a line or sentence: "PMH:", "Assessment/Plan:"."""
BARE_HEADER = re.compile(r"\s*[A-Z][A-Za-z /&-]{2,40}\s*$")
"""A line that is only a title ("FAMILY HISTORY", "Plan")."""


@dataclass(frozen=True)
class Shortened:
    """The text the pipeline reads, and where each of its pieces came from."""

    text: str
    starts: tuple[int, ...]         # start of each piece in ``text``
    origins: tuple[int, ...]        # start of the same piece in the original text
    lasts: tuple[int | None, ...] = ()   # a corrected word's piece: its last original offset

    def original(self, offset: int) -> int:
        """The original offset of ``offset`` in the shortened text.  A corrected word ("confused"
        for "confussed") is one token: its first character stands for the original word's first,
        any other for the original's last (where a match that ends with the word ends)."""
        piece = bisect_right(self.starts, offset) - 1
        last = self.lasts[piece] if self.lasts else None
        if last is not None and offset > self.starts[piece]:
            return last
        return self.origins[piece] + offset - self.starts[piece]


def spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence, whitespace trimmed."""
    found, start = [], 0
    for match in BOUNDARY.finditer(text):
        found.append((start, match.start()))
        start = match.end()
    found.append((start, len(text)))
    return [(s, e) for s, e in found if text[s:e].strip()]


def shorten(text: str, lexicon, is_section: Callable[[str], bool] = lambda header: True,
            words: Callable[[str], set[str]] = lambda text: set(WORD.findall(text)),
            speller: Speller | None = None) -> Shortened | None:
    """The sentences the lexicon may match and the headers before them; None when there is none.

    ``is_section`` says whether a header may name a section the sectionizer knows (it must
    never say no to one): other headers ("Vital signs reviewed:") are left out.  ``words`` gives
    a sentence's word set (:class:`.words.Words`: also the pieces spaCy cuts words into).  A
    ``speller`` reads misspelled words as the lexicon words they were meant to be (:mod:`.spelling`)."""
    pieces: list[tuple[int, int, dict[str, str]]] = []
    hit = False
    lower = text.lower()
    misspelled = speller.corrections(set(WORD.findall(lower))) if speller is not None else {}   # most notes: none
    for start, end in spans(text):
        found = words(lower[start:end])
        fixes = {w: misspelled[w] for w in found.intersection(misspelled)} if misspelled else {}
        if fixes:
            found = found.union(fixes.values())
        if lexicon.may_mention(found) and lexicon.may_match(found, _spelled(lower[start:end], fixes)):
            pieces.append((start, end, fixes))
            hit = True
        elif (header := HEADER.match(text, start, end)) is not None:
            if is_section(lower[header.start(1):header.end(1)]):
                pieces.append((header.start(1), header.end(1), {}))
        elif BARE_HEADER.match(text, start, end) and is_section(lower[start:end]):
            pieces.append((start, end, {}))
    if not hit:
        return None
    return _joined(text, lower, pieces)


def _spelled(sentence: str, fixes: dict[str, str]) -> str:
    """The lower-case ``sentence`` with its misspelled words as meant."""
    if not fixes:
        return sentence
    return WORD.sub(lambda m: fixes.get(m.group(), m.group()), sentence)


def _joined(text: str, lower: str, pieces: list[tuple[int, int, dict[str, str]]]) -> Shortened:
    """The pieces one per line; a misspelled word is a piece of its own, spelled as meant."""
    parts, starts, origins, lasts, at = [], [], [], [], 0
    for start, end, fixes in pieces:
        cuts = [(m.start(), m.end()) for m in WORD.finditer(lower, start, end) if m.group() in fixes] if fixes else []
        for (left, right), word in zip(_around(start, end, cuts), [*cuts, None]):
            if right > left:
                parts.append(text[left:right]), starts.append(at), origins.append(left), lasts.append(None)
                at += right - left
            if word is not None:
                meant = recased(fixes[lower[word[0]:word[1]]], text[word[0]:word[1]])
                parts.append(meant), starts.append(at), origins.append(word[0]), lasts.append(word[1] - 1)
                at += len(meant)
        parts.append("\n")
        at += 1
    return Shortened("".join(parts[:-1]), tuple(starts), tuple(origins), tuple(lasts))


def _around(start: int, end: int, cuts: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The stretches of [start, end) before each cut and after the last."""
    edges = [start, *(x for cut in cuts for x in cut), end]
    return [(edges[i], edges[i + 1]) for i in range(0, len(edges), 2)]
