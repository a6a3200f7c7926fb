"""``spine-cds demo``: decide the bundled synthetic patients' orders and print the cards.

Each sample in ``cds_service/samples/`` is a complete CDS Hooks request (prefetch included) for a
synthetic patient; ``index.json`` says what each one shows.  Then each synthetic patient of
``cds_service/samples/patients/`` (a FHIR transaction Bundle, the same ones ``spine-cds
load-patients`` puts on a FHIR server) is sent as the request an EHR would make for its draft
order, and its card is checked against the decision its tags promise.  In-process, auth off.
"""
from __future__ import annotations

import json
import textwrap
from datetime import date
from pathlib import Path


def run_demo(samples: Path, today: date, as_json: bool = False) -> int:
    from cds_service.tools.batch import offline_response
    index = json.loads((samples / "index.json").read_text(encoding="utf-8"))
    failures = 0
    for n, sample in enumerate(index["samples"], 1):
        body = json.loads((samples / sample["file"]).read_text(encoding="utf-8"))
        status, response = offline_response(body, today)
        print(f"\n[{n}/{len(index['samples'])}] {sample['title']}  ({sample['file']})")
        if status != 200:
            failures += 1
            print(f"  HTTP {status}: {response}")
            continue
        if as_json:
            print(textwrap.indent(json.dumps(response, indent=2), "  "))
            continue
        if not response["cards"]:
            print("  no card: not a spine CT/MRI order")
        for card in response["cards"]:
            decision = card["extension"]["spine-cds.decision"]
            print(f"  {decision['outcome'].upper():<13} {card['summary']}")
            print(f"  {'':<13} program={decision['program']} guideline={decision['guideline']} "
                  f"indication={decision['indication']}")
            for suggestion in card.get("suggestions", []):
                print(f"  {'':<13} suggestion: {suggestion['label']}")
    failures += _patients(today, as_json)
    print(f"\n{len(index['samples'])} requests and the synthetic patients decided as of {today.isoformat()}; "
          f"`spine-cds demo --json` prints the full responses.")
    return 1 if failures else 0


def _patients(today: date, as_json: bool) -> int:
    """Decide every synthetic patient Bundle's draft order; count those that miss their tags."""
    from cds_service.tools.batch import OfflineEvaluator
    from cds_service.tools.patients import as_prefetch, describe, hook_request, load_bundle, local_ids, patient_files
    files, failures = patient_files(), 0
    print(f"\nSynthetic patients ({len(files)} FHIR transaction Bundles in cds_service/samples/patients/):")
    with OfflineEvaluator(today) as evaluator:
        for n, path in enumerate(files, 1):
            bundle = load_bundle(path)
            about = describe(bundle)
            body = hook_request(bundle, local_ids(bundle), prefetch=as_prefetch(bundle),
                                instance=f"00000000-0000-4000-8000-{n:012d}")
            status, response = evaluator.evaluate(body)
            cards = response.get("cards", []) if status == 200 and response else []
            outcome = cards[0]["extension"]["spine-cds.decision"]["outcome"] if cards else f"HTTP {status}"
            ok = outcome == about["expect"]["outcome"]
            failures += not ok
            print(f"\n[{n}/{len(files)}] {about['title']}  ({path.name}, program {about['program']})")
            if as_json:
                print(textwrap.indent(json.dumps(response, indent=2), "  "))
            for card in cards:
                print(f"  {outcome.upper():<13} {card['summary']}")
                for line in quoted_evidence(card):
                    print(f"  {'':<13} from the text: {line}")
            if not ok:
                print(f"  expected {about['expect']['outcome']}, got {outcome}")
    return failures


def quoted_evidence(card: dict, limit: int = 2) -> list[str]:
    """The card's evidence lines that quote a note or report (engine/narrative), shortened."""
    lines = [line.removeprefix("- ") for line in card.get("detail", "").splitlines() if "\u2018" in line]
    return [line if len(line) <= 200 else line[:199] + "\u2026" for line in dict.fromkeys(lines)][:limit]
