"""Which value sets, imaging study and spine regions a record's codes name: one memoised lookup
per coding.

Fact extraction asks this for every resource of a chart, and most resources (vital signs,
routine labs, unrelated problems) name nothing any criterion reads.  So the answer for a coding
is memoised by its raw ``(system, code, display)`` — a chart repeats the same few hundred
codings — and an irrelevant resource costs one dict lookup per coding.  Normalisation (HL7 OIDs,
``https`` variants, ICD-10-CM dots: terminology.py) and the RxNorm ingredient fallback run on a
miss only.  The memo is bounded, so hostile input cannot grow it without limit.
"""
from __future__ import annotations

from cds_service.engine.regions import RegionIndex
from cds_service.engine.studies import DECIDED_REGIONS, StudyCatalog
from cds_service.engine.terminology import Terminology
from cds_service.model import Study

EMPTY: frozenset[str] = frozenset()
MAX_KEY_CHARS = 512        # a coding longer than this (system + code + display) is looked up, never memoised
MEMO_CHARS = 8 << 20       # the memo's budget in characters of its keys
ENTRY_OVERHEAD = 200       # about what a dict entry and its tuple cost besides the strings
Tags = tuple[frozenset[str], "Study | None", frozenset[str]]   # (value sets, study, regions)
NOTHING: Tags = (EMPTY, None, EMPTY)


class Tagger:
    """Immutable answers, memoised: (value-set ids, known study, regions) for CodeableConcepts."""

    def __init__(self, terminology: Terminology, catalog: StudyCatalog, regions: RegionIndex | None = None,
                 limit: int = 1 << 16):
        self.terminology, self.catalog, self.regions, self._limit = terminology, catalog, regions, limit
        self._memo: dict[tuple, Tags] = {}
        self._chars = 0

    def tags(self, *concepts: object) -> Tags | None:
        """The union of the value sets and of the regions of every coding of ``concepts``
        (CodeableConcepts, or lists of them; junk is skipped) and the first known study among
        them; None when the codings name none of these.

        Written for speed: it runs once per resource of the chart."""
        valuesets, study, regions, memo = EMPTY, None, EMPTY, self._memo
        for concept in concepts:
            codings = concept.get("coding") if isinstance(concept, dict) else codings_of(concept)
            if not isinstance(codings, list):
                continue
            for coding in codings:
                if not isinstance(coding, dict):
                    continue
                key = (coding.get("system"), coding.get("code"), coding.get("display"))
                try:
                    found = memo[key]
                except KeyError:
                    found = self._remember(key)
                except TypeError:  # a list or object where a string belongs: looked up, never memoised
                    found = self._lookup(*key)
                if found is not NOTHING:
                    valuesets = valuesets | found[0] if valuesets else found[0]
                    study = study or found[1]
                    regions = regions | found[2] if regions else found[2]
        return (valuesets, study, regions) if valuesets or study is not None or regions else None

    def _remember(self, key: tuple) -> Tags:
        """Look up and memoise, within a budget of characters as well as of entries: a request
        full of distinct long codings must not grow a worker (the memo lives as long as it)."""
        found = self._lookup(*key)
        size = sum(len(part) for part in key if isinstance(part, str)) + ENTRY_OVERHEAD
        if len(self._memo) < self._limit and size <= MAX_KEY_CHARS and self._chars + size <= MEMO_CHARS:
            self._memo[key] = found
            self._chars += size
        return found

    def _lookup(self, system: object, code: object, display: object) -> Tags:
        valuesets = self.terminology.valuesets_of(system, code, display)
        study = self.catalog.study_for(system, code)
        regions = self._regions(system, code, valuesets, study)
        return (valuesets, study, regions) if valuesets or study is not None or regions else NOTHING

    def _regions(self, system: object, code: object, valuesets: frozenset[str], study: Study | None) -> frozenset[str]:
        if self.regions is None:
            return EMPTY
        found = self.regions.of_code(system if isinstance(system, str) else None, code if isinstance(code, str) else None)
        found |= self.regions.of_valuesets(valuesets)
        if study is not None and study.region in DECIDED_REGIONS:
            found |= {study.region}
        return frozenset(found)


def codings_of(concept: object) -> list[dict]:
    """The codings of a CodeableConcept (or a list of them), tolerating junk."""
    if isinstance(concept, list):
        return [c for item in concept for c in codings_of(item)]
    if isinstance(concept, dict) and isinstance(concept.get("coding"), list):
        return [c for c in concept["coding"] if isinstance(c, dict)]
    return []
