"""Everything loaded from ``mappings/`` and ``valuesets/`` at start-up, immutable afterwards."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cds_service.engine.evaluation import compile_guideline
from cds_service.engine import units
from cds_service.engine.guidelines import Guideline, load_guidelines
from cds_service.engine.regions import RegionIndex, load_regions
from cds_service.engine.routing import Routing, load_routing
from cds_service.engine.studies import StudyCatalog, load_studies
from cds_service.engine.tagging import Tagger
from cds_service.engine.terminology import Terminology, load_terminology


@dataclass(frozen=True)
class Registry:
    terminology: Terminology
    catalog: StudyCatalog
    guidelines: dict[str, Guideline]
    routing: Routing
    tagger: Tagger      # memoised code → value sets / study / region lookups for fact extraction
    regions: RegionIndex


def load_registry(mappings_dir: Path, valuesets_dir: Path, default_program: str) -> Registry:
    """Load and cross-check value sets, studies, guidelines and routing; raise CdsConfigError."""
    terminology = load_terminology(Path(valuesets_dir))
    guidelines = load_guidelines(Path(mappings_dir), terminology)
    for guideline in guidelines.values():
        compile_guideline(guideline)
    routing = load_routing(Path(mappings_dir) / "programs.json", set(guidelines), default_program)
    catalog = load_studies(Path(mappings_dir) / "studies.json")
    regions = load_regions(Path(mappings_dir) / "regions.json")
    units.warm()   # the UCUM registry takes about a second to build: at start-up, not in a call
    return Registry(terminology, catalog, guidelines, routing, Tagger(terminology, catalog, regions), regions)
