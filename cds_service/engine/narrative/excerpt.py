"""ConText reads only the sentences that hold a mention.

A ConText modifier's scope ends with its sentence, so a sentence without a mention can modify
nothing; yet medspaCy's ConText runs its matchers over the whole document, and on the 30 notes
of the benchmark two thirds of the sentences the pre-filter lets through hold no mention (their
words could have made one, but did not).  So ConText runs on an excerpt: a document made of the
tokens of the sentences that hold a mention, with the same sentence starts and the mentions as
entities, in the same order — the flags it sets on them are the flags of the mentions.
"""
from __future__ import annotations

from bisect import bisect_right


def context_read(doc, sentences: list, starts: list[int], context) -> tuple:
    """The entities of ``doc`` with ConText applied (those of an excerpt when some sentences hold
    none), in the order of ``doc.ents``; ``starts`` are the first tokens of ``sentences``."""
    held = sorted({bisect_right(starts, ent.start) - 1 for ent in doc.ents})
    if len(held) == len(sentences):
        return tuple(context(doc).ents)
    return tuple(context(_excerpt(doc, [sentences[i] for i in held])).ents)


def _excerpt(doc, kept: list):
    """A document of the ``kept`` sentences, their sentence starts and their entities."""
    import numpy
    from spacy.attrs import SENT_START
    from spacy.tokens import Doc, Span

    words, spaces, sent_starts, shifts = [], [], [], []
    for sentence in kept:
        shifts.append((sentence.start, sentence.end, len(words) - sentence.start))
        words.extend(token.text for token in sentence)
        spaces.extend(bool(token.whitespace_) for token in sentence)
        sent_starts.extend([1] + [-1] * (len(sentence) - 1))
    excerpt = Doc(doc.vocab, words=words, spaces=spaces)
    excerpt.from_array([SENT_START], numpy.array(sent_starts, dtype="int64").view("uint64").reshape(-1, 1))
    firsts = [start for start, _, _ in shifts]
    entities = []
    for ent in doc.ents:
        shift = shifts[bisect_right(firsts, ent.start) - 1][2]
        entities.append(Span(excerpt, ent.start + shift, ent.end + shift, label=ent.label))
    excerpt.ents = entities
    return excerpt
