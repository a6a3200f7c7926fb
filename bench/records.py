"""Synthetic, deterministic order-select requests with a FULL prefetch of a chosen size.

Why synthetic: the bundled samples hold a handful of resources, but the performance question is
how the service scales with a long chart (hundreds to thousands of resources).  The request shape
is the radiculopathy sample's (same draft order, patient and coverage, its clinical resources
kept, so the decision path is the real one); around it we add a seeded-random but realistic mix
of Conditions (ICD-10-CM and SNOMED CT), Procedures (CPT, dated), MedicationRequests (RxNorm),
Observations (LOINC, with values), a few ImagingStudies, DiagnosticReports, ServiceRequests and
QuestionnaireResponses.  Every key of ``cds_service.record.prefetch.PREFETCH`` is present.
"""
from __future__ import annotations

import copy
import json
import random
from datetime import date, timedelta
from pathlib import Path

from cds_service.record.prefetch import PREFETCH

TEMPLATE = Path(__file__).resolve().parent.parent / "cds_service/samples/radiculopathy-conservative-care-failed.json"
TODAY = date(2026, 11, 22)
HOOK_INSTANCE = "00000000-0000-4000-8000-000000000000"
"""Placeholder in the serialised body; :func:`with_instance` swaps in a fresh UUID per call."""

ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
SCT = "http://snomed.info/sct"
CPT = "http://www.ama-assn.org/go/cpt"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"

CONDITIONS = [(ICD10, "M54.16", "Radiculopathy, lumbar region"), (ICD10, "M54.50", "Low back pain, unspecified"),
              (ICD10, "M51.26", "Other intervertebral disc displacement, lumbar region"),
              (ICD10, "M48.061", "Spinal stenosis, lumbar region without neurogenic claudication"),
              (ICD10, "E11.9", "Type 2 diabetes mellitus without complications"), (ICD10, "I10", "Essential hypertension"),
              (ICD10, "J45.909", "Unspecified asthma, uncomplicated"), (ICD10, "F41.1", "Generalized anxiety disorder"),
              (ICD10, "E78.5", "Hyperlipidemia, unspecified"), (ICD10, "M25.561", "Pain in right knee"),
              (SCT, "279039007", "Low back pain"), (SCT, "44054006", "Diabetes mellitus type 2"),
              (SCT, "38341003", "Hypertensive disorder"), (SCT, "195967001", "Asthma"),
              (SCT, "162864005", "Body mass index 30+ - obesity"), (SCT, "55822004", "Hyperlipidemia")]
PROCEDURES = [(CPT, "97110", "Therapeutic exercises"), (CPT, "97140", "Manual therapy techniques"),
              (CPT, "98940", "Chiropractic manipulative treatment, 1-2 regions"),
              (CPT, "99213", "Office or other outpatient visit, established patient"),
              (CPT, "72100", "X-ray lumbosacral spine, 2 or 3 views"), (CPT, "20610", "Arthrocentesis, major joint"),
              (CPT, "36415", "Collection of venous blood by venipuncture"), (CPT, "93000", "Electrocardiogram, complete")]
MEDICATIONS = [(RXNORM, "197807", "ibuprofen 800 MG Oral Tablet"), (RXNORM, "198440", "acetaminophen 500 MG Oral Tablet"),
               (RXNORM, "860975", "metformin hydrochloride 500 MG Oral Tablet"),
               (RXNORM, "314076", "lisinopril 10 MG Oral Tablet"), (RXNORM, "617312", "atorvastatin 10 MG Oral Tablet"),
               (RXNORM, "310431", "gabapentin 300 MG Oral Capsule"),
               (RXNORM, "197591", "diazepam 5 MG Oral Tablet"), (RXNORM, "745679", "albuterol 90 MCG/ACTUAT inhaler")]
OBSERVATIONS = [("8867-4", "Heart rate", "/min", 55, 100), ("8480-6", "Systolic blood pressure", "mm[Hg]", 100, 160),
                ("8462-4", "Diastolic blood pressure", "mm[Hg]", 60, 100), ("29463-7", "Body weight", "kg", 50, 120),
                ("39156-5", "Body mass index", "kg/m2", 18, 40), ("2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", 70, 200),
                ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 4.5, 10),
                ("72514-3", "Pain severity - 0-10 verbal numeric rating", "{score}", 0, 10)]
IMAGING = [(CPT, "72100", "X-ray lumbosacral spine, 2 or 3 views", "DX"), (CPT, "71046", "X-ray chest, 2 views", "DX"),
           (CPT, "73721", "MRI any joint of lower extremity without contrast", "MR")]

MIX = [("conditions", 0.22), ("procedures", 0.20), ("medicationRequests", 0.14), ("observations", 0.36),
       ("imagingStudies", 0.02), ("diagnosticReports", 0.03), ("serviceRequests", 0.02), ("questionnaireResponses", 0.01)]
"""Share of each key in the generated part of the record (observations dominate real charts)."""

SPINE_CODES = frozenset({"M54.16", "M54.50", "M51.26", "M48.061", "279039007", "97110", "97140", "98940", "72100",
                         "197807", "198440", "310431", "197591"})
"""Codes some spine guideline reads: left out of a ``background`` record, so the decision is the
template's own (e.g. documentation needed) however long the chart grows."""


