"""Which value sets and which imaging study a record's codes name: one memoised lookup per coding.

Fact extraction asks this for every resource of a chart, and most resources (vital signs,
routine labs, unrelated problems) name nothing any criterion reads.  So the answer for a coding
is memoised by its raw ``(system, code, display)`` — a chart repeats the same few hundred
codings — and an irrelevant resource costs one dict lookup per coding.  Normalisation (HL7 OIDs,
``https`` variants, ICD-10-CM dots: terminology.py) and the RxNorm ingredient fallback run on a
miss only.  The memo is bounded, so hostile input cannot grow it without limit.
"""
from __future__ import annotations

from cds_service.model import Study
from cds_service.engine.studies import StudyCatalog
from cds_service.engine.terminology import Terminology

EMPTY: frozenset[str] = frozenset()
NOTHING: tuple[frozenset[str], Study | None] = (EMPTY, None)
Tags = tuple[frozenset[str], "Study | None"]


class Tagger:
    """Immutable answers, memoised: (value-set ids, known study) for CodeableConcepts."""

    def __init__(self, terminology: Terminology, catalog: StudyCatalog, limit: int = 1 << 16):
        self.terminology, self.catalog, self._limit = terminology, catalog, limit
        self._memo: dict[tuple, Tags] = {}

    def tags(self, *concepts: object) -> Tags | None:
        """The union of the value sets of every coding of ``concepts`` (CodeableConcepts, or lists
        of them; junk is skipped) and the first known study among them; None when neither.

        Written for speed: it runs once per resource of the chart."""
        valuesets, study, memo = EMPTY, None, self._memo
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
        return (valuesets, study) if valuesets or study is not None else None

    def _remember(self, key: tuple) -> Tags:
        found = self._lookup(*key)
        if len(self._memo) < self._limit:
            self._memo[key] = found
        return found

    def _lookup(self, system: object, code: object, display: object) -> Tags:
        valuesets = self.terminology.valuesets_of(system, code, display)
        study = self.catalog.study_for(system, code)
        return (valuesets, study) if valuesets or study is not None else NOTHING


def codings_of(concept: object) -> list[dict]:
    """The codings of a CodeableConcept (or a list of them), tolerating junk."""
    if isinstance(concept, list):
        return [c for item in concept for c in codings_of(item)]
    if isinstance(concept, dict) and isinstance(concept.get("coding"), list):
        return [c for c in concept["coding"] if isinstance(c, dict)]
    return []
