"""The ``spine-cds`` command: serve, evaluate a hook request offline, run the demo."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import date
from pathlib import Path

from .errors import CdsConfigError, CdsError

SAMPLES = Path(__file__).parent / "samples"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spine-cds", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the CDS Hooks service (gunicorn) on the embedded defaults")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "2")))
    evaluate = commands.add_parser("evaluate", help="print the hook response for a request file, no server")
    evaluate.add_argument("request", type=Path, help="a CDS Hooks request JSON file (with prefetch)")
    evaluate.add_argument("--today", type=date.fromisoformat, help="evaluation date (YYYY-MM-DD); default today")
    demo = commands.add_parser("demo", help="decide the bundled synthetic patients' orders and show the cards")
    demo.add_argument("--today", type=date.fromisoformat, default=date(2026, 11, 22),
                      help="evaluation date the synthetic records were written for (default 2026-11-22)")
    demo.add_argument("--json", action="store_true", help="print the full responses")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return {"serve": _serve, "evaluate": _evaluate, "demo": _demo}[args.command](args)
    except CdsConfigError as exc:
        print(f"spine-cds: configuration error: {exc.message}", file=sys.stderr)
        return 2


def _serve(args) -> int:
    from .server import run
    run(args.host, args.port, args.workers)
    return 0


def offline_response(body: object, today: date | None) -> tuple[int, dict]:
    """Run one request body through the app in-process (no network server, auth off)."""
    from . import close_app, create_app
    config = {**os.environ, "SPINE_CDS_AUTH": "off", "SPINE_CDS_DATABASE": ":memory:", "SPINE_CDS_LOG_LEVEL": "ERROR"}
    if today:
        config["SPINE_CDS_TODAY"] = today.isoformat()
    app = create_app(config)
    try:
        service = "spine-imaging-order-sign" if isinstance(body, dict) and body.get("hook") == "order-sign" \
            else "spine-imaging-order-select"
        response = app.test_client().post(f"/cds-services/{service}", json=body)
        return response.status_code, response.get_json()
    finally:
        close_app(app)


def _evaluate(args) -> int:
    try:
        body = json.loads(args.request.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"spine-cds: cannot read {args.request}: {exc}", file=sys.stderr)
        return 2
    status, response = offline_response(body, args.today)
    print(json.dumps(response, indent=2))
    return 0 if status == 200 else 1


def _demo(args) -> int:
    from .demo import run_demo
    return run_demo(SAMPLES, args.today, as_json=args.json)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
