"""Value sets: load the shipped FHIR ValueSets and answer "which value sets hold this code?".

Codes are matched on (system, code).  Systems arrive under several names in real records (HL7
OIDs, ``http://`` vs ``https://`` variants) and ICD-10-CM codes with or without the dot, so both
are normalised once here.  The index is built at start-up and immutable afterwards.
"""
from __future__ import annotations

import functools

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from cds_service.errors import CdsConfigError
from cds_service.model import CPT, ICD10CM, LOINC, NUCC, RXNORM, SNOMED

SYSTEM_ALIASES = {
    "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
    "http://hl7.org/fhir/sid/icd-10-us": ICD10CM,
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    "https://snomed.info/sct": SNOMED,
    "urn:oid:2.16.840.1.113883.6.12": CPT,
    "https://www.ama-assn.org/go/cpt": CPT,
    "urn:oid:2.16.840.1.113883.6.1": LOINC,
    "https://loinc.org": LOINC,
    "urn:oid:2.16.840.1.113883.6.88": RXNORM,
}
SHORT_SYSTEMS = {"icd10": ICD10CM, "sct": SNOMED, "cpt": CPT, "loinc": LOINC, "rxnorm": RXNORM, "nucc": NUCC}


def normalise(system: str | None, code: str | None) -> tuple[str, str] | None:
    """The canonical (system, code) key, or None when either part is missing."""
    if not isinstance(system, str) or not isinstance(code, str):
        return None
    if len(system) + len(code) > 256:   # no real system and code is this long: never cached
        return _normalise.__wrapped__(system, code)
    return _normalise(system, code)


@functools.lru_cache(maxsize=1 << 16)
def _normalise(system: str, code: str) -> tuple[str, str] | None:
    """Memoised: a chart repeats the same few hundred codings, and every fact and study lookup
    starts here (bounded, so hostile input cannot grow it without limit)."""
    if not code.strip():
        return None
    system = SYSTEM_ALIASES.get(system.strip(), system.strip())
    code = code.strip()
    if system == ICD10CM:
        code = code.replace(".", "").upper()
    return system, code


@dataclass(frozen=True)
class ValueSetInfo:
    id: str
    title: str
    url: str


def ingredient_name(display: str) -> str | None:
    """The ingredient part of an RxNorm name: "ibuprofen 600 MG Oral Tablet" → "ibuprofen".

    RxNorm's normalised names (SCD/SBD) start with the ingredient(s) and then the strength,
    so the words before the first one holding a digit name the ingredient.
    """
    words = []
    for word in display.lower().replace("[", " ").split():
        if any(ch.isdigit() for ch in word) or word in {"/", "oral", "injection"}:
            break
        words.append(word)
    return " ".join(words) or None


class Terminology:
    """Immutable index from (system, code) to the ids of the value sets that contain it.

    A prescription names a product (SCD/SBD), not the ingredient a value set is about.  Products
    listed in an expansion match by code; any other RxNorm product matches by the ingredient
    name its normalised display starts with (``ingredients``: name → value sets).
    """

    def __init__(self, index: dict[tuple[str, str], frozenset[str]], info: dict[str, ValueSetInfo],
                 ingredients: dict[str, frozenset[str]] | None = None):
        self._index = MappingProxyType(index)
        self.valuesets = MappingProxyType(info)
        self._ingredients = MappingProxyType(dict(ingredients or {}))

    def valuesets_of(self, system: object, code: object, display: object = None) -> frozenset[str]:
        """The value sets of one coding: by code, or for an unlisted RxNorm product by ingredient.
        (Fact extraction asks through tagging.Tagger, which memoises the answer per coding.)"""
        key = normalise(system, code)
        if key is None:
            return frozenset()
        if key in self._index:
            return self._index[key]
        return self._by_ingredient(display) if key[0] == RXNORM else frozenset()

    def _by_ingredient(self, display: object) -> frozenset[str]:
        if not isinstance(display, str) or not self._ingredients:
            return frozenset()
        name = ingredient_name(display)
        while name:  # "cyclobenzaprine hydrochloride" falls back to "cyclobenzaprine"
            if name in self._ingredients:
                return self._ingredients[name]
            name = name.rpartition(" ")[0]
        return frozenset()

    def contains(self, valueset_id: str, system: str, code: str) -> bool:
        key = normalise(system, code)
        return key is not None and valueset_id in self._index.get(key, frozenset())

    def codes(self, valueset_id: str) -> list[tuple[str, str]]:
        """Every (system, code) in a value set (for tests and documentation)."""
        return sorted(k for k, ids in self._index.items() if valueset_id in ids)


def load_terminology(folder: Path) -> Terminology:
    """Read every ``*.json`` ValueSet in ``folder`` and index its expansion."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CdsConfigError(f"value-set folder {folder} does not exist; set SPINE_CDS_VALUESETS_DIR")
    index: dict[tuple[str, str], set[str]] = {}
    ingredients: dict[str, set[str]] = {}
    info: dict[str, ValueSetInfo] = {}
    for path in sorted(folder.glob("*.json")):
        resource = _read_valueset(path)
        vs_id = resource["id"]
        info[vs_id] = ValueSetInfo(vs_id, resource.get("title") or vs_id, resource.get("url", ""))
        for entry in _flatten(resource["expansion"].get("contains", [])):
            key = normalise(entry.get("system"), entry.get("code"))
            if key is not None:
                index.setdefault(key, set()).add(vs_id)
                name = ingredient_name(entry.get("display") or "") if key[0] == RXNORM else None
                if name:
                    ingredients.setdefault(name, set()).add(vs_id)
    return Terminology({k: frozenset(v) for k, v in index.items()}, info,
                       {k: frozenset(v) for k, v in ingredients.items()})


def _read_valueset(path: Path) -> dict:
    try:
        resource = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CdsConfigError(f"value set {path.name} is not readable JSON: {exc}") from exc
    if resource.get("resourceType") != "ValueSet" or resource.get("id") != path.stem:
        raise CdsConfigError(f"{path.name} must be a ValueSet whose id is {path.stem!r}")
    if not isinstance(resource.get("expansion"), dict):
        raise CdsConfigError(f"value set {path.name} has no expansion; run scripts/build_valuesets.py")
    return resource


def _flatten(contains: list) -> Iterable[dict]:
    for entry in contains or []:
        if isinstance(entry, dict):
            yield entry
            yield from _flatten(entry.get("contains", []))
