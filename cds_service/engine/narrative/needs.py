"""What a rule needs of a sentence before it can match there: the words of its required tokens
and the text its anchored expressions must find.

The pre-filter (:meth:`.lexicon.Lexicon.may_mention`, ``may_match``) and the pattern gates
(:mod:`.targets`) keep a sentence only where these necessary conditions hold, so they may let a
sentence through in vain but never keep a match out.
"""
from __future__ import annotations

import re

WORD = re.compile(r"[a-z0-9]+")
"""A word as the pre-filter and the gates see it: a run of lower-case letters and digits."""


def token_words(token: dict) -> frozenset[str]:
    """Every word any value of a LOWER/IN token holds (empty: the token cannot be checked)."""
    spec = token.get("LOWER")
    values = [spec] if isinstance(spec, str) else spec.get("IN", []) if isinstance(spec, dict) else []
    return frozenset(w for v in values if isinstance(v, str) for w in WORD.findall(v.lower()))


FUNCTION_WORDS = frozenset("""a an the and or but of to in on at by for from with without into onto over under
is are was were be been being has have had do does did not no nor can could will would may might should must
he she it they we you i his her its their our your this that these those there here as so if then than very""".split())
"""Words too common to pick as a pattern's anchor: a sentence holding "the" is no candidate."""


def selectivity(word: str) -> int:
    """How rare a word is likely to be in a note: its length, and nothing for a function word."""
    return 0 if word in FUNCTION_WORDS else len(word)


def pattern_needs(pattern) -> tuple[frozenset[str], ...]:
    """The words of each required LOWER/IN token of a token pattern: a sentence that can match
    it holds one word of each set (tokens without checkable words are left out)."""
    return tuple(words for words in (token_words(t) for t in pattern if t.get("OP") in (None, "+")) if words)


def rarest(needs: tuple[frozenset[str], ...]) -> frozenset[str]:
    """The most selective of a pattern's word sets: the one whose least selective word is
    longest, function words counting as the least selective of all (empty when there is none)."""
    return max(needs, key=lambda words: min(map(selectivity, words)), default=frozenset())


def meets(needs: tuple[frozenset[str], ...], expressions: tuple[re.Pattern, ...], words: set[str], text: str) -> bool:
    """Whether a text (lower case) with ``words`` holds a word of each of ``needs`` and text each
    of ``expressions`` finds: what a pattern needs (:func:`pattern_needs`, :func:`text_needs`)."""
    return all(not need.isdisjoint(words) for need in needs) and all(e.search(text) for e in expressions)


def text_needs(pattern) -> tuple[re.Pattern, ...]:
    """For each required token tested with an anchored expression on its lower-case text
    (``{"LOWER": {"REGEX": "^c[4-8]$"}}``, ``"^(l[2-5]|s1)$"``): the expression unanchored, which
    the sentence's lower-case text must contain somewhere if the token is there.  Expressions
    with an alternation outside parentheses or inner anchors are left out (no gate rather than a
    wrong one)."""
    found = []
    for token in pattern:
        spec = token.get("LOWER") if isinstance(token, dict) and token.get("OP") in (None, "+") else None
        expression = spec.get("REGEX") if isinstance(spec, dict) else None
        inner = _unanchored(expression) if isinstance(expression, str) else None
        if inner:
            found.append(re.compile(inner))
    return tuple(found)


def _unanchored(expression: str) -> str | None:
    """``^X$`` as ``X`` when X holds no other anchor, no lookaround (it could look past the
    token) and no ``|`` outside parentheses (escapes and character classes skipped)."""
    if len(expression) < 3 or expression[0] != "^" or expression[-1] != "$" or "^" in expression[1:-1] \
            or "$" in expression[1:-1] or expression[-2] == "\\" or re.search(r"\(\?[^:]", expression):
        return None
    inner, depth, at = expression[1:-1], 0, 0
    while at < len(inner):
        char = inner[at]
        if char == "\\":
            at += 1
        elif char == "[":
            at = inner.find("]", at + 2)       # a class ends at the first "]" after its first character
            if at == -1:
                return None
        elif char in "()":
            depth += 1 if char == "(" else -1
        elif char == "|" and depth == 0:
            return None
        at += 1
    return inner if depth == 0 else None
