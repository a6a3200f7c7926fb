"""The narrative of one record as clinical items: texts → mentions (cached) → items.

Each counting mention becomes a :class:`ClinicalItem` of type ``Narrative`` whose tags are its
concept's value sets and ``documented`` answers, dated by its note (minus a span the sentence
states: "LBP x 8 wks" in a note of 3 Dec began about 8 Oct), about the region its concept or
its sentence names, and quoting the sentence for the card.  Its ``ref`` points at the resource
with an RFC 5147 fragment, ``DocumentReference/abc#char=120,168``: the characters of the text
as read (for HTML, the text without its markup).

Mentions depend only on a text and the lexicon, so they are cached under a hash of both: a
repeated order-select reads no note twice.  The cache passed in (shared by the workers) holds
offsets and flags only, never text.
"""
from __future__ import annotations

import hashlib
import re
import threading
from datetime import date
from pathlib import Path
from typing import Protocol

from cachetools import LRUCache

from cds_service.engine.fhir_dates import add_days, human_date
from cds_service.engine.narrative.durations import span_days
from cds_service.engine.narrative.lexicon import Concept, Lexicon
from cds_service.engine.narrative.needs import WORD
from cds_service.engine.narrative.pipeline import Mention, Pipeline
from cds_service.engine.narrative.sentences import shorten
from cds_service.engine.narrative.texts import Collected, Limits, NoteText, collect
from cds_service.model import NARRATIVE, ClinicalItem, PatientRecord

QUOTE_CHARS = 200
LOCAL_ENTRIES = 2048


class MentionCache(Protocol):
    """Where mentions are kept between calls: ``key`` is a hash, values are lists of lists."""

    def get(self, key: str) -> list | None: ...

    def put(self, key: str, value: list) -> None: ...

    def get_many(self, keys: list[str]) -> list[list | None]: ...

    def put_many(self, items: list[tuple[str, list]]) -> None: ...


class Narrative:
    """The narrative items and the list of what was not read, for one record."""

    def __init__(self, items: tuple[ClinicalItem, ...] = (), unread: tuple[str, ...] = ()):
        self.items, self.unread = items, unread


