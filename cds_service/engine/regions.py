"""Which spine region a coded statement concerns, so evidence about another region is left out.

Region is only ever used to *exclude*: care for low back pain does not count toward a cervical
MRI, and a lumbar cauda equina syndrome does not approve a cervical study.  A code that names no
region (a PT visit without a reason, "fever") concerns no region in particular and counts for any
ordered region.  The knowledge is data (``mappings/regions.json``): value sets that are
region-specific, ICD-10-CM categories whose 5th or 6th character is the site, and category
prefixes.  Region names there (lumbosacral, thoracolumbar…) resolve to the regions an order can
have (cervical, thoracic, lumbar).
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from cds_service.errors import CdsConfigError
from cds_service.model import ICD10CM

NONE: frozenset[str] = frozenset()
WHOLE_SPINE = "spine"   # a study of the whole spine concerns every region


class RegionIndex:
    """Immutable lookups from value sets and ICD-10-CM codes to the regions they concern."""

    def __init__(self, data: dict):
        words = {k: frozenset(v) for k, v in data["region_words"].items() if k != "about"}
        self._by_valueset = {vs: words[name] for vs, name in data["valuesets"].items() if vs != "about"}
        site = data["icd10_site_character"]
        self._site_positions = [(p, 4) for p in site["fifth"]] + [(p, 5) for p in site["sixth"]]
        self._site_chars = {c: words[name] for c, name in site["characters"].items()}
        prefixes = {p: words[name] for p, name in data["icd10_prefixes"].items() if p != "about"}
        self._prefixes = sorted(prefixes.items(), key=lambda kv: -len(kv[0]))

    def of_valuesets(self, valuesets: Iterable[str]) -> frozenset[str]:
        found = [self._by_valueset[vs] for vs in valuesets if vs in self._by_valueset]
        return frozenset().union(*found) if found else NONE

    def of_code(self, system: str | None, code: str | None) -> frozenset[str]:
        """Regions an ICD-10-CM code names by its site character or its category; else none."""
        if system != ICD10CM or not isinstance(code, str):
            return NONE
        bare = code.replace(".", "").strip().upper()
        for prefix, position in self._site_positions:
            if bare.startswith(prefix) and len(bare) > position:
                return self._site_chars.get(bare[position], NONE)
        for prefix, regions in self._prefixes:
            if bare.startswith(prefix):
                return regions
        return NONE


def concerns(item_regions: frozenset[str], ordered_region: str) -> bool:
    """True unless the item names regions and the ordered one is not among them."""
    return not item_regions or ordered_region == WHOLE_SPINE or ordered_region in item_regions


def load_regions(path: Path) -> RegionIndex:
    try:
        return RegionIndex(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CdsConfigError(f"{path}: cannot read the region table ({exc}); restore mappings/regions.json.") from exc
