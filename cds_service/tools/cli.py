"""The ``spine-cds`` command: serve, evaluate hook requests offline (one or a batch), run the demo,
report card outcomes and override reasons from the decision store."""
from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
from datetime import date
from pathlib import Path

from cds_service.errors import CdsConfigError

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def _day(text: str) -> date:
    """``--today``: an ISO date, with an error that says the expected format."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--today takes a date as YYYY-MM-DD, e.g. 2026-11-22 (got {text!r})") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spine-cds", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the CDS Hooks service (gunicorn) on the embedded defaults")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=None,
                       help="gunicorn worker processes (default: WEB_CONCURRENCY, else 2 x cores + 1)")
    evaluate = commands.add_parser(
        "evaluate", help="print the hook response for a request file, or summarise a folder / NDJSON file of them")
    evaluate.add_argument("request", type=Path,
                          help="a CDS Hooks request JSON file (with prefetch), a folder of them (*.json), "
                               "or an NDJSON file (.ndjson/.jsonl, one request per line)")
    evaluate.add_argument("--today", type=_day, help="evaluation date (YYYY-MM-DD); default today")
    evaluate.add_argument("--json", action="store_true", help="batch: print the summary as JSON")
    demo = commands.add_parser("demo", help="decide the bundled synthetic patients' orders and show the cards")
    demo.add_argument("--today", type=_day, default=date(2026, 11, 22),
                      help="evaluation date the synthetic records were written for (default 2026-11-22)")
    demo.add_argument("--json", action="store_true", help="print the full responses")
    report = commands.add_parser("report", help="card outcomes and override reasons per guideline and indication")
    report.add_argument("--database",
                        help="SQLite file or postgresql:// URL to read (default: the service's, from SPINE_CDS_DATABASE / "
                             "SPINE_CDS_DATA_DIR)")
    report.add_argument("--html", type=Path, metavar="FILE", help="also write the report as a self-contained HTML page")
    from cds_service.tools.loader import add_load_arguments, load_main
    add_load_arguments(commands.add_parser(
        "load-patients", help="wait for a FHIR server, then POST the synthetic patients' transaction Bundles to it"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return {"serve": _serve, "evaluate": _evaluate, "demo": _demo, "report": _report,
                "load-patients": load_main}[args.command](args)
    except CdsConfigError as exc:
        print(f"spine-cds: configuration error: {exc.message}", file=sys.stderr)
        return 2


def _serve(args) -> int:
    from cds_service.tools.server import default_workers, run
    run(args.host, args.port, args.workers or default_workers())
    return 0


def _evaluate(args) -> int:
    from cds_service.tools.batch import batch_main, is_batch, offline_response
    if is_batch(args.request):
        if not args.request.exists():
            print(f"spine-cds: cannot read {args.request}: no such file", file=sys.stderr)
            return 2
        return batch_main(args.request, args.today, args.json)
    try:
        text = args.request.read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        print(f"spine-cds: cannot read {args.request}: {exc}", file=sys.stderr)
        return 2
    try:
        body = json.loads(text)
    except ValueError as exc:
        print(f"spine-cds: {args.request} is not a JSON file ({exc}); evaluate takes a CDS Hooks request as JSON, "
              "a folder of them, or an NDJSON file (.ndjson/.jsonl)", file=sys.stderr)
        return 2
    status, response = offline_response(body, args.today)
    print(json.dumps(response, indent=2))
    return 0 if status == 200 else 1


def _demo(args) -> int:
    from cds_service.tools.demo import run_demo
    return run_demo(SAMPLES, args.today, as_json=args.json)


def _report(args) -> int:
    """Print the outcome/override report; a missing or empty database is not an error."""
    from datetime import datetime, timezone

    from cds_service.protocol.report import build_report, load_report, render_html, render_text
    from cds_service.runtime.settings import load_settings
    from cds_service.store.database import Store
    from cds_service.store.database_url import is_postgres_url, mask_url
    database = args.database or load_settings().database_file
    path = mask_url(database)  # what is printed: a file path, or the URL without its password
    if is_postgres_url(database) or Path(database).is_file():
        try:
            with Store(database) as store:
                report = load_report(store)
        except sqlite3.DatabaseError as exc:
            print(f"spine-cds: cannot read {path} as a spine-cds database: {exc}", file=sys.stderr)
            return 2
    else:
        report = build_report([], [])
    if not report.rows:
        print(f"spine-cds: no decisions recorded yet in {path}")
    else:
        print(f"Decisions in {path}\n")
        print(render_text(report))
    if args.html:
        generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC") + f" from {Path(path).name}"
        args.html.write_text(render_html(report, generated_at=generated), encoding="utf-8")
        print(f"\nHTML report written to {args.html}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
