"""Turn the compact case-table notation (tests/cases/README.md) into real FHIR R4 resources
and a hook request, so case tables exercise the same parsing as live calls."""
from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from cds_service.engine.facts import extract_facts
from cds_service.protocol.hooks import orders_in_scope
from cds_service.model import Facts, HookRequest, PatientRecord
from cds_service.engine.terminology import SHORT_SYSTEMS

PATIENT_ID = "case-patient"
ORDER_ID = "order-under-review"


def coding(text: str) -> dict:
    system, _, code = text.partition("|")
    return {"system": SHORT_SYSTEMS.get(system, system), "code": code}


def concept(text: str) -> dict:
    return {"coding": [coding(text)]}


DATE_FIELDS = {"Condition": "onsetDateTime", "Observation": "effectiveDateTime", "Procedure": "performedDateTime",
               "MedicationRequest": "authoredOn", "ImagingStudy": "started", "DiagnosticReport": "effectiveDateTime",
               "ServiceRequest": "authoredOn"}
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


def _specifics(rtype: str, e: dict) -> dict:
    """The type-specific elements of a compact record entry."""
    code = concept(e["code"])
    if rtype == "Condition":
        return {"code": code, "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                                             "code": e.get("status", "active")}]}}
    if rtype == "Observation":
        res = {"status": "final", "code": code}
        if "value" in e:
            res["valueQuantity"] = {"value": e["value"], "unit": e.get("unit", "")}
        if e.get("valueCode"):
            res["valueCodeableConcept"] = concept(e["valueCode"])
        if e.get("interpretation"):
            res["interpretation"] = [{"coding": [{"system": INTERPRETATION, "code": e["interpretation"]}]}]
        return res
    if rtype == "MedicationRequest":
        return {"status": e.get("status", "active"), "intent": "order", "medicationCodeableConcept": code}
    if rtype == "ImagingStudy":
        return {"status": "available", "procedureCode": [code]}
    if rtype == "DiagnosticReport":
        res = {"status": "final", "code": code}
        if e.get("conclusion"):
            res["conclusionCode"] = [concept(c) for c in e["conclusion"]]
        return res
    if rtype == "ServiceRequest":
        return {"status": "draft" if e.get("draft") else e.get("status", "completed"), "intent": "order", "code": code}
    return {"status": e.get("status", "completed"), "code": code}  # Procedure


def build_resource(entry: dict, index: int) -> dict:
    if "fhir" in entry:
        return entry["fhir"]
    rtype = entry["resource"]
    if rtype not in DATE_FIELDS:
        raise ValueError(f"case record entry of unknown resource type {rtype!r}; use {sorted(DATE_FIELDS)} or 'fhir'")
    resource = {"resourceType": rtype, "id": f"{rtype[0].lower()}{index}", "subject": {"reference": f"Patient/{PATIENT_ID}"},
                **_specifics(rtype, entry)}
    if entry.get("date"):
        resource[DATE_FIELDS[rtype]] = entry["date"]
    return resource


def build_case(case: dict, defaults: dict) -> tuple[HookRequest, PatientRecord]:
    """The hook request (order-select of one draft order) and the patient record of a case."""
    merged = {**defaults, **case}
    order = {"resourceType": "ServiceRequest", "id": ORDER_ID, "status": "draft", "intent": "order",
             "subject": {"reference": f"Patient/{PATIENT_ID}"}, "code": concept(f"cpt|{merged['order']}")}
    if merged.get("reasons"):
        order["reasonCode"] = [concept(r) for r in merged["reasons"]]
    resources = [build_resource(e, i) for i, e in enumerate(merged.get("record", []))]
    drafts = [order] + [r for r in resources if r["resourceType"] == "ServiceRequest" and r["status"] == "draft"]
    grouped: dict[str, list[dict]] = {}
    for r in resources:
        if r not in drafts:
            grouped.setdefault(r["resourceType"], []).append(r)
    patient = {"resourceType": "Patient", "id": PATIENT_ID, "gender": merged.get("gender", "unknown")}
    if merged.get("birthDate"):
        patient["birthDate"] = merged["birthDate"]
    if merged.get("coverage"):
        grouped["Coverage"] = [merged["coverage"]]
    record = PatientRecord(patient=patient, resources={k: tuple(v) for k, v in grouped.items()},
                           sources={"patient": "prefetch"})
    hook = HookRequest(hook="order-select", hook_instance="case-hook-instance", context={"patientId": PATIENT_ID},
                       patient_id=PATIENT_ID, user_id="Practitioner/case", draft_orders=tuple(drafts),
                       selections=(f"ServiceRequest/{ORDER_ID}",))
    return hook, record


CASES_DIR = Path(__file__).parent / "cases"


def case_tables() -> list[dict]:
    """Every guideline's case table (tests/cases/*.json), parsed."""
    return [json.loads(path.read_text()) for path in sorted(CASES_DIR.glob("*.json"))]


def case_table_params() -> list:
    """The case tables as pytest parameters named by their guideline."""
    return [pytest.param(table, id=table["guideline"]) for table in case_tables()]


def case_facts(table: dict, case: dict, registry) -> Facts:
    """Fresh facts (no memo shared with anything) for the one spine order of a case."""
    hook, record = build_case(case, table.get("defaults", {}))
    today = date.fromisoformat(case.get("today", table["today"]))
    [order], every = orders_in_scope(hook, registry)
    others = tuple(o for o in every if o.reference != order.reference)
    return extract_facts(record, order, others, registry.tagger, today)
