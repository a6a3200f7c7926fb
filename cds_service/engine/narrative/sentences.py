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

from cds_service.engine.narrative.lexicon import WORD

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

    def original(self, offset: int) -> int:
        """The original offset of ``offset`` in the shortened text."""
        piece = bisect_right(self.starts, offset) - 1
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
            words: Callable[[str], set[str]] = lambda text: set(WORD.findall(text))) -> Shortened | None:
    """The sentences the lexicon may match and the headers before them; None when there is none.

    ``is_section`` says whether a header may name a section the sectionizer knows (it must
    never say no to one): other headers ("Vital signs reviewed:") are left out.  ``words`` gives
    a sentence's word set (:class:`.words.Words`: also the pieces spaCy cuts words into)."""
    pieces: list[tuple[int, int]] = []
    hit = False
    lower = text.lower()
    for start, end in spans(text):
        if lexicon.may_mention(words(lower[start:end])):
            pieces.append((start, end))
            hit = True
        elif (header := HEADER.match(text, start, end)) is not None:
            if is_section(lower[header.start(1):header.end(1)]):
                pieces.append((header.start(1), header.end(1)))
        elif BARE_HEADER.match(text, start, end) and is_section(lower[start:end]):
            pieces.append((start, end))
    if not hit:
        return None
    parts, starts, origins, at = [], [], [], 0
    for start, end in pieces:
        starts.append(at)
        origins.append(start)
        parts.append(text[start:end])
        at += end - start + 1
    return Shortened("\n".join(parts), tuple(starts), tuple(origins))
