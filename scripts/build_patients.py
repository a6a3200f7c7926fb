"""Write the synthetic patients in cds_service/samples/patients/: FHIR R4 transaction Bundles.

Why transaction Bundles: a file loads into any FHIR server as is (POST it to the base URL; the
server assigns ids and rewrites the ``urn:uuid`` references) and turns into a CDS Hooks prefetch
for the demo and the tests.  Each file describes itself, so the folder holds nothing but Bundles
(``spine-cds load-patients`` posts every ``*.json``): the spine order being drafted is an entry
(a ServiceRequest with status ``draft``, the one a hook request names in ``draftOrders``), and
``Bundle.meta.tag`` (systems ``TAG + facet``) gives the title, payer program, hook and the decision
spine-cds must reach, which ``tests/test_synthetic_patients.py`` checks.  Coding is what EHRs send:
ICD-10-CM or SNOMED CT problems, CPT procedures, RxNorm prescriptions, LOINC labs and vitals in
UCUM, prior radiographs as ImagingStudy + DiagnosticReport.  Dates count back from 2026-11-22
(the tests pin SPINE_CDS_TODAY).  No real person is described; every resource is tagged HTEST.
Run: ``python scripts/build_patients.py``.
"""
from __future__ import annotations

import base64
import json
import uuid
from datetime import date, timedelta
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "cds_service" / "samples" / "patients"
TODAY = date(2026, 11, 22)
NAMESPACE = uuid.UUID("5b0c3e4a-8d1f-5a7e-9c2b-3f4d5e6a7b8c")
ICD, SCT, CPT = "http://hl7.org/fhir/sid/icd-10-cm", "http://snomed.info/sct", "http://www.ama-assn.org/go/cpt"
LOINC, RX, UCUM = "http://loinc.org", "http://www.nlm.nih.gov/research/umls/rxnorm", "http://unitsofmeasure.org"
PAYER = "http://example.org/fhir/sid/payer"
TAG = "https://spine-cds.example.org/fhir/CodeSystem/synthetic-patient-"
MRN = "https://spine-cds.example.org/fhir/sid/synthetic-mrn"
TERMINOLOGY = "http://terminology.hl7.org/CodeSystem/"
DICOM = "http://dicom.nema.org/resources/ontology/DCM"
HTEST = {"system": TERMINOLOGY + "v3-ActReason", "code": "HTEST", "display": "test health data"}
STUDY_NAMES = {"72131": "CT lumbar spine without contrast", "72146": "MRI thoracic spine without contrast",
               "72148": "MRI lumbar spine without contrast", "72158": "MRI lumbar spine without and with contrast"}
PAYER_NAMES = {"nia": "Evergreen Health Plan (NIA radiology benefits)", "aim": "Lakeside Health Plan (Carelon/AIM)",
               "cohere": "Summit Health Plan (Cohere Health)", "healthhelp": "Harbor Health Plan (HealthHelp)"}


def cc(system: str, code: str, display: str) -> dict:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def day(days_ago: int) -> str:
    return (TODAY - timedelta(days=days_ago)).isoformat()


def status(kind: str, code: str) -> dict:
    return {"coding": [{"system": TERMINOLOGY + kind, "code": code}]}


def quantity(value: float, unit: str) -> dict:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


