"""Write the demo hook requests in cds_service/samples/ (synthetic patients, no real PHI).

Each sample is a complete CDS Hooks request with prefetch, written for the evaluation date
2026-11-22 (``spine-cds demo`` uses it).  Run: ``python scripts/build_samples.py``.
"""
from __future__ import annotations

import json
import uuid
from datetime import date, timedelta
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "cds_service" / "samples"
ICD, SCT, CPT = "http://hl7.org/fhir/sid/icd-10-cm", "http://snomed.info/sct", "http://www.ama-assn.org/go/cpt"
LOINC, RX = "http://loinc.org", "http://www.nlm.nih.gov/research/umls/rxnorm"
PAYER = "http://example.org/fhir/sid/payer"


def cc(system, code, display):
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def bundle(*resources):
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"fullUrl": f"https://ehr.example.org/fhir/{r['resourceType']}/{r['id']}", "resource": r}
                      for r in resources]} if resources else None


class Patient:
    def __init__(self, pid, birth, gender):
        self.pid, self.birth, self.gender, self.n = pid, birth, gender, 0

    def _id(self, prefix):
        self.n += 1
        return f"{prefix}-{self.pid}-{self.n}"

    def condition(self, concept, onset, status="active"):
        return {"resourceType": "Condition", "id": self._id("cond"), "subject": {"reference": f"Patient/{self.pid}"},
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": status}]},
                "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "problem-list-item"}]}],
                "code": concept, **({"onsetDateTime": onset} if onset else {})}

    def procedure(self, concept, day):
        return {"resourceType": "Procedure", "id": self._id("proc"), "status": "completed",
                "subject": {"reference": f"Patient/{self.pid}"}, "code": concept, "performedDateTime": day}

    def therapy(self, concept, first, last):
        """Weekly visits from ``first`` to ``last``: a course of therapy as a chart shows it."""
        start, end = date.fromisoformat(first), date.fromisoformat(last)
        return [self.procedure(concept, (start + timedelta(days=7 * n)).isoformat())
                for n in range((end - start).days // 7 + 1)]

    def prescription(self, concept, day, supply_days=30, refills=0):
        return {"resourceType": "MedicationRequest", "id": self._id("medrx"), "status": "active", "intent": "order",
                "subject": {"reference": f"Patient/{self.pid}"}, "medicationCodeableConcept": concept, "authoredOn": day,
                "dispenseRequest": {"numberOfRepeatsAllowed": refills,
                                    "expectedSupplyDuration": {"value": supply_days, "unit": "days",
                                                               "system": "http://unitsofmeasure.org", "code": "d"}}}

    def lab(self, concept, day, value, unit, flag):
        return {"resourceType": "Observation", "id": self._id("obs"), "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
                "subject": {"reference": f"Patient/{self.pid}"}, "code": concept, "effectiveDateTime": day,
                "valueQuantity": {"value": value, "unit": unit},
                "interpretation": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": flag}]}]}


def follow_up_attestation(patient, day):
    """A completed QuestionnaireResponse to spine-cds's form for NIA's post-treatment follow-up."""
    from cds_service.cards.questionnaires import canonical, link_id
    label = ("Medical reason why follow-up imaging of this area is needed "
             "(routine post-op surveillance without symptoms is not covered)")
    return {"resourceType": "QuestionnaireResponse", "id": patient._id("qr"), "status": "completed",
            "questionnaire": canonical("nia-lumbar-spine-mri", "post-treatment-follow-up"),
            "subject": {"reference": f"Patient/{patient.pid}"}, "authored": day,
            "item": [{"linkId": link_id(label), "text": label, "answer": [{"valueBoolean": True}]}]}


def request(name, patient, cpt, cpt_display, reasons, *, hook="order-select", payer="nia", conditions=(),
            procedures=(), medications=(), observations=(), imaging=(), attestations=()):
    order = {"resourceType": "ServiceRequest", "id": f"sr-{name}", "status": "draft", "intent": "order",
             "subject": {"reference": f"Patient/{patient.pid}"}, "requester": {"reference": "Practitioner/demo-clinician"},
             "authoredOn": "2026-11-22", "code": cc(CPT, cpt, cpt_display), "reasonCode": reasons}
    prefetch = {"patient": {"resourceType": "Patient", "id": patient.pid, "gender": patient.gender, "birthDate": patient.birth,
                            "name": [{"family": "Demo", "given": [name.split("-")[0].capitalize()]}]},
                "conditions": bundle(*conditions), "procedures": bundle(*procedures),
                "medicationRequests": bundle(*medications), "observations": bundle(*observations),
                "imagingStudies": bundle(*imaging), "diagnosticReports": None, "serviceRequests": None,
                "questionnaireResponses": bundle(*attestations), "coverage": None,
                "medicationStatements": None, "devices": None}
    if payer:
        prefetch["coverage"] = bundle(
            {"resourceType": "Coverage", "id": f"cov-{patient.pid}", "status": "active",
             "beneficiary": {"reference": f"Patient/{patient.pid}"}, "payor": [{"reference": f"Organization/payer-{payer}"}]},
            {"resourceType": "Organization", "id": f"payer-{payer}", "name": f"Demo Health Plan ({payer})",
             "identifier": [{"system": PAYER, "value": payer}]})
    context = {"userId": "Practitioner/demo-clinician", "patientId": patient.pid,
               "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": order}]}}
    if hook == "order-select":
        context["selections"] = [f"ServiceRequest/{order['id']}"]
    return {"hook": hook, "hookInstance": str(uuid.uuid5(uuid.NAMESPACE_URL, f"spine-cds-demo/{name}")),
            "fhirServer": "https://ehr.example.org/fhir", "context": context, "prefetch": prefetch}


