"""Which value sets and which imaging study a record's codes name: one memoised lookup per coding.

Fact extraction asks this for every resource of a chart, and most resources (vital signs,
routine labs, unrelated problems) name nothing any criterion reads.  So the answer for a coding
is memoised by its raw ``(system, code, display)`` — a chart repeats the same few hundred
codings — and an irrelevant resource costs one dict lookup per coding.  Normalisation (HL7 OIDs,
``https`` variants, ICD-10-CM dots: terminology.py) and the RxNorm ingredient fallback run on a
miss only.  The memo is bounded, so hostile input cannot grow it without limit.
"""
from __future__ import annotations

from .model import CPT, Study
from .studies import StudyCatalog
from .terminology import Terminology, normalise

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
            codings = concept.get("coding") if isinstance(concept, dict) else _codings(concept)
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
        key = normalise(system, code)
        study = self.catalog.by_cpt.get(key[1]) if key is not None and key[0] == CPT else None
        return (valuesets, study) if valuesets or study is not None else NOTHING


def _codings(concept: object) -> list | None:
    """The codings of a list of CodeableConcepts (a CodeableConcept's own are read in place)."""
    if isinstance(concept, list) and concept:
        return [c for item in concept if isinstance(item, dict) and isinstance(item.get("coding"), list)
                for c in item["coding"]]
    return None
