"""Everything loaded from ``mappings/`` and ``valuesets/`` at start-up, immutable afterwards."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cds_service.engine.evaluation import compile_guideline
from cds_service.engine import units
from cds_service.engine.guidelines import Guideline, load_guidelines
from cds_service.engine.narrative.reader import NarrativeReader, load_reader
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
    narrative: NarrativeReader | None = None   # mappings/narrative.json: notes and report text as evidence


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
    lexicon = Path(mappings_dir) / "narrative.json"
    narrative = load_reader(lexicon) if lexicon.exists() else None
    if narrative is not None:
        check_lexicon(narrative.lexicon, terminology, guidelines)
    return Registry(terminology, catalog, guidelines, routing, Tagger(terminology, catalog, regions), regions, narrative)


def check_lexicon(lexicon, terminology: Terminology, guidelines: dict[str, Guideline]) -> None:
    """Every value set a narrative concept names exists, and every documented label it answers
    is the label of a ``documented`` leaf of some guideline (a reworded label would otherwise
    silently stop being answered)."""
    from cds_service.engine.attestation import link_id
    from cds_service.errors import CdsConfigError
    from cds_service.engine.narrative.lexicon import NOTED
    known = {link_id(label) for g in guidelines.values() for label in g.documented_labels()}
    for concept in lexicon.concepts.values():
        for tag in concept.tags:
            if tag.startswith(NOTED):
                if tag.removeprefix(NOTED) not in known:
                    raise CdsConfigError(f"narrative.json: concept {concept.id!r} answers a documented label no guideline has "
                                         f"({tag.removeprefix(NOTED)}); copy the label from the mapping")
            elif tag not in terminology.valuesets:
                raise CdsConfigError(f"narrative.json: concept {concept.id!r} names value set {tag!r}, which valuesets/ lacks")