def _concept(system: str, code: str, display: str) -> dict:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _day(rng: random.Random) -> str:
    return (TODAY - timedelta(days=rng.randint(1, 3 * 365))).isoformat()


def _resource(key: str, rid: str, patient: dict, rng: random.Random, skip: frozenset[str] = frozenset()) -> dict:
    """One random resource for ``key`` (plain dicts, as a FHIR server would send them), with no
    code in ``skip``."""
    subject = {"reference": f"Patient/{patient['id']}"}

    def pick(options: list[tuple]) -> tuple:
        return rng.choice([o for o in options if o[1] not in skip] if skip else options)
    if key == "conditions":
        return {"resourceType": "Condition", "id": rid, "subject": subject, "code": _concept(*pick(CONDITIONS)),
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                               "code": rng.choice(["active", "active", "resolved"])}]},
                "onsetDateTime": _day(rng)}
    if key == "procedures":
        return {"resourceType": "Procedure", "id": rid, "status": "completed", "subject": subject,
                "code": _concept(*pick(PROCEDURES)), "performedDateTime": _day(rng)}
    if key == "medicationRequests":
        return {"resourceType": "MedicationRequest", "id": rid, "status": rng.choice(["active", "completed", "stopped"]),
                "intent": "order", "subject": subject, "medicationCodeableConcept": _concept(*pick(MEDICATIONS)),
                "authoredOn": _day(rng)}
    if key == "observations":
        code, name, unit, low, high = rng.choice(OBSERVATIONS)
        return {"resourceType": "Observation", "id": rid, "status": "final", "subject": subject,
                "code": _concept(LOINC, code, name), "effectiveDateTime": _day(rng),
                "valueQuantity": {"value": round(rng.uniform(low, high), 1), "unit": unit,
                                  "system": "http://unitsofmeasure.org", "code": unit}}
    if key == "imagingStudies":
        system, code, name, modality = pick(IMAGING)
        return {"resourceType": "ImagingStudy", "id": rid, "status": "available", "subject": subject,
                "started": _day(rng), "procedureCode": [_concept(system, code, name)],
                "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": modality}]}
    if key == "diagnosticReports":
        return {"resourceType": "DiagnosticReport", "id": rid, "status": "final", "subject": subject,
                "code": _concept(LOINC, "24323-8", "Comprehensive metabolic 2000 panel"), "effectiveDateTime": _day(rng)}
    if key == "serviceRequests":
        return {"resourceType": "ServiceRequest", "id": rid, "status": "completed", "intent": "order",
                "subject": subject, "code": _concept(*pick(PROCEDURES)), "authoredOn": _day(rng)}
    return {"resourceType": "QuestionnaireResponse", "id": rid, "status": "completed", "subject": subject,
            "questionnaire": "http://example.org/fhir/Questionnaire/phq-9", "authored": _day(rng),
            "item": [{"linkId": "total", "answer": [{"valueInteger": rng.randint(0, 27)}]}]}


def _bundle(resources: list[dict]) -> dict:
    base = "https://ehr.example.org/fhir"
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r} for r in resources]}


def build_request(size: int, seed: int = 20261122, template: Path = TEMPLATE, background: bool = False) -> dict:
    """An order-select request whose prefetch holds ``size`` clinical resources (all keys present),
    built around ``template`` (a sample request of cds_service/samples/); with ``background`` the
    added resources name nothing a spine guideline reads (:data:`SPINE_CODES`)."""
    request = json.loads(template.read_text())
    request["hookInstance"] = HOOK_INSTANCE
    prefetch = request["prefetch"]
    patient = prefetch["patient"]
    rng = random.Random(seed)
    by_key: dict[str, list[dict]] = {}
    for key, value in prefetch.items():  # keep the sample's own clinical resources (they drive the decision)
        if key not in ("patient", "coverage") and isinstance(value, dict):
            by_key[key] = [copy.deepcopy(e["resource"]) for e in value.get("entry", [])]
    have = sum(len(v) for v in by_key.values())
    keys, weights = zip(*MIX)
    for n, key in enumerate(rng.choices(keys, weights, k=max(0, size - have))):
        by_key.setdefault(key, []).append(_resource(key, f"bench-{n}", patient, rng, SPINE_CODES if background else frozenset()))
    for key in PREFETCH:
        if key not in ("patient", "coverage"):
            prefetch[key] = _bundle(by_key.get(key, []))
    assert set(PREFETCH) <= set(prefetch), "every prefetch key must be present"
    return request


def request_body(size: int, template: Path = TEMPLATE, background: bool = False) -> bytes:
    """The serialised request, with :data:`HOOK_INSTANCE` as a placeholder."""
    return json.dumps(build_request(size, template=template, background=background), separators=(",", ":")).encode()


def with_instance(body: bytes, instance: str) -> bytes:
    """``body`` with a fresh hookInstance (same length UUID, so nothing else shifts)."""
    return body.replace(HOOK_INSTANCE.encode(), instance.encode(), 1)


def resource_count(request: dict) -> int:
    """Clinical resources in the prefetch (patient and coverage not counted)."""
    return sum(len(v.get("entry", [])) for k, v in request["prefetch"].items()
               if k not in ("patient", "coverage") and isinstance(v, dict))
