"""Everything loaded from ``mappings/`` and ``valuesets/`` at start-up, immutable afterwards."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .guidelines import Guideline, load_guidelines
from .routing import Routing, load_routing
from .studies import StudyCatalog, load_studies
from .terminology import Terminology, load_terminology


@dataclass(frozen=True)
class Registry:
    terminology: Terminology
    catalog: StudyCatalog
    guidelines: dict[str, Guideline]
    routing: Routing


def load_registry(mappings_dir: Path, valuesets_dir: Path, default_program: str) -> Registry:
    """Load and cross-check value sets, studies, guidelines and routing; raise CdsConfigError."""
    terminology = load_terminology(Path(valuesets_dir))
    guidelines = load_guidelines(Path(mappings_dir), terminology)
    routing = load_routing(Path(mappings_dir) / "programs.json", set(guidelines), default_program)
    return Registry(terminology, load_studies(Path(mappings_dir) / "studies.json"), guidelines, routing)
