"""Turn the compact case-table notation (tests/cases/README.md) into real FHIR R4 resources
and a hook request, so case tables exercise the same parsing as live calls."""
from __future__ import annotations

from cds_service.model import HookRequest, PatientRecord
from cds_service.terminology import SHORT_SYSTEMS

PATIENT_ID = "case-patient"
ORDER_ID = "order-under-review"


def coding(text: str) -> dict:
    system, _, code = text.partition("|")
    return {"system": SHORT_SYSTEMS.get(system, system), "code": code}


def concept(text: str) -> dict:
    return {"coding": [coding(text)]}


def _condition(e: dict, rid: str) -> dict:
    status = e.get("status", "active")
    res = {"resourceType": "Condition", "id": rid, "code": concept(e["code"]),
           "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": status}]},
           "subject": {"reference": f"Patient/{PATIENT_ID}"}}
    if e.get("date"):
        res["onsetDateTime"] = e["date"]
    return res


def _observation(e: dict, rid: str) -> dict:
    res = {"resourceType": "Observation", "id": rid, "status": "final", "code": concept(e["code"]),
           "subject": {"reference": f"Patient/{PATIENT_ID}"}}
    if e.get("date"):
        res["effectiveDateTime"] = e["date"]
    if "value" in e:
        res["valueQuantity"] = {"value": e["value"], "unit": e.get("unit", "")}
    if e.get("valueCode"):
        res["valueCodeableConcept"] = concept(e["valueCode"])
    if e.get("interpretation"):
        res["interpretation"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                                              "code": e["interpretation"]}]}]
    return res


def _procedure(e: dict, rid: str) -> dict:
    res = {"resourceType": "Procedure", "id": rid, "status": e.get("status", "completed"), "code": concept(e["code"]),
           "subject": {"reference": f"Patient/{PATIENT_ID}"}}
    if e.get("date"):
        res["performedDateTime"] = e["date"]
    return res


def _medication(e: dict, rid: str) -> dict:
    res = {"resourceType": "MedicationRequest", "id": rid, "status": e.get("status", "active"), "intent": "order",
           "medicationCodeableConcept": concept(e["code"]), "subject": {"reference": f"Patient/{PATIENT_ID}"}}
    if e.get("date"):
        res["authoredOn"] = e["date"]
    return res


def _imaging(e: dict, rid: str) -> dict:
    res = {"resourceType": "ImagingStudy", "id": rid, "status": "available", "procedureCode": [concept(e["code"])],
           "subject": {"reference": f"Patient/{PATIENT_ID}"}}
    if e.get("date"):
        res["started"] = e["date"]
    return res


def _report(e: dict, rid: str) -> dict:
    res = {"resourceType": "DiagnosticReport", "id": rid, "status": "final", "code": concept(e["code"]),
           "subject": {"reference": f"Patient/{PATIENT_ID}"}}
    if e.get("date"):
        res["effectiveDateTime"] = e["date"]
    if e.get("conclusion"):
        res["conclusionCode"] = [concept(c) for c in e["conclusion"]]
    return res


def _service_request(e: dict, rid: str) -> dict:
    res = {"resourceType": "ServiceRequest", "id": rid, "status": "draft" if e.get("draft") else e.get("status", "completed"),
           "intent": "order", "code": concept(e["code"]), "subject": {"reference": f"Patient/{PATIENT_ID}"}}
    if e.get("date"):
        res["authoredOn"] = e["date"]
    return res


BUILDERS = {"Condition": _condition, "Observation": _observation, "Procedure": _procedure,
            "MedicationRequest": _medication, "ImagingStudy": _imaging, "DiagnosticReport": _report,
            "ServiceRequest": _service_request}


def build_resource(entry: dict, index: int) -> dict:
    if "fhir" in entry:
        return entry["fhir"]
    rtype = entry["resource"]
    return BUILDERS[rtype](entry, f"{rtype[0].lower()}{index}")


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
