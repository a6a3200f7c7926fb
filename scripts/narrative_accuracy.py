"""Precision and recall of the note reader on the annotated corpus (tests/narrative/corpus.json).

A mention *counts* when the reader asserts it about the patient (not negated, family,
hypothetical or uncertain); the corpus marks such mentions ``affirmed`` or ``historical``.
Per concept and overall: precision and recall of counting mentions, plus the hard rule that
no negated, family or hypothetical row yields a counting mention of that concept.  Also how
often the region and the stated duration (±10 %) come out right.

    .venv/bin/python scripts/narrative_accuracy.py [--misses]
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cds_service.engine.narrative.durations import span_days  # noqa: E402
from cds_service.engine.narrative.reader import load_reader  # noqa: E402

COUNTING = {"affirmed", "historical"}
NEVER = {"negated", "family", "hypothetical"}
WRITTEN = date(2026, 12, 3)


def score(corpus: Path = ROOT / "tests" / "narrative" / "corpus.json", show=False, split: str = "all") -> dict:
    """``split``: ``dev`` (odd row numbers: what the lexicon may be tuned on), ``test`` (even:
    held out, never read while tuning) or ``all``."""
    reader = load_reader(ROOT / "mappings" / "narrative.json")
    rows = [row for row in json.loads(corpus.read_text(encoding="utf-8"))["rows"] if in_split(row, split)]
    tp, fp, fn, forbidden = Counter(), Counter(), Counter(), Counter()
    regions, durations = Counter(), Counter()
    misses = []
    for row in rows:
        found = reader.found(row["text"])
        said = {c.id: (m, r) for m, c, r in found if m.counts}
        gold = {m["concept"]: m for m in row["mentions"]}
        for concept, (mention, named) in said.items():
            status = gold.get(concept, {}).get("status")
            if status in COUNTING:
                tp[concept] += 1
                _check_region(gold[concept], named, regions)
                _check_duration(gold[concept], row["text"], mention, durations)
            else:
                fp[concept] += 1
                forbidden[concept] += status in NEVER
                misses.append(("FP", row["id"], concept, status, row["text"]))
        for concept, mention in gold.items():
            if mention["status"] in COUNTING and concept not in said:
                fn[concept] += 1
                misses.append(("FN", row["id"], concept, mention["status"], row["text"]))
    if show:
        for miss in misses:
            print(*miss, sep=" | ")
    concepts = sorted(set(tp) | set(fp) | set(fn))
    per = {c: _pr(tp[c], fp[c], fn[c]) | {"forbidden": forbidden[c]} for c in concepts}
    total = _pr(sum(tp.values()), sum(fp.values()), sum(fn.values())) | {"forbidden": sum(forbidden.values())}
    return {"rows": len(rows), "overall": total, "concepts": per,
            "region_right": _share(regions), "duration_right": _share(durations)}


def in_split(row: dict, split: str) -> bool:
    number = int("".join(ch for ch in row["id"] if ch.isdigit()) or 0)
    return split == "all" or (split == "dev") == (number % 2 == 1)


def _check_region(gold: dict, named: frozenset[str], tally: Counter) -> None:
    if "region" in gold:
        tally["right" if not named or gold["region"] in named else "wrong"] += 1


def _check_duration(gold: dict, text: str, mention, tally: Counter) -> None:
    if "duration_days" in gold:
        days = span_days(text[mention.sentence_start:mention.sentence_end], mention.start - mention.sentence_start, WRITTEN)
        tally["right" if days and abs(days - gold["duration_days"]) <= 0.1 * gold["duration_days"] else "wrong"] += 1


def _pr(tp: int, fp: int, fn: int) -> dict:
    return {"tp": tp, "fp": fp, "fn": fn, "precision": round(tp / (tp + fp), 3) if tp + fp else 1.0,
            "recall": round(tp / (tp + fn), 3) if tp + fn else 1.0}


def _share(tally: Counter) -> dict:
    total = tally["right"] + tally["wrong"]
    return {"right": tally["right"], "of": total, "share": round(tally["right"] / total, 3) if total else 1.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--misses", action="store_true", help="print every false positive and false negative")
    parser.add_argument("--corpus", type=Path, default=ROOT / "tests" / "narrative" / "corpus.json",
                        help="annotated corpus (default: tests/narrative/corpus.json)")
    parser.add_argument("--split", choices=("all", "dev", "test"), default="all",
                        help="dev: odd rows (tune on these); test: even rows (held out); default: all")
    args = parser.parse_args()
    result = score(args.corpus, show=args.misses, split=args.split)
    print(f"{result['rows']} rows ({args.split})")
    print("concept                         precision  recall   tp  fp  fn  negated/family/hypothetical counted")
    for concept, r in result["concepts"].items():
        print(f"{concept:32}{r['precision']:9.3f}{r['recall']:8.3f}{r['tp']:5}{r['fp']:4}{r['fn']:4}  {r['forbidden']}")
    o = result["overall"]
    print(f"{'OVERALL':32}{o['precision']:9.3f}{o['recall']:8.3f}{o['tp']:5}{o['fp']:4}{o['fn']:4}  {o['forbidden']}")
    print(f"region right: {result['region_right']}; stated duration right (±10 %): {result['duration_right']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
