"""Batch evaluation: many hook requests through one in-process app, then a summary.

Why: before switching a program or a guideline on, an operator wants to replay a day of real
requests (or a folder of test patients) and see how many orders would be approved, offered an
alternative or sent back for documentation — and whether any request fails.  Creating an app
loads every guideline and value set, so a batch reuses one :class:`OfflineEvaluator` instead of
one app per request.  Inputs are a folder of ``*.json`` request files or an NDJSON file (one
request per line); a broken file or line is counted and named, never fatal.  Aggregation and
rendering are pure functions over :class:`Result` values, so they are tested without an app.
"""
from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TextIO

from cds_service.protocol.report import text_table

OUTCOMES = ("approve", "alternative", "documentation", "no-policy")
DECIDED = ("approve", "alternative", "documentation")  # no-policy: no guideline decided the order
NDJSON_SUFFIXES = (".ndjson", ".jsonl")
LIST_LIMIT = 20  # invalid/skipped inputs named in the text summary; --json lists them all
# Card links offline: SPINE_CDS_PUBLIC_BASE_URL when set, else where `spine-cds serve` listens by
# default — never the test client's http://localhost, which no browser reaches.
OFFLINE_BASE_URL = "http://127.0.0.1:8080"


def offline_base_url(environ=os.environ) -> str:
    """The base URL of the card links an offline evaluation writes (see OFFLINE_BASE_URL)."""
    return (environ.get("SPINE_CDS_PUBLIC_BASE_URL") or "").strip() or OFFLINE_BASE_URL


class OfflineEvaluator:
    """One app (auth off, decisions kept in memory only) that answers many requests in-process."""

    def __init__(self, today: date | None = None):
        from cds_service import create_app
        # Requests are independent here: repeat suppression off (window 0) keeps an order-sign
        # card that an earlier order-select in the same batch showed (the service would leave it out).
        config = {**os.environ, "SPINE_CDS_AUTH": "off", "SPINE_CDS_DATABASE": ":memory:",
                  "SPINE_CDS_LOG_LEVEL": "ERROR", "SPINE_CDS_REPEAT_WINDOW_S": "0",
                  "SPINE_CDS_PUBLIC_BASE_URL": offline_base_url()}
        if today:
            config["SPINE_CDS_TODAY"] = today.isoformat()
        self.app = create_app(config)
        self.client = self.app.test_client()

    def evaluate(self, body: object) -> tuple[int, dict | None]:
        """POST one request body to the service its ``hook`` names; (HTTP status, JSON answer)."""
        hook = body.get("hook") if isinstance(body, dict) else None
        service = "spine-imaging-order-sign" if hook == "order-sign" else "spine-imaging-order-select"
        response = self.client.post(f"/cds-services/{service}", json=body)
        return response.status_code, response.get_json(silent=True)

    def close(self) -> None:
        from cds_service import close_app
        close_app(self.app)

    def __enter__(self) -> OfflineEvaluator:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def offline_response(body: object, today: date | None) -> tuple[int, dict]:
    """Run one request body through the app in-process (no network server, auth off).

    Builds an app per call; to run many requests use :class:`cds_service.tools.batch.OfflineEvaluator`.
    """
    with OfflineEvaluator(today) as evaluator:
        return evaluator.evaluate(body)


@dataclass(frozen=True)
class Result:
    """What happened to one input (a file or an NDJSON line)."""

    source: str                         # file name, or "line N"
    kind: str                           # evaluated | failed | invalid | skipped
    status: int | None = None
    decisions: tuple[dict, ...] = ()    # each card's extension["spine-cds.decision"]
    error: str | None = None


def is_batch(path: Path) -> bool:
    return path.is_dir() or path.suffix.lower() in NDJSON_SUFFIXES