class NarrativeReader:
    def __init__(self, lexicon: Lexicon, pipeline: Pipeline):
        self.lexicon, self.pipeline = lexicon, pipeline
        self._local: LRUCache = LRUCache(LOCAL_ENTRIES)     # text hash -> mentions (offsets and flags)
        self._built: LRUCache = LRUCache(LOCAL_ENTRIES)     # (hash, ref, source, date) -> items
        self._lock = threading.Lock()   # LRUCache is not thread-safe; gthread workers are
        regions = sorted(lexicon.region_words, key=len, reverse=True)
        self._region_words = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, regions)) + r")(?![\w-])") if regions else None

    def read(self, record: PatientRecord, drafts: tuple[dict, ...], today: date, limits: Limits,
             cache: MentionCache | None = None) -> Narrative:
        collected: Collected = collect(record, drafts, today, limits)
        texts = list(dict.fromkeys(collected.texts))
        keys = [self._key(text.text) for text in texts]
        self._read_new(texts, keys, cache)
        items = []
        for text, key in zip(texts, keys):
            items.extend(self._items(text, key, cache))
        return Narrative(tuple(items), collected.unread)

    def _read_new(self, texts: list[NoteText], keys: list[str], cache: MentionCache | None) -> None:
        """Mentions of every text this worker has not read, into its memo: from the shared cache
        in one read, the rest through the pipeline, stored back in one write."""
        with self._lock:
            unread = {key: text.text for text, key in zip(texts, keys)
                      if (key, text.ref, text.source, text.when) not in self._built and key not in self._local}
        if not unread:
            return
        shared = cache.get_many(list(unread)) if cache is not None else [None] * len(unread)
        found, new = {}, []
        for (key, text), cached in zip(unread.items(), shared):
            if cached is None:
                cached = self._read(text)
                new.append((key, cached))
            found[key] = cached
        if new and cache is not None:
            cache.put_many(new)
        with self._lock:
            self._local.update(found)

    def _read(self, text: str) -> list[list]:
        """The mentions of ``text`` through the pre-filter and the pipeline, as cached (lists)."""
        shortened = shorten(text, self.lexicon, self.pipeline.is_section, self.pipeline.words, self.pipeline.speller)
        return [m.to_list() for m in self.pipeline.mentions(shortened)] if shortened else []

    def _key(self, text: str) -> str:
        return hashlib.sha256(f"{self.lexicon.digest}\0{self.pipeline.speller.version}\0{text}"
                              .encode("utf-8", "surrogatepass")).hexdigest()

    def mentions(self, text: str, cache: MentionCache | None = None, key: str | None = None) -> list[Mention]:
        """Every mention in ``text`` (counting or not), from the caches when seen before."""
        key = key or self._key(text)
        with self._lock:
            found = self._local.get(key)
        if found is None:
            found = cache.get(key) if cache is not None else None
            if found is None:
                found = self._read(text)
                if cache is not None:
                    cache.put(key, found)
            with self._lock:
                self._local[key] = found
        return [Mention.from_list(values) for values in found]

    def found(self, text: str, cache: MentionCache | None = None, counting_only: bool = False,
              key: str | None = None) -> list[tuple[Mention, Concept, frozenset[str]]]:
        """The mentions of ``text`` that stand for something, with their concept and regions
        (a concept's own region, else the regions its sentence names; none = any).  Negated,
        family, hypothetical and uncertain mentions are kept unless ``counting_only``:
        :attr:`Mention.counts` says."""
        found, named = [], {}
        for mention in self.mentions(text, cache, key):
            concept = self.lexicon.concepts.get(mention.concept)
            if concept is None or (counting_only and not mention.counts):
                continue
            span = (mention.sentence_start, mention.sentence_end)
            if span not in named:
                sentence = text[span[0]:span[1]]
                named[span] = (self._regions(sentence), set(WORD.findall(sentence.lower())))
            regions, words = named[span]
            if concept.context_words and not concept.context_words.intersection(words):
                continue
            for meant in self._meant(concept, text[mention.start:mention.end]):
                found.append((mention, meant, frozenset({meant.region} if meant.region else regions)))
        return found

    def _meant(self, concept: Concept, matched: str) -> list[Concept]:
        """The concept, what it implies, and what the matched phrase itself also is (with what
        that implies): "spastic gait" is gait, spasticity and so upper motor neuron signs."""
        concepts = self.lexicon.concepts
        extra = concept.phrase_implies.get(" ".join(WORD.findall(matched.lower())), ()) if concept.phrase_implies else ()
        meant = [concept, *(concepts[c] for c in concept.implies)]
        for other in extra:
            meant += [concepts[other], *(concepts[c] for c in concepts[other].implies)]
        return list({c.id: c for c in meant}.values())

    def _items(self, text: NoteText, key: str, cache: MentionCache | None) -> tuple[ClinicalItem, ...]:
        """One item per concept, date, region and status in a note: a note that says "back pain"
        five times is one piece of evidence (the first sentence is quoted).

        A repeated order-select sees the same notes again: their items are kept in this
        process, by note (reference, source, date) and text hash, so the second call neither
        reads nor rebuilds them.  (They quote the note, so they stay in this worker's memory:
        the cache shared between workers holds offsets only.)"""
        memo_key = (key, text.ref, text.source, text.when)
        with self._lock:
            items = self._built.get(memo_key)
        if items is None:
            built: dict[tuple, ClinicalItem] = {}
            for mention, concept, regions in self.found(text.text, cache, counting_only=True, key=key):
                item = self._item(text, mention, concept, regions)
                built.setdefault((concept.id, item.when, item.status, item.regions), item)
            items = tuple(built.values())
            with self._lock:
                self._built[memo_key] = items
        return items

    def _item(self, text: NoteText, mention: Mention, concept: Concept, regions: frozenset[str]) -> ClinicalItem:
        sentence = text.text[mention.sentence_start:mention.sentence_end]
        quote = quoted(sentence, mention.start - mention.sentence_start, mention.end - mention.sentence_start)
        written = f", {human_date(text.when)}" if text.when else " (undated)"
        when = None if mention.historical else _onset(text.when, sentence, mention)
        return ClinicalItem(ref=f"{text.ref}#char={mention.start},{mention.end}", resource_type=NARRATIVE,
                            valuesets=concept.tags, display=f"{text.source}{written}: \u2018{quote}\u2019",
                            when=when, status="inactive" if mention.historical else "active",
                            regions=regions, dated_by="note", quote=quote)

    def _regions(self, sentence: str) -> set[str]:
        if self._region_words is None:
            return set()
        return {self.lexicon.region_words[w] for w in self._region_words.findall(sentence.lower())}


def _onset(written: date | None, sentence: str, mention: Mention) -> date | None:
    """The note's date, less the span the sentence states ("x 8 wks")."""
    if written is None:
        return None
    days = span_days(sentence, mention.start - mention.sentence_start, written)
    return add_days(written, -days) if days else written


def quoted(sentence: str, start: int, end: int, limit: int = QUOTE_CHARS) -> str:
    """The sentence, whitespace collapsed, cut to about ``limit`` characters around the mention."""
    if len(sentence) > limit:
        room = max(0, (limit - (end - start)) // 2)
        left, right = max(0, start - room), min(len(sentence), end + room)
        sentence = ("\u2026" if left else "") + sentence[left:right] + ("\u2026" if right < len(sentence) else "")
    return " ".join(sentence.split())


_LOADED: dict[tuple[str, str], NarrativeReader] = {}
_LOADING = threading.Lock()


def load_reader(path: Path) -> NarrativeReader:
    """The lexicon at ``path`` and its pipeline (spaCy is imported here, at start-up).

    Building the pipeline takes about half a second, so a process builds it once per lexicon
    content (an app factory called again, as the tests do, reuses it); the reader is immutable
    apart from its memo."""
    from cds_service.engine.narrative.lexicon import load_lexicon
    key = (str(path), hashlib.sha256(Path(path).read_bytes()).hexdigest())
    with _LOADING:
        if key not in _LOADED:
            lexicon = load_lexicon(Path(path))
            _LOADED[key] = NarrativeReader(lexicon, Pipeline(lexicon))
        return _LOADED[key]
