"""Benchmark: spine-cds order-select versus the floor, side by side, as ratios.

Why ratios and not milliseconds: absolute latency depends on the machine; the ratio of the
service to a do-nothing Flask app on the same stack, measured interleaved in the same run (so
machine noise hits both), does not.  This is a harness to run and read, never a timed test.

    .venv/bin/python bench/run.py                        # sizes 50,500,5000; table on stdout
    .venv/bin/python bench/run.py --iterations 30 --json out.json
    .venv/bin/python bench/run.py --http                 # also over a real loopback HTTP server
    .venv/bin/python bench/run.py --profile 5000         # where the service's time goes (cProfile)
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import http.client
import io
import json
import math
import os
import pstats
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack, closing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere, as a script

from bench.floor import create_floor_app  # noqa: E402
from bench.records import TEMPLATE, build_request, request_body, resource_count, with_instance  # noqa: E402
from bench.servers import PATH, Server, ServerConfig, bench_settings, server_env  # noqa: E402
from cds_service import close_app
from cds_service import create_app  # noqa: E402

OVERRIDES = {"SPINE_CDS_LOG_LEVEL": "ERROR", "SPINE_CDS_REPEAT_WINDOW_S": "0"}
"""Over ``servers.bench_settings``: the same card every call (no "don't nag twice"), no log lines."""
TARGET_RATIO_500 = 1.5  # issue: 500 resources <= 1.5x the floor
TARGET_GROWTH = 11.0    # issue: 5,000 resources <= 11x the 500 case (about linear)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile (with few samples p99 is simply the slowest call: say so, don't hide it)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class TestClientCaller:
    """Calls an app in-process through Flask's test client (no sockets: the framework and the app only)."""

    def __init__(self, app):
        self.client = app.test_client()

    def __call__(self, body: bytes) -> tuple[int, bytes]:
        response = self.client.post(PATH, data=body, content_type="application/json")
        return response.status_code, response.get_data()

    def close(self) -> None:
        pass