def read_inputs(path: Path) -> tuple[int, Iterator[tuple[str, object]]]:
    """(how many inputs, iterator of (source, parsed body or an invalid Result)); lazy for big files."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".json" and p.is_file())
        return len(files), ((f.name, _parse(f.name, f.read_bytes)) for f in files)
    with path.open("rb") as stream:
        total = sum(1 for raw in stream if raw.strip())

    def lines() -> Iterator[tuple[str, object]]:
        with path.open("rb") as stream:
            for number, raw in enumerate(stream, 1):
                if raw.strip():
                    yield f"line {number}", _parse(f"line {number}", lambda raw=raw: raw)
    return total, lines()


def _parse(source: str, read) -> object:
    try:
        return json.loads(read().decode("utf-8"))
    except OSError as exc:
        return Result(source, "invalid", error=f"cannot read: {exc.strerror or exc}")
    except UnicodeDecodeError:
        return Result(source, "invalid", error="not UTF-8 text")
    except (ValueError, RecursionError) as exc:
        return Result(source, "invalid", error=f"not valid JSON ({exc if isinstance(exc, ValueError) else 'nested too deeply'})")


def evaluate_one(evaluator: OfflineEvaluator, source: str, body: object) -> Result:
    """Classify and run one parsed input."""
    if isinstance(body, Result):
        return body
    if not isinstance(body, dict) or "hook" not in body:
        return Result(source, "skipped", error='not a hook request (no "hook" member)')
    try:
        status, answer = evaluator.evaluate(body)
    except Exception as exc:  # noqa: BLE001 — one bad request must not end the batch
        return Result(source, "failed", status=500, error=f"{type(exc).__name__}: {exc}")
    if status != 200:
        return Result(source, "failed", status=status, error=_error_message(answer))
    cards = (answer or {}).get("cards") or []
    decisions = tuple(card.get("extension", {}).get("spine-cds.decision") or {"outcome": "unknown"} for card in cards)
    return Result(source, "evaluated", status=status, decisions=decisions)


def _error_message(answer: object) -> str:
    try:
        return answer["issue"][0]["diagnostics"]
    except (TypeError, KeyError, IndexError):
        return json.dumps(answer)[:300]


def run_batch(path: Path, today: date | None, progress: TextIO | None = None, every: int | None = None) -> list[Result]:
    """Evaluate every input under ``path`` with one app, reporting progress on ``progress``.

    On a terminal the progress is one updating line; otherwise "[n/total]" every ``every``
    inputs (default: about ten lines per run, at most every 50) and at the end.
    """
    total, inputs = read_inputs(path)
    every = every or max(1, min(50, total // 10))
    tty = bool(progress and progress.isatty())
    results = []
    with OfflineEvaluator(today) as evaluator:
        for n, (source, body) in enumerate(inputs, 1):
            results.append(evaluate_one(evaluator, source, body))
            if progress and tty:
                progress.write(f"\r[{n}/{total}] {source[:60]}\x1b[K" + ("\n" if n == total else ""))
                progress.flush()
            elif progress and (n % every == 0 or n == total):
                progress.write(f"[{n}/{total}]\n")
    return results


def summarize(results: list[Result]) -> dict:
    """Counts per outcome, program and (program, guideline, indication); failures; rates."""
    kinds = Counter(r.kind for r in results)
    decisions = [d for r in results for d in r.decisions]
    outcomes = list(OUTCOMES) + sorted({d.get("outcome") or "unknown" for d in decisions} - set(OUTCOMES))
    programs: dict[str, Counter] = {}
    indications: dict[tuple, Counter] = {}
    for d in decisions:
        outcome = d.get("outcome") or "unknown"
        programs.setdefault(d.get("program"), Counter())[outcome] += 1
        indications.setdefault((d.get("program"), d.get("guideline"), d.get("indication")), Counter())[outcome] += 1
    by_program = {}
    for program, counts in sorted(programs.items(), key=lambda kv: kv[0] or ""):
        decided = sum(counts[o] for o in DECIDED)
        by_program[program] = {**{o: counts[o] for o in outcomes}, "total": sum(counts.values()),
                               "decided": decided, "auto_approval_rate": counts["approve"] / decided if decided else None}
    failures: dict[int, dict] = {}
    for r in results:
        if r.kind == "failed":
            entry = failures.setdefault(r.status, {"status": r.status, "count": 0, "first_source": r.source,
                                                   "first_error": r.error})
            entry["count"] += 1
    return {
        "inputs": len(results), **{k: kinds[k] for k in ("evaluated", "failed", "invalid", "skipped")},
        "requests_without_spine_orders": sum(1 for r in results if r.kind == "evaluated" and not r.decisions),
        "orders": len(decisions),
        "by_outcome": {o: sum(1 for d in decisions if (d.get("outcome") or "unknown") == o) for o in outcomes},
        "by_program": by_program,
        "by_indication": [{"program": p, "guideline": g, "indication": i, **{o: c[o] for o in outcomes},
                           "total": sum(c.values())}
                          for (p, g, i), c in sorted(indications.items(), key=lambda kv: [x or "~" for x in kv[0]])],
        "failures": [failures[s] for s in sorted(failures)],
        "invalid_inputs": [{"source": r.source, "error": r.error} for r in results if r.kind == "invalid"],
        "skipped_inputs": [r.source for r in results if r.kind == "skipped"],
    }


def _rate(row: dict) -> str:
    rate = row["auto_approval_rate"]
    return "-" if rate is None else f"{100 * rate:.0f}%"


def render_summary(summary: dict) -> str:
    """The summary as plain-text tables (what ``spine-cds evaluate FOLDER|FILE.ndjson`` prints)."""
    s = summary
    outcomes = list(s["by_outcome"])
    lines = [f"{s['inputs']} inputs: {s['evaluated']} evaluated, {s['failed']} failed, {s['invalid']} invalid, "
             f"{s['skipped']} skipped (not a hook request)",
             f"{s['orders']} spine orders decided; {s['requests_without_spine_orders']} evaluated request(s) "
             "had no spine CT/MRI order", ""]
    if s["orders"]:
        lines += ["Orders by outcome", text_table(["outcome", "orders"], [[o, n] for o, n in s["by_outcome"].items()]),
                  "", "Orders by program (auto-approval = approve / decided; no-policy orders are not decided)",
                  text_table(["program", *outcomes, "total", "decided", "auto-approval"],
                             [[p, *(row[o] for o in outcomes), row["total"], row["decided"], _rate(row)]
                              for p, row in s["by_program"].items()]),
                  "", "Orders by guideline and indication",
                  text_table(["program", "guideline", "indication", *outcomes, "total"],
                             [[r["program"], r["guideline"], r["indication"], *(r[o] for o in outcomes), r["total"]]
                              for r in s["by_indication"]]), ""]
    if s["failures"]:
        lines += ["Failed requests (HTTP status != 200)",
                  text_table(["status", "requests", "first input", "first error"],
                             [[f["status"], f["count"], f["first_source"], f["first_error"]] for f in s["failures"]]), ""]
    for title, entries in (("Invalid inputs", [f"{e['source']}: {e['error']}" for e in s["invalid_inputs"]]),
                           ("Skipped inputs (not a hook request)", s["skipped_inputs"])):
        if entries:
            more = [f"  ... and {len(entries) - LIST_LIMIT} more"] if len(entries) > LIST_LIMIT else []
            lines += [title, *(f"  {e}" for e in entries[:LIST_LIMIT]), *more, ""]
    return "\n".join(lines).rstrip()


def batch_main(path: Path, today: date | None, as_json: bool) -> int:
    """``spine-cds evaluate FOLDER|FILE.ndjson``: 0 when every input was valid and answered with 200."""
    summary = summarize(run_batch(path, today, progress=sys.stderr))
    sys.stdout.write((json.dumps(summary, indent=2) if as_json else render_summary(summary)) + "\n")
    return 1 if summary["failed"] or summary["invalid"] else 0