class Record:
    """One patient's transaction Bundle, built entry by entry."""

    def __init__(self, name: str, given: str, family: str, birth: str, gender: str, program: str):
        self.name, self.entries, self.tags = name, [], []
        patient = self._add({"resourceType": "Patient", "identifier": [{"system": MRN, "value": name}],
                                  "name": [{"use": "official", "family": family, "given": [given]}],
                                  "gender": gender, "birthDate": birth})
        self.subject = {"reference": patient}
        self.coverage(program)

    def _add(self, resource: dict) -> str:
        full_url = f"urn:uuid:{uuid.uuid5(NAMESPACE, f'{self.name}/{len(self.entries)}')}"
        resource = {"resourceType": resource.pop("resourceType"), "meta": {"security": [HTEST]}, **resource}
        self.entries.append({"fullUrl": full_url, "resource": resource,
                             "request": {"method": "POST", "url": resource["resourceType"]}})
        return full_url

    def tag(self, facet: str, code: str, display: str | None = None) -> None:
        self.tags.append({"system": TAG + facet, "code": code, **({"display": display} if display else {})})

    def coverage(self, program: str) -> None:
        self.tag("program", program)
        payer = self._add({"resourceType": "Organization", "active": True, "name": PAYER_NAMES[program],
                           "type": [cc(TERMINOLOGY + "organization-type", "pay", "Payer")],
                           "identifier": [{"system": PAYER, "value": program}]})
        self._add({"resourceType": "Coverage", "status": "active", "beneficiary": self.subject,
                   "subscriberId": f"{program.upper()}-{uuid.uuid5(NAMESPACE, self.name).hex[:8]}",
                   "relationship": cc(TERMINOLOGY + "subscriber-relationship", "self", "Self"),
                   "period": {"start": f"{TODAY.year}-01-01"}, "payor": [{"reference": payer}]})

    def condition(self, concept: dict, days_ago: int, clinical: str = "active", verification: str = "confirmed") -> None:
        self._add({"resourceType": "Condition", "clinicalStatus": status("condition-clinical", clinical),
                   "verificationStatus": status("condition-ver-status", verification),
                   "category": [status("condition-category", "problem-list-item")],
                   "code": concept, "subject": self.subject, "onsetDateTime": day(days_ago), "recordedDate": day(days_ago)})

    def procedure(self, concept: dict, *days_ago: int) -> None:
        for days in days_ago:
            self._add({"resourceType": "Procedure", "status": "completed", "code": concept,
                       "subject": self.subject, "performedDateTime": day(days)})

    def prescription(self, concept: dict, days_ago: int, sig: str) -> None:
        self._add({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
                   "medicationCodeableConcept": concept, "subject": self.subject,
                   "authoredOn": day(days_ago), "dosageInstruction": [{"text": sig}]})

    def observation(self, category: str, concept: dict, when: str, value: float, unit: str,
                    low: float | None = None, high: float | None = None) -> None:
        resource = {"resourceType": "Observation", "status": "final", "category": [status("observation-category", category)],
                    "code": concept, "subject": self.subject, "effectiveDateTime": when, "valueQuantity": quantity(value, unit)}
        if low is not None or high is not None:
            bounds = {"low": low, "high": high}
            resource["referenceRange"] = [{k: quantity(v, unit) for k, v in bounds.items() if v is not None}]
            flag = "H" if high is not None and value > high else "L" if low is not None and value < low else "N"
            resource["interpretation"] = [status("v3-ObservationInterpretation", flag)]
        self._add(resource)

    def radiograph(self, cpt: str, display: str, days_ago: int, conclusion: str) -> None:
        """A prior study as EHRs hold it: the ImagingStudy and the radiologist's report."""
        study = self._add({"resourceType": "ImagingStudy", "status": "available", "subject": self.subject,
                           "started": f"{day(days_ago)}T10:15:00Z", "modality": [{"system": DICOM, "code": "DX"}],
                           "procedureCode": [cc(CPT, cpt, display)], "numberOfSeries": 1, "numberOfInstances": 3})
        self._add({"resourceType": "DiagnosticReport", "status": "final",
                   "category": [cc(TERMINOLOGY + "v2-0074", "RAD", "Radiology")],
                   "code": cc(CPT, cpt, display), "subject": self.subject, "effectiveDateTime": f"{day(days_ago)}T10:15:00Z",
                   "issued": f"{day(days_ago)}T14:00:00Z", "imagingStudy": [{"reference": study}], "conclusion": conclusion})

    def note(self, title: str, days_ago: int, text: str, content_type: str = "text/plain; charset=utf-8") -> None:
        """A clinical note as EHRs expose it: a DocumentReference whose attachment is base64."""
        self._add({"resourceType": "DocumentReference", "status": "current", "docStatus": "final",
                   "type": {"coding": [{"system": LOINC, "code": "11506-3", "display": "Progress note"}], "text": title},
                   "category": [cc("http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category", "clinical-note",
                                   "Clinical Note")],
                   "subject": self.subject, "date": f"{day(days_ago)}T16:30:00Z",
                   "content": [{"attachment": {"contentType": content_type,
                                               "data": base64.b64encode(text.encode("utf-8")).decode("ascii")}}],
                   "context": {"period": {"start": f"{day(days_ago)}T16:00:00Z"}}})

    def draft_order(self, cpt: str, reasons: list[dict], hook: str = "order-select") -> None:
        """The order the clinician is drafting; a hook request sends it in ``draftOrders``."""
        self.tag("hook", hook)
        self._add({"resourceType": "ServiceRequest", "status": "draft", "intent": "order",
                   "category": [cc(SCT, "363679005", "Imaging")], "code": cc(CPT, cpt, STUDY_NAMES[cpt]),
                   "subject": self.subject, "authoredOn": TODAY.isoformat(), "reasonCode": reasons})

    def bundle(self, title: str, outcome: str, features: list[str], indication: str | None = None,
               alternative: tuple[str, str] | None = None) -> dict:
        """The transaction, tagged with what it demonstrates and the decision it must get."""
        alternative_tag = ("expected-alternative", alternative[0], f"CPT {alternative[1]}") if alternative else ("", None)
        for facet, code, *display in [("title", self.name, title), ("expected-outcome", outcome),
                                      ("expected-indication", indication), alternative_tag,
                                      *(("feature", feature) for feature in features)]:
            if code:
                self.tag(facet, code, *display)
        return {"resourceType": "Bundle", "meta": {"tag": self.tags}, "type": "transaction", "entry": self.entries}