def samples():
    radic = cc(ICD, "M54.16", "Radiculopathy, lumbar region")
    lbp_sct = cc(SCT, "279039007", "Low back pain")
    pt = cc(CPT, "97110", "Therapeutic exercises")
    ibuprofen = cc(RX, "197807", "ibuprofen 800 MG Oral Tablet")

    p = Patient("demo-ana", "1971-03-14", "female")
    yield ("radiculopathy-conservative-care-failed", "Lumbar radiculopathy after 10 weeks of PT and an NSAID (NIA payer)", "approve",
           request("ana", p, "72148", "MRI lumbar spine without contrast", [radic],
                   conditions=[p.condition(radic, "2026-08-20")],
                   procedures=p.therapy(pt, "2026-09-15", "2026-11-17"),
                   medications=[p.prescription(ibuprofen, "2026-09-10", refills=2)]))
    p = Patient("demo-ben", "1980-07-02", "male")
    yield ("low-back-pain-care-in-progress", "Low back pain, PT started 4 weeks ago: documentation, with the date 6 weeks is reached", "documentation",
           request("ben", p, "72148", "MRI lumbar spine without contrast", [cc(ICD, "M54.50", "Low back pain, unspecified")],
                   conditions=[p.condition(cc(ICD, "M54.50", "Low back pain, unspecified"), "2026-10-15")],
                   procedures=p.therapy(pt, "2026-10-22", "2026-11-19"), medications=[p.prescription(ibuprofen, "2026-10-22")]))
    p = Patient("demo-carl", "1958-11-30", "male")
    yield ("cauda-equina-snomed-only", "Cauda equina syndrome, coded in SNOMED CT only, no Coverage (default program)", "approve",
           request("carl", p, "72148", "MRI lumbar spine without contrast", [cc(SCT, "192970008", "Cauda equina syndrome")], payer=None))
    p = Patient("demo-dina", "2026-09-10", "female")
    yield ("infant-sacral-dimple", "Infant of 2 months with a sacral dimple: spinal ultrasound instead", "alternative",
           request("dina", p, "72148", "MRI lumbar spine without contrast", [cc(ICD, "Q82.6", "Congenital sacral dimple")],
                   conditions=[p.condition(cc(ICD, "Q82.6", "Congenital sacral dimple"), "2026-09-10")]))
    p = Patient("demo-ed", "1949-01-22", "male")
    yield ("pacemaker-mri-contraindicated", "Foot drop in a patient with a pacemaker: CT instead of MRI", "alternative",
           request("ed", p, "72148", "MRI lumbar spine without contrast", [cc(SCT, "6077001", "Foot drop")],
                   conditions=[p.condition(cc(ICD, "Z95.0", "Presence of cardiac pacemaker"), "2019-05-01"),
                               p.condition(cc(SCT, "6077001", "Foot drop"), "2026-11-15")]))
    p = Patient("demo-fay", "2014-04-18", "female")
    yield ("child-back-pain-red-flags-no-xray", "Child of 12 with back pain and a limp, no radiographs yet: x-ray first", "alternative",
           request("fay", p, "72148", "MRI lumbar spine without contrast", [lbp_sct],
                   conditions=[p.condition(lbp_sct, "2026-11-01"), p.condition(cc(SCT, "16973004", "Limping"), "2026-11-15")]))
    p = Patient("demo-gus", "1966-02-09", "male")
    yield ("sandbox-style-low-back-pain", "CDS Hooks sandbox-style call: SNOMED low back pain only, no Coverage, no history", "documentation",
           request("gus", p, "72148", "MRI lumbar spine without contrast", [lbp_sct], payer=None))
    p = Patient("demo-hal", "1975-06-25", "male")
    yield ("order-sign-with-coverage", "order-sign with Coverage: approval plus CRD coverage information", "approve",
           request("hal", p, "72148", "MRI lumbar spine without contrast", [radic], hook="order-sign",
                   conditions=[p.condition(radic, "2026-06-01")],
                   procedures=p.therapy(pt, "2026-08-01", "2026-09-30"),
                   medications=[p.prescription(ibuprofen, "2026-07-28", refills=2)]))
    for payer, expect in (("nia", "documentation"), ("healthhelp", "approve")):
        p = Patient(f"demo-kim-{payer}", "1977-01-15", "female")
        yield (f"physical-therapy-alone-{payer}",
               f"Low back pain after 7 weeks of physical therapy, an NSAID tried in July, "
               f"{payer.upper() if payer == 'nia' else 'HealthHelp'} payer "
               f"({'active AND inactive care in one course' if payer == 'nia' else 'active care for 6 weeks, passive care within 6 months'})",
               expect,
               request(f"kim-{payer}", p, "72148", "MRI lumbar spine without contrast", [cc(ICD, "M54.50", "Low back pain, unspecified")],
                       payer=payer, conditions=[p.condition(cc(ICD, "M54.50", "Low back pain, unspecified"), "2026-09-01")],
                       procedures=p.therapy(pt, "2026-10-01", "2026-11-19"),
                       medications=[p.prescription(ibuprofen, "2026-07-01", supply_days=14)]))
    p = Patient("demo-lou", "1962-08-08", "male")
    yield ("thoracic-mri-aim", "Thoracic MRI under AIM after therapy and an NSAID: AIM covers the thoracic spine", "approve",
           request("lou", p, "72146", "MRI thoracic spine without contrast", [cc(ICD, "M54.6", "Pain in thoracic spine")], payer="aim",
                   conditions=[p.condition(cc(ICD, "M54.6", "Pain in thoracic spine"), "2026-08-20")],
                   procedures=p.therapy(pt, "2026-09-01", "2026-10-20"), medications=[p.prescription(ibuprofen, "2026-09-01", refills=1)]))
    laminectomy = cc(CPT, "63047", "Laminectomy, lumbar, single segment")
    for attested in (False, True):
        p = Patient(f"demo-max-{'yes' if attested else 'no'}", "1969-04-03", "male")
        answers = [follow_up_attestation(p, "2026-11-21")] if attested else []
        yield (f"post-op-follow-up-{'attested' if attested else 'needs-reason'}",
               "Follow-up MRI 9 weeks after lumbar laminectomy: " + ("the clinician attested the medical reason in "
               "the linked form (QuestionnaireResponse)" if attested else "the card links a form asking for the medical reason"),
               "approve" if attested else "documentation",
               request(f"max-{'yes' if attested else 'no'}", p, "72148", "MRI lumbar spine without contrast",
                       [cc(ICD, "M96.1", "Postlaminectomy syndrome, not elsewhere classified")],
                       procedures=[p.procedure(laminectomy, "2026-09-18")], attestations=answers))
    p = Patient("demo-ida", "1983-09-12", "female")
    yield ("thoracic-mri-no-policy", "Thoracic MRI under NIA: no NIA thoracic guideline is encoded", "no-policy",
           request("ida", p, "72146", "MRI thoracic spine without contrast", [cc(ICD, "M54.6", "Pain in thoracic spine")]))
    p = Patient("demo-jon", "1990-12-01", "male")
    yield ("brain-mri-not-ours", "Brain MRI: not a spine CT/MRI order, so no card", None,
           request("jon", p, "70551", "MRI brain without contrast", [cc(ICD, "R51.9", "Headache, unspecified")]))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    index = []
    for name, title, expect, body in samples():
        (OUT / f"{name}.json").write_text(json.dumps(body, indent=1) + "\n")
        index.append({"file": f"{name}.json", "title": title, **({"expect": expect} if expect else {})})
    (OUT / "index.json").write_text(json.dumps({"today": "2026-11-22", "samples": index}, indent=1) + "\n")
    print(f"wrote {len(index)} samples to {OUT}")


if __name__ == "__main__":
    main()