class HttpCaller:
    """Calls an app served by gunicorn in its own process (docker/gunicorn.conf.py, one worker) over
    loopback HTTP, one connection per call: the production server, and no GIL shared with the client."""

    def __init__(self, app_name: str, env: dict, workdir: Path):
        self.server = Server(app_name, ServerConfig("one worker", ("--workers", "1")), env, workdir)
        try:
            self.server.wait_ready(with_instance(request_body(50), str(uuid.uuid4())), timeout_s=60)
        except BaseException:
            self.server.stop()
            raise

    def __call__(self, body: bytes) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=60)
        try:
            conn.request("POST", PATH, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def close(self) -> None:
        self.server.stop()


def timed(call, body: bytes) -> float:
    """One call with a fresh hookInstance (substituted before the clock starts); milliseconds."""
    body = with_instance(body, str(uuid.uuid4()))
    start = time.perf_counter()
    status, payload = call(body)
    elapsed = (time.perf_counter() - start) * 1000
    if status != 200:
        raise SystemExit(f"HTTP {status}: {payload[:300]!r}")
    return elapsed


APPS = ("floor", "floor-orjson", "service")


def measure(callers: dict, body: bytes, iterations: int, warmup: int) -> dict[str, list[float]]:
    """Warm up every app, then call each once per iteration, rotating which goes first, so
    machine noise hits all of them alike."""
    for _ in range(warmup):
        for call in callers.values():
            timed(call, body)
    samples: dict[str, list[float]] = {name: [] for name in callers}
    names = list(callers)
    for i in range(iterations):
        for name in names[i % len(names):] + names[:i % len(names)]:
            samples[name].append(timed(callers[name], body))
    return samples


def service_settings(workdir: Path, transport: str, extra: dict[str, str]) -> dict[str, str]:
    """The service's settings for one transport (its own SQLite file in ``workdir``)."""
    return bench_settings(workdir / f"bench-{transport}.sqlite3", **{**OVERRIDES, **extra})


def make_callers(transport: str, workdir: Path, stack, extra: dict[str, str]) -> dict:
    """Callers of the two floors and the service for ``transport``; closed when ``stack`` unwinds."""
    settings = service_settings(workdir, transport, extra)
    if transport == "http":
        return {name: stack.enter_context(closing(HttpCaller(name, server_env(settings) if name == "service"
                                                              else dict(os.environ), workdir)))
                for name in APPS}
    service_app = create_app(settings)
    stack.callback(close_app, service_app)
    gc.collect()
    gc.freeze()  # as the server's post_worker_init does (cds_service/tools/server.py)
    return {"floor": TestClientCaller(create_floor_app()), "floor-orjson": TestClientCaller(create_floor_app("orjson")),
            "service": TestClientCaller(service_app)}


def run(sizes: list[int], iterations: int, warmup: int, transports: list[str], extra: dict[str, str],
        template: Path = TEMPLATE, background: bool = False) -> dict:
    rows = []
    with tempfile.TemporaryDirectory(prefix="spine-cds-bench-") as tmp:
        for transport in transports:
            with ExitStack() as stack:
                callers = make_callers(transport, Path(tmp), stack, extra)
                for size in sizes:
                    rows.append(measure_size(transport, size, callers, iterations, warmup, template, background))
    return {"rows": rows, "targets": targets(rows), "service_settings": extra,
            "sample": template.stem + (" + background" if background else "")}


def measure_size(transport: str, size: int, callers: dict, iterations: int, warmup: int, template: Path,
                 background: bool) -> dict:
    request = build_request(size, template=template, background=background)
    body = request_body(size, template, background)
    cards = json.loads(callers["service"](with_instance(body, str(uuid.uuid4())))[1])["cards"]
    outcomes = [c["extension"]["spine-cds.decision"]["outcome"] for c in cards]
    progress(f"[{transport}] size {size}: {resource_count(request)} resources, "
             f"{len(body) / 1024:.0f} KiB, card(s): {', '.join(outcomes) or 'none'}; {iterations} iterations ...")
    samples = measure(callers, body, iterations, warmup)
    row = {"transport": transport, "size": size, "resources": resource_count(request),
           "body_kib": round(len(body) / 1024, 1), "outcomes": outcomes, "iterations": iterations}
    for name in APPS:
        key = name.replace("-", "_")
        row[f"{key}_p50_ms"] = round(percentile(samples[name], 50), 3)
        row[f"{key}_p99_ms"] = round(percentile(samples[name], 99), 3)
    for floor in ("floor", "floor_orjson"):
        suffix = "" if floor == "floor" else "_orjson"
        row[f"ratio_p50{suffix}"] = round(row["service_p50_ms"] / row[f"{floor}_p50_ms"], 2)
        row[f"ratio_p99{suffix}"] = round(row["service_p99_ms"] / row[f"{floor}_p99_ms"], 2)
    return row


def targets(rows: list[dict]) -> list[dict]:
    """The issue's targets, judged on p50 (p99 shown alongside), per transport where sizes allow."""
    verdicts = []
    for transport in dict.fromkeys(r["transport"] for r in rows):
        by_size = {r["size"]: r for r in rows if r["transport"] == transport}
        if 500 in by_size:
            r = by_size[500]
            verdicts.append({"transport": transport, "target": f"500 resources <= {TARGET_RATIO_500}x floor",
                             "p50": r["ratio_p50"], "p99": r["ratio_p99"], "met": r["ratio_p50"] <= TARGET_RATIO_500})
        if 500 in by_size and 5000 in by_size:
            a, b = by_size[500], by_size[5000]
            p50 = round(b["service_p50_ms"] / a["service_p50_ms"], 2)
            p99 = round(b["service_p99_ms"] / a["service_p99_ms"], 2)
            verdicts.append({"transport": transport, "target": f"5,000 vs 500 resources <= {TARGET_GROWTH:g}x",
                             "p50": p50, "p99": p99, "met": p50 <= TARGET_GROWTH})
    return verdicts


def print_table(result: dict) -> None:
    head = ("transport", "size", "resources", "KiB", "floor p50", "floor p99", "orjson floor p50",
            "service p50", "service p99", "ratio p50", "ratio p99", "ratio p50 (orjson floor)")
    lines = [head] + [(r["transport"], r["size"], r["resources"], r["body_kib"],
                       f"{r['floor_p50_ms']:.2f}", f"{r['floor_p99_ms']:.2f}", f"{r['floor_orjson_p50_ms']:.2f}",
                       f"{r['service_p50_ms']:.2f}", f"{r['service_p99_ms']:.2f}", f"{r['ratio_p50']:.2f}x",
                       f"{r['ratio_p99']:.2f}x", f"{r['ratio_p50_orjson']:.2f}x") for r in result["rows"]]
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    fmt = lambda line: "| " + " | ".join(str(v).rjust(w) for v, w in zip(line, widths)) + " |"  # noqa: E731
    settings = ", ".join(f"{k}={v}" for k, v in result["service_settings"].items()) or "defaults"
    outcomes = sorted({o for r in result["rows"] for o in r["outcomes"]})
    print(f"latency in ms; ratio = service / floor; sample {result['sample']} (card: {', '.join(outcomes)}); "
          f"service settings: {settings}")
    print(fmt(lines[0]))
    print("|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    for line in lines[1:]:
        print(fmt(line))
    print()
    for t in result["targets"]:
        print(f"[{t['transport']}] {t['target']}: p50 {t['p50']:.2f}x, p99 {t['p99']:.2f}x -> "
              f"{'MET' if t['met'] else 'NOT MET'}")


def profile(size: int, calls: int) -> None:
    """Top 15 cumulative functions of ``calls`` service calls at ``size`` (after a warm-up).

    Only the service's own functions (``cds_service/``) are listed: the Flask and test-client
    frames above ``routes.call_service`` would otherwise fill the top 15 with 100% entries.
    """
    tmp = tempfile.TemporaryDirectory(prefix="spine-cds-profile-")
    service_app = create_app(service_settings(Path(tmp.name), "profile", {}))
    try:
        call, body = TestClientCaller(service_app), request_body(size)
        for _ in range(3):
            timed(call, body)
        progress(f"profiling {calls} service calls at size {size} ...")
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(calls):
            timed(call, body)
        profiler.disable()
    finally:
        close_app(service_app)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(r"cds_service[/\\]", 15)
    print(out.getvalue().replace(str(Path(__file__).resolve().parent.parent) + "/", ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="50,500,5000", help="comma-separated resource counts (default 50,500,5000)")
    parser.add_argument("--iterations", type=int, default=100, help="measured calls per app and size (default 100)")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured calls per app and size first (default 5)")
    parser.add_argument("--http", action="store_true", help="also measure over loopback HTTP (gunicorn, own process)")
    parser.add_argument("--sample", default=TEMPLATE.stem, metavar="NAME",
                        help=f"the cds_service/samples/ request to build records around (default {TEMPLATE.stem})")
    parser.add_argument("--background", action="store_true",
                        help="added resources name nothing a spine guideline reads (the sample's own decision stands)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a service setting for this run, e.g. SPINE_CDS_COMPARE_PROGRAMS=off (repeatable)")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    parser.add_argument("--profile", type=int, metavar="SIZE", help="instead: cProfile the service at SIZE")
    parser.add_argument("--profile-calls", type=int, default=20, help="service calls to profile (default 20)")
    args = parser.parse_args(argv)
    if args.profile:
        profile(args.profile, args.profile_calls)
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    extra = dict(item.split("=", 1) for item in args.set if "=" in item)
    if len(extra) != len(args.set) or not all(k.startswith("SPINE_CDS_") for k in extra):
        raise SystemExit("--set takes SPINE_CDS_<NAME>=<value> (the README's settings table lists them)")
    started = time.perf_counter()
    template = TEMPLATE.with_name(f"{args.sample}.json")
    if not template.is_file():
        raise SystemExit(f"--sample: no {template}; the names are the files of cds_service/samples/ without .json")
    result = run(sizes, args.iterations, args.warmup, ["test-client"] + (["http"] if args.http else []), extra, template,
                 args.background)
    progress(f"done in {time.perf_counter() - started:.0f} s")
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