# Codes used below (each is in the value sets named in the comment, or is deliberate noise).
RADICULOPATHY = cc(ICD, "M54.16", "Radiculopathy, lumbar region")            # lumbar-back-pain, lumbar-radiculopathy
LBP_ICD = cc(ICD, "M54.50", "Low back pain, unspecified")                    # lumbar-back-pain
LBP_SCT = cc(SCT, "279039007", "Low back pain")                              # lumbar-back-pain
PT_EVAL = cc(CPT, "97161", "Physical therapy evaluation, low complexity")    # physical-therapy
PT_EXERCISE = cc(CPT, "97110", "Therapeutic exercises")                      # physical-therapy
IBUPROFEN = cc(RX, "197807", "ibuprofen 800 MG Oral Tablet")                  # nsaids
NAPROXEN = cc(RX, "198014", "naproxen 500 MG Oral Tablet")                    # nsaids
CYCLOBENZAPRINE = cc(RX, "828348", "cyclobenzaprine hydrochloride 10 MG Oral Tablet")  # muscle-relaxants
PACEMAKER = cc(ICD, "Z95.0", "Presence of cardiac pacemaker")                # mri-contraindication
PACEMAKER_INSERTION = cc(CPT, "33208", "Insertion of new or replacement of permanent pacemaker with transvenous "
                         "electrode(s); atrial and ventricular")
