"""Imaging studies known by CPT code: recognising spine CT/MRI orders and naming alternatives.

The table lives in ``mappings/studies.json``; this module only reads it.  A draft order is ours
when one of its codings is a CPT code of a CT or MR study of the cervical, thoracic or lumbar
spine (72125–72133, 72141–72158).
"""
from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from cds_service.errors import CdsConfigError
from cds_service.model import CPT, SpineOrder, Study
from cds_service.engine.terminology import normalise

DECIDED_MODALITIES = frozenset({"CT", "MR"})
DECIDED_REGIONS = frozenset({"cervical", "thoracic", "lumbar"})
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class StudyCatalog:
    """Immutable CPT → Study table, and the words that name a prior study without a CPT code."""

    by_cpt: MappingProxyType
    prior: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))

    def study_for_codings(self, codings: object) -> Study | None:
        """The first CPT coding we know, or None."""
        if not isinstance(codings, list):
            return None
        for coding in codings:
            if isinstance(coding, dict):
                study = self.study_for(coding.get("system"), coding.get("code"))
                if study is not None:
                    return study
        return None

    def study_for(self, system: object, code: object) -> Study | None:
        """The study of one coding if it is a CPT code we know, else None."""
        key = normalise(system, code)
        return self.by_cpt.get(key[1]) if key is not None and key[0] == CPT else None

    def study_from_words(self, modality_codes: Iterable[str], texts: Iterable[str]) -> Study | None:
        """A prior study named by DICOM modality codes and/or words ("XR LUMBAR SPINE 2-3 VIEWS",
        "MRI L-spine"): its modality and its one region must both be clear, else None."""
        prior = self.prior
        if not prior:
            return None
        words = set()
        for text in texts:
            if isinstance(text, str):
                words.update(_words(text) if len(text) <= 256 else _words.__wrapped__(text))   # long: not cached
        modalities = {prior["dicom_modalities"][c] for c in modality_codes if c in prior["dicom_modalities"]}
        modalities |= {prior["modality_words"][w] for w in words if w in prior["modality_words"]}
        regions = {prior["region_words"][w] for w in words if w in prior["region_words"]}
        if len(modalities) != 1 or len(regions) != 1:
            return None
        modality, region = modalities.pop(), regions.pop()
        return Study("", f"{modality} {region} spine (prior study)", modality, region, "unknown")

    def find(self, modality: str, region: str, contrast: str) -> Study | None:
        """The study with exactly these attributes (used to resolve alternative suggestions)."""
        for study in self.by_cpt.values():
            if (study.modality, study.region, study.contrast) == (modality, region, contrast):
                return study
        return None

    def resolve(self, spec: dict, ordered: Study) -> Study | None:
        """Resolve an alternative's ``study`` spec against the ordered study."""
        if "cpt" in spec:
            return self.by_cpt.get(spec["cpt"])
        region = ordered.region if spec.get("region") == "ordered" else spec.get("region")
        contrast = ordered.contrast if spec.get("contrast", "ordered") == "ordered" else spec["contrast"]
        for option in (contrast, "without", "none"):  # radiographs and ultrasound have no contrast
            study = self.find(spec["modality"], region, option)
            if study:
                return study
        return None


@functools.lru_cache(maxsize=4096)
def _words(text: str) -> frozenset[str]:
    """The lower-case words of a description ("XR LUMBAR SPINE 2-3 VIEWS"); memoised, bounded:
    a chart repeats the same few report and study names."""
    return frozenset(_WORD.findall(text.lower().replace("x-ray", "xray").replace("-spine", "spine")))


def load_studies(path: Path) -> StudyCatalog:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        studies = {s["cpt"]: Study(s["cpt"], s["display"], s["modality"], s["region"], s["contrast"])
                   for s in data["studies"]}
        prior = data.get("prior_imaging", {})
        prior = {k: dict(prior[k]) for k in ("dicom_modalities", "modality_words", "region_words")} if prior else {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CdsConfigError(f"{path} is not a valid studies table: {exc}") from exc
    return StudyCatalog(MappingProxyType(studies), MappingProxyType(prior))


def spine_orders(draft_orders: tuple[dict, ...], catalog: StudyCatalog) -> list[SpineOrder]:
    """Every draft ServiceRequest that is a spine CT or MRI, in the order given."""
    orders = []
    for resource in draft_orders:
        if not isinstance(resource, dict) or resource.get("resourceType") != "ServiceRequest":
            continue
        code = resource.get("code")
        study = catalog.study_for_codings(code.get("coding") if isinstance(code, dict) else None)
        if study and study.modality in DECIDED_MODALITIES and study.region in DECIDED_REGIONS:
            orders.append(SpineOrder(f"ServiceRequest/{resource.get('id')}", resource, study))
    return orders
