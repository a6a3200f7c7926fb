"""Reading notes, measured side by side in one run (#13): the same 500-resource record without
notes, with 30 notes of about 2 KB each (≈60 KB of text; about one sentence in five mentions
something the lexicon knows, most of them negated or normal) seen for the first time, and the same
notes again (a repeated order-select: mentions come from the cache, by note content hash).

Targets (p50): first sight ≤ 5 × the no-notes call; a repeat ≤ 1.25 ×.

    .venv/bin/python bench/notes.py [--iterations 40]
"""
from __future__ import annotations

import argparse
import base64
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from records import build_request  # noqa: E402

ORDINARY = [
    "Patient is a pleasant adult seen today in follow-up, accompanied by a spouse.",
    "Vital signs reviewed: BP {a}/{b}, HR {c}, RR 16, SpO2 98% on room air.",
    "She continues her home exercise program most days of the week.",
    "Medications reviewed and reconciled with the pharmacy list dated {m}/{d}.",
    "Allergies: penicillin (rash); no known latex allergy.",
    "Social history: works as a teacher, walks {c} minutes a day, drinks socially.",
    "Discussed activity modification, heat, and a gradual return to walking.",
    "The patient asked good questions and agrees with the plan.",
    "Sleep is fair; mood is good; no new concerns at home.",
    "Labs from {m}/{d}: CBC and BMP within normal limits, A1c {e}.",
    "Reviewed the outside records that the patient brought to the visit.",
    "Diet discussed: Mediterranean pattern, fewer sugary drinks.",
    "Immunizations are up to date per the state registry.",
    "Heart regular rate and rhythm, lungs clear to auscultation bilaterally.",
    "Abdomen soft and non-tender; skin warm and dry.",
    "Follow up in {c} days or sooner as needed; after-visit summary printed.",
    "Time spent: {c} minutes, more than half in counseling and coordination of care.",
    "Work note provided for light duty for two weeks.",
]
RELEVANT = [
    "Low back pain x {w} weeks, worse with prolonged sitting, radiating to the left buttock.",
    "Denies fever, chills, weight loss, saddle anesthesia, or bowel or bladder incontinence.",
    "Family history: mother with osteoporosis; father with hypertension.",
    "Exam: strength 5/5 in both lower extremities, reflexes 2+ and symmetric.",
    "Straight leg raise is negative bilaterally.",
    "Assessment: mechanical low back pain without red flags.",
]


def sentence(rng: random.Random) -> str:
    pool = RELEVANT if rng.random() < 0.2 else ORDINARY
    return rng.choice(pool).format(a=rng.randint(100, 150), b=rng.randint(60, 95), c=rng.randint(10, 90),
                                   d=rng.randint(1, 28), m=rng.randint(1, 12), e=round(rng.uniform(5, 7), 1),
                                   w=rng.randint(2, 12))


def note(n: int, rng: random.Random, salt: str) -> dict:
    words = []
    while sum(len(s) + 1 for s in words) < 2000:
        words.append(sentence(rng))
    text = f"Progress note {n} {salt}\n" + " ".join(words)
    return {"resourceType": "DocumentReference", "id": f"note-{n}", "status": "current",
            "type": {"text": "Progress note"}, "date": f"2026-1{n % 2}-0{1 + n % 9}T10:00:00Z",
            "content": [{"attachment": {"contentType": "text/plain", "data": base64.b64encode(text.encode()).decode()}}]}


def body(request: dict, notes: int, salt: str) -> bytes:
    request = json.loads(json.dumps(request))
    rng = random.Random(7)
    request["prefetch"]["documentReferences"] = {"resourceType": "Bundle", "type": "searchset",
                                                 "entry": [{"resource": note(n, rng, salt)} for n in range(notes)]}
    return json.dumps(request).encode()


def p50(samples: list[float]) -> float:
    return sorted(samples)[len(samples) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=40, help="measured calls per case (default 40)")
    args = parser.parse_args()
    from cds_service import close_app, create_app
    with tempfile.TemporaryDirectory() as folder:
        app = create_app({"SPINE_CDS_AUTH": "off", "SPINE_CDS_DATABASE": ":memory:", "SPINE_CDS_TODAY": "2026-11-22",
                          "SPINE_CDS_REPEAT_WINDOW_S": "0", "SPINE_CDS_DATA_DIR": folder, "SPINE_CDS_LOG_LEVEL": "WARNING"})
        client = app.test_client()
        base = build_request(500)
        plain, repeated = body(base, 0, "x"), body(base, 30, "same")
        print(f"30 notes: {len(json.loads(repeated)['prefetch']['documentReferences']['entry'])} notes, "
              f"{sum(len(base64.b64decode(e['resource']['content'][0]['attachment']['data'])) for e in json.loads(repeated)['prefetch']['documentReferences']['entry']):,} characters", file=sys.stderr)
        times: dict[str, list[float]] = {"no notes": [], "30 notes, first sight": [], "30 notes, repeated": []}
        for i in range(args.iterations + 3):
            fresh = body(base, 30, f"call-{i}")     # new text every call: nothing cached
            for name, payload in (("no notes", plain), ("30 notes, first sight", fresh), ("30 notes, repeated", repeated)):
                started = time.perf_counter()
                response = client.post("/cds-services/spine-imaging-order-select", data=payload, content_type="application/json")
                elapsed = (time.perf_counter() - started) * 1000
                assert response.status_code == 200, response.get_json()
                if i >= 3:
                    times[name].append(elapsed)
            if i % 10 == 0:
                print(f"  {i}/{args.iterations + 3} rounds", file=sys.stderr)
        close_app(app)
    floor = p50(times["no notes"])
    print("| case | p50 ms | ratio to no notes | target |\n|---|--:|--:|--:|")
    for name, target in (("no notes", None), ("30 notes, first sight", 5.0), ("30 notes, repeated", 1.25)):
        ratio = p50(times[name]) / floor
        print(f"| {name} | {p50(times[name]):.2f} | {ratio:.2f}× | {f'≤ {target}×' if target else ''} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