LABS = (("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", 60, 8.9, "%", None, 5.6),  # ESR, CRP, WBC: raised
        ("4537-7", "Erythrocyte sedimentation rate by Westergren method", 21, 78, "mm/h", 0, 20),
        ("1988-5", "C reactive protein [Mass/volume] in Serum or Plasma", 21, 96, "mg/L", 0, 10),
        ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", 21, 13.8, "10*3/uL", 4.5, 11))
VITALS = (("8867-4", "Heart rate", "/min", 60, 100, (78, 84, 90, 76)),
          ("9279-1", "Respiratory rate", "/min", 12, 20, (16, 18, 16, 14)),
          ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%", 95, None, (97, 96, 98, 97)),
          ("8310-5", "Body temperature", "Cel", 36.1, 37.8, (37.1, 37.4, 36.9, 37.2)))


def patients():
    """Yield each patient's tagged transaction Bundle (evaluation date 2026-11-22)."""
    r = Record("nia-radiculopathy-conservative-care", "Ana", "Moreno", "1971-03-14", "female", "nia")
    r.condition(RADICULOPATHY, 94)
    r.condition(cc(ICD, "E78.5", "Hyperlipidemia, unspecified"), 900)
    r.prescription(IBUPROFEN, 80, "800 mg by mouth three times a day with food")
    r.prescription(CYCLOBENZAPRINE, 80, "10 mg by mouth at bedtime as needed for spasm")
    r.procedure(PT_EVAL, 72)
    r.procedure(PT_EXERCISE, 65, 58, 51, 44, 37)
    r.draft_order("72148", [RADICULOPATHY])
    yield r.bundle("Lumbar radiculopathy after 10 weeks of physical therapy, an NSAID and a muscle relaxant "
                   "(ICD-10-CM problem list)", "approve", ["icd10-only-problems", "conservative-care"],
                   indication="conservative-care-failed")

    r = Record("nia-low-back-pain-care-in-progress", "Ben", "Okafor", "1980-07-02", "male", "nia")
    r.condition(LBP_ICD, 30)
    r.prescription(NAPROXEN, 20, "500 mg by mouth twice a day with food")
    r.procedure(PT_EVAL, 20)
    r.procedure(PT_EXERCISE, 13, 6)
    r.draft_order("72148", [LBP_ICD])
    yield r.bundle("Low back pain, physical therapy and naproxen started 3 weeks ago: documentation, with the date "
                   "6 weeks is reached", "documentation", ["icd10-only-problems", "documentation-needed"],
                   indication="conservative-care-failed")

    r = Record("nia-known-cancer-new-back-pain", "Carmen", "Alvarez", "1962-05-09", "female", "nia")
    r.condition(cc(ICD, "C50.911", "Malignant neoplasm of unspecified site of right female breast"), 700)
    r.condition(LBP_ICD, 12)
    r.procedure(cc(CPT, "19301", "Mastectomy, partial"), 650)
    r.prescription(cc(RX, "199224", "anastrozole 1 MG Oral Tablet"), 600, "1 mg by mouth daily")
    r.draft_order("72158", [LBP_ICD])
    yield r.bundle("Breast cancer under treatment, new low back pain 12 days ago: imaging for suspected metastasis",
                   "approve", ["cancer-history"], indication="known-cancer-new-back-pain")

    for xray, person in ((False, ("Gil", "Brennan", "2014-06-03", "male")), (True, ("Fay", "Nakamura", "2012-02-11", "female"))):
        r = Record(f"nia-child-back-pain-weight-loss-{'after-xray' if xray else 'no-xray'}", *person, "nia")
        r.condition(LBP_SCT, 21)
        r.condition(cc(ICD, "R63.4", "Abnormal weight loss"), 5)
        for days_ago, kg in ((95, 46.2), (5, 42.9)):
            r.observation("vital-signs", cc(LOINC, "29463-7", "Body weight"), f"{day(days_ago)}T16:20:00Z", kg, "kg")
        if xray:
            r.radiograph("72100", "X-ray lumbosacral spine, 2-3 views", 4, "No fracture or spondylolysis. Alignment normal.")
        r.draft_order("72148", [LBP_SCT])
        title = f"Child of {14 if xray else 12} with low back pain for 3 weeks and weight loss, "
        if xray:
            yield r.bundle(title + "lumbar radiographs done 4 days ago: MRI meets the pediatric red-flag indication",
                           "approve", ["prior-imaging"], indication="pediatric-back-pain-red-flags")
        else:
            yield r.bundle(title + "no radiographs yet: x-ray first", "alternative", ["x-ray-first"],
                           alternative=("pediatric-radiographs-first", "72100"))

    r = Record("nia-ct-pacemaker-radiculopathy", "Hal", "Lindqvist", "1952-10-30", "male", "nia")
    r.condition(cc(ICD, "M54.17", "Radiculopathy, lumbosacral region"), 120)
    r.condition(PACEMAKER, 2900)
    r.procedure(PACEMAKER_INSERTION, 2900)
    r.prescription(IBUPROFEN, 100, "800 mg by mouth three times a day with food")
    r.procedure(PT_EVAL, 95)
    r.procedure(PT_EXERCISE, 88, 74, 60)
    r.draft_order("72131", [cc(ICD, "M54.17", "Radiculopathy, lumbosacral region")], hook="order-sign")
    yield r.bundle("Lumbosacral radiculopathy after 13 weeks of conservative care in a patient with a pacemaker: "
                   "lumbar CT (order-sign)", "approve", ["order-sign", "mri-contraindicated"],
                   indication="conservative-care-failed")

    cauda = cc(SCT, "192970008", "Cauda equina syndrome")
    r = Record("aim-cauda-equina-snomed-only", "Ivan", "Petrov", "1968-01-19", "male", "aim")
    r.condition(LBP_SCT, 6)
    r.condition(cc(SCT, "267064002", "Retention of urine"), 1)
    r.condition(cauda, 1)
    r.condition(cc(SCT, "38341003", "Hypertensive disorder, systemic arterial"), 1500)
    r.draft_order("72148", [cauda])
    yield r.bundle("Cauda equina syndrome with urinary retention since yesterday (SNOMED CT problem list)",
                   "approve", ["snomed-only-problems", "red-flags"], indication="cauda-equina-syndrome")

    foot_drop = cc(SCT, "6077001", "Foot drop")
    r = Record("aim-pacemaker-foot-drop", "June", "Okonkwo", "1949-01-22", "female", "aim")
    r.condition(PACEMAKER, 2500)
    r.condition(cc(ICD, "I48.91", "Unspecified atrial fibrillation"), 2600)
    r.condition(foot_drop, 9)
    r.procedure(PACEMAKER_INSERTION, 2500)
    r.draft_order("72148", [foot_drop])
    yield r.bundle("New foot drop in a patient with a pacemaker: lumbar CT instead of MRI", "alternative",
                   ["mri-contraindicated"], alternative=("mri-contraindicated-ct", "72131"))

    thoracic = cc(ICD, "M54.6", "Pain in thoracic spine")
    r = Record("aim-thoracic-pain-conservative-care", "Lou", "Haddad", "1962-08-08", "male", "aim")
    r.condition(thoracic, 110)
    r.prescription(IBUPROFEN, 90, "800 mg by mouth three times a day with food")
    r.procedure(PT_EVAL, 84)
    r.procedure(PT_EXERCISE, 77, 63, 49)
    r.draft_order("72146", [thoracic])
    yield r.bundle("Thoracic pain after 12 weeks of physical therapy and an NSAID: thoracic MRI under AIM", "approve",
                   ["thoracic"], indication="thoracic-pain-adult-conservative-care")

    stenosis = cc(SCT, "18347007", "Spinal stenosis of lumbar region")
    r = Record("cohere-lumbar-stenosis-conservative-care", "Mia", "Sorensen", "1958-12-02", "female", "cohere")
    r.condition(stenosis, 150)
    r.condition(cc(SCT, "44054006", "Diabetes mellitus type 2"), 3000)
    r.prescription(NAPROXEN, 120, "500 mg by mouth twice a day with food")
    r.procedure(cc(CPT, "98940", "Chiropractic manipulative treatment, spinal, 1-2 regions"), 118, 104, 90, 76)
    r.draft_order("72148", [stenosis])
    yield r.bundle("Lumbar spinal stenosis after 4 months of chiropractic care and naproxen (SNOMED CT problem list)",
                   "approve", ["snomed-only-problems", "conservative-care"], indication="lumbar-pain-conservative-care-failed")

    discitis = cc(ICD, "M46.46", "Discitis, unspecified, lumbar region")
    r = Record("healthhelp-spine-infection-labs", "Noor", "Rahman", "1957-04-27", "male", "healthhelp")
    r.condition(cc(ICD, "E11.9", "Type 2 diabetes mellitus without complications"), 2200)
    r.condition(discitis, 3, verification="provisional")
    r.prescription(cc(RX, "861007", "metformin hydrochloride 500 MG Oral Tablet"), 2000, "500 mg by mouth twice a day")
    for code, display, days_ago, value, unit, low, high in LABS:
        r.observation("laboratory", cc(LOINC, code, display), f"{day(days_ago)}T08:05:00Z", value, unit, low, high)
    for visit, days_ago in enumerate(range(16, 0, -1)):  # a home-health visit a day
        for code, display, unit, low, high, values in VITALS:
            r.observation("vital-signs", cc(LOINC, code, display), f"{day(days_ago)}T09:{visit:02d}:00Z",
                          values[visit % len(values)], unit, low, high)
    r.draft_order("72148", [discitis])
    yield r.bundle("Diabetic patient with suspected lumbar discitis and raised ESR, CRP and white cells 3 weeks ago, "
                   "behind 64 newer vital signs (the labs are only on later pages of a paged Observation search)",
                   "approve", ["many-observations"], indication="spine-infection-signs-symptoms")

    yield from note_patients()

    r = Record("nia-thoracic-mri-no-policy", "Ida", "Kowalski", "1983-09-12", "female", "nia")
    r.condition(thoracic, 60)
    r.draft_order("72146", [thoracic])
    yield r.bundle("Thoracic MRI under NIA: no NIA thoracic guideline is encoded", "no-policy", ["no-policy"])


def note_patients():
    """Patients whose decisive evidence is only in words: a progress note, a report's conclusion."""
    for negated, person in ((False, ("Jon", "Halvorsen", "1968-01-19", "male")), (True, ("Kim", "Osei", "1975-10-30", "female"))):
        r = Record(f"nia-cauda-equina-{'note-negated' if negated else 'from-note'}", *person, "nia")
        r.condition(LBP_ICD, 9)
        r.prescription(NAPROXEN, 9, "500 mg by mouth twice a day with food")
        text = ("Chief complaint: low back pain.\n\nHPI: Low back pain x 9 days after lifting, now radiating to both legs. "
                + ("Denies saddle anesthesia, urinary retention or bowel incontinence. Walking without difficulty."
                   if negated else
                   "Since yesterday she reports saddle anesthesia and new urinary retention; she has not voided since last night.")
                + "\n\nFamily history: father had prostate cancer.\n\nPlan: MRI lumbar spine today.")
        r.note("Progress note", 0, text)
        r.draft_order("72148", [LBP_ICD])
        if negated:
            yield r.bundle("Low back pain 9 days; the note denies saddle anesthesia and bladder or bowel symptoms: the "
                           "card still asks for six weeks of care", "documentation", ["note-text", "negated-note"],
                           indication="conservative-care-failed")
        else:
            yield r.bundle("Low back pain with saddle anesthesia and urinary retention written only in today's progress "
                           "note: approved from the note", "approve", ["note-text"], indication="neuro-deficit")

    r = Record("nia-spondylolisthesis-instability-report-text", "Lea", "Fontaine", "1966-04-22", "female", "nia")
    r.condition(cc(ICD, "M43.16", "Spondylolisthesis, lumbar region"), 200)
    r.radiograph("72114", "X-ray lumbar spine with flexion and extension views", 20,
                 "Grade 1 anterolisthesis of L4 on L5 with 5 mm of translation on flexion/extension views, "
                 "consistent with dynamic instability. No fracture.")
    r.draft_order("72148", [cc(ICD, "M43.16", "Spondylolisthesis, lumbar region")])
    yield r.bundle("Spondylolisthesis; the flexion/extension radiograph report says the instability in words only "
                   "(no coded conclusion): approved from the report text", "approve", ["report-text"],
                   indication="adult-pars-spondylolisthesis-instability")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    written = []
    for bundle in patients():
        written.append(next(t["code"] for t in bundle["meta"]["tag"] if t["system"] == TAG + "title"))
        (OUT / f"{written[-1]}.json").write_text(json.dumps(bundle, indent=1) + "\n", encoding="utf-8")
    stale = [p.name for p in OUT.glob("*.json") if p.stem not in written]
    print(f"wrote {len(written)} patients to {OUT}" + (f"; not written by this script: {stale}" if stale else ""))


if __name__ == "__main__":
    main()
