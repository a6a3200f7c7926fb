"""Which program decides an order: the Coverage's payer, routed by ``mappings/programs.json``.

The payer is read from ``Coverage.payor``: the Reference's own ``identifier``, or the
identifiers of the Organization it references (prefetched with ``_include=Coverage:payor``).
No Coverage — the CDS Hooks sandbox never sends one — or an unknown payer routes to the default
program, and the card says so.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from cds_service.errors import CdsConfigError
from cds_service.model import PatientRecord


@dataclass(frozen=True)
class Program:
    id: str
    name: str
    guidelines: tuple[str, ...]
    short_name: str = ""


@dataclass(frozen=True)
class Route:
    """The program chosen for a patient, and why."""

    program: Program
    routed_by: str                  # "payer" | "default"
    coverage: str | None = None     # "Coverage/<id>" used, if any
    note: str | None = None         # why the default was used
    payer: str | None = None        # the insurer the patient knows (Coverage.payor display or Organization.name)


@dataclass(frozen=True)
class Routing:
    programs: MappingProxyType
    payers: MappingProxyType        # (system, value) -> program id

    def route(self, record: PatientRecord, default_program: str) -> Route:
        coverage = _primary_coverage(record)
        if coverage is None:
            unread = record.sources.get("coverage") in ("failed", "partial")
            return Route(self.programs[default_program], "default",
                         note="the Coverage could not be read from the EHR" if unread else "no Coverage in the request")
        ref, payer = f"Coverage/{coverage.get('id')}", _payer_name(coverage, record)
        for system, value in _payer_identifiers(coverage, record):
            program_id = self.payers.get((system, value))
            if program_id:
                return Route(self.programs[program_id], "payer", ref, payer=payer)
        return Route(self.programs[default_program], "default", ref, note="the Coverage's payer is not routed to a program",
                     payer=payer)


def _primary_coverage(record: PatientRecord) -> dict | None:
    """The active Coverage with the lowest ``order`` (CRD clients send only the primary one)."""
    candidates = [c for c in record.of_type("Coverage")
                  if isinstance(c, dict) and c.get("status") in (None, "active")]
    if not candidates:
        return None
    return min(candidates, key=lambda c: c.get("order") if isinstance(c.get("order"), int) else 99)


def _payer_name(coverage: dict, record: PatientRecord) -> str | None:
    """The payer's name as the patient knows it: the payor Reference's display, else the name of
    the Organization it references (Da Vinci CRD: ``source.label`` is the insurer, not the
    benefit manager that applies the guideline)."""
    for payor in coverage.get("payor") if isinstance(coverage.get("payor"), list) else []:
        if not isinstance(payor, dict):
            continue
        if isinstance(payor.get("display"), str) and payor["display"].strip():
            return payor["display"].strip()[:120]
        if isinstance(payor.get("reference"), str):
            organization = record.resolve(local_reference(payor["reference"])) or {}
            if isinstance(organization.get("name"), str) and organization["name"].strip():
                return organization["name"].strip()[:120]
    return None


def _payer_identifiers(coverage: dict, record: PatientRecord):
    payors = coverage.get("payor") if isinstance(coverage.get("payor"), list) else []
    for payor in payors:
        if not isinstance(payor, dict):
            continue
        identifiers = [payor.get("identifier")]
        if isinstance(payor.get("reference"), str):  # the Organization, if it came along
            organization = record.resolve(local_reference(payor["reference"]))
            org_ids = (organization or {}).get("identifier")
            identifiers += org_ids if isinstance(org_ids, list) else []
        for identifier in identifiers:
            if isinstance(identifier, dict) and isinstance(identifier.get("system"), str) \
                    and isinstance(identifier.get("value"), str):
                yield identifier["system"], identifier["value"]


def local_reference(reference: str) -> str:
    """``Type/id`` of a relative, absolute or versioned reference."""
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    return "/".join(parts[-2:])


def load_routing(path: Path, guideline_ids: set[str], default_program: str) -> Routing:
    """Read programs.json; every program's guidelines must exist, and the default program too."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        programs = {pid: Program(pid, p["name"], tuple(p["guidelines"]), p.get("short_name") or pid.upper())
                    for pid, p in data["programs"].items()}
        payers = {(p["system"], p["value"]): p["program"] for p in data["payers"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CdsConfigError(f"{path} is not a valid programs file: {exc}") from exc
    for program in programs.values():
        unknown = set(program.guidelines) - guideline_ids
        if unknown:
            raise CdsConfigError(f"program {program.id!r} names guidelines with no mapping file: {sorted(unknown)}")
    if set(payers.values()) - programs.keys():
        raise CdsConfigError(f"{path}: a payer routes to an unknown program")
    if default_program not in programs:
        raise CdsConfigError(f"SPINE_CDS_DEFAULT_PROGRAM={default_program!r} is not a program in {path} "
                             f"(choose one of {', '.join(sorted(programs))})")
    return Routing(MappingProxyType(programs), MappingProxyType(payers))
