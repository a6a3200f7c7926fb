"""``spine-cds demo``: decide the bundled synthetic patients' orders and print the cards.

Each sample in ``cds_service/samples/`` is a complete CDS Hooks request (prefetch included) for a
synthetic patient; ``index.json`` says what each one shows.  They run in-process, auth off.
"""
from __future__ import annotations

import json
import textwrap
from datetime import date
from pathlib import Path


def run_demo(samples: Path, today: date, as_json: bool = False) -> int:
    from .cli import offline_response
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
    print(f"\n{len(index['samples'])} requests decided as of {today.isoformat()}; "
          f"`spine-cds demo --json` prints the full responses.")
    return 1 if failures else 0
