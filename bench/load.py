"""Throughput under gunicorn, measured with wrk: hook calls per second with 0 errors.

Why this exists next to ``run.py``: ``run.py`` measures one call at a time (latency, scaling with
the record); the throughput target is about a production WSGI server saturating this machine's
cores.  Each configuration starts the real service under gunicorn with the production settings
file (``docker/gunicorn.conf.py``; workers, worker class and threads may be overridden on the
command line, which gunicorn ranks above the file) and the floor app (``floor.py``) under the same
settings, and drives them with wrk on loopback for a fixed time and connection count, in rounds
that alternate between the two (a shared machine's noise then hits both).

Benchmark settings, and why:
- ``SPINE_CDS_AUTH=off``: a JWT's ``jti`` may be used once only (replay protection), and wrk
  replays one request; signing a fresh token per call would measure the load generator.
- ``SPINE_CDS_DATABASE`` is a temporary SQLite file: every call writes its decision row and its
  shown-decision fingerprint, as in production.  That cost is part of the answer, so it stays on;
  afterwards the decision rows are counted against wrk's 2xx responses.
- Each request gets its own ``hookInstance`` (the Lua script numbers them): card uuids derive
  from it, so every call inserts a new decision row instead of hitting ``INSERT OR IGNORE``.
- ``SPINE_CDS_TODAY`` fixed (same decision every run), ``SPINE_CDS_LOG_LEVEL=WARNING``.

    .venv/bin/python bench/load.py                                  # production config, 20 s
    .venv/bin/python bench/load.py --configs conf,sync:2,sync:4,gthread:2x4 --duration 20
    .venv/bin/python bench/load.py --size 100 --connections 16 --json out.json

Everything is bounded: a server that is not ready within ``--ready-timeout`` is killed, wrk runs
for ``--duration`` (and is killed 30 s after that), and every process group started here is
terminated on any exit.  This is a harness to run and read, never a test.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from anywhere, as a script

from bench.records import HOOK_INSTANCE, build_request, request_body, resource_count  # noqa: E402
from bench.servers import Server, ServerConfig, bench_settings, server_env  # noqa: E402

TARGET_RPS = 400
RUNS: list[str] = []  # wrk runs so far: each gets its own number, hence its own hookInstances

LUA = """
local f = assert(io.open(%(body)s, "rb"))
local body = f:read("*a")
f:close()
local s, e = string.find(body, %(placeholder)s, 1, true)
local head, tail = string.sub(body, 1, s - 1), string.sub(body, e + 1)
local headers = {["Content-Type"] = "application/json"}
local threads, counter = {}, 0

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_no", #threads)
end

function init(args)
  run_no = tonumber(args[1]) or 0  -- each wrk run numbers its calls from 1: keep them apart
end

request = function()
  counter = counter + 1  -- a fresh hookInstance per call: same length as a UUID, unique per run
  local instance = string.format("%%04x%%04x-0000-4000-8000-%%012x", run_no, thread_no, counter)
  return wrk.format("POST", nil, headers, head .. instance .. tail)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_RESULT {"requests": %%d, "duration_us": %%d, "connect": %%d, "read": %%d, ' ..
    '"write": %%d, "status": %%d, "timeout": %%d, "p50_us": %%d, "p99_us": %%d, "max_us": %%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def run_wrk(url: str, script: Path, duration: int, connections: int, threads: int) -> dict:
    RUNS.append(url)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s",
               "-s", str(script), url, "--", str(len(RUNS))]
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration + 30, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("WRK_RESULT "):
            return json.loads(line.removeprefix("WRK_RESULT "))
    raise SystemExit(f"wrk gave no result (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")


def decision_rows(database: Path) -> int | None:
    """Decision rows the service wrote (None if the store is not a readable SQLite file)."""
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as conn:
            return conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
    except sqlite3.Error:
        return None


def start(app: str, config: ServerConfig, args, body: bytes, workdir: Path, stack: ExitStack) -> tuple[Server, Path]:
    """Start one app under gunicorn and check its first answer (the service must decide one card)."""
    database = workdir / f"bench-{app}-{time.monotonic_ns()}.sqlite3"
    server = stack.enter_context(Server(app, config, server_env(bench_settings(database)), workdir))
    answer = server.wait_ready(body.replace(HOOK_INSTANCE.encode(), b"ffffffff-0000-4000-8000-000000000000"),
                               args.ready_timeout)
    if app == "service" and len(answer.get("cards") or []) != 1:
        raise SystemExit(f"the service did not answer with one card: {json.dumps(answer)[:500]}")
    return server, database


def measure(configs: list[ServerConfig], args, body: bytes, workdir: Path) -> list[dict]:
    """Every app of every config given up at once; wrk rounds alternate between them (and which
    goes first), so the noise of a shared machine hits all of them alike — with ``--together``
    several configs are compared side by side this way.  p50 is the median of the rounds' p50,
    p99 the worst round's p99 (wrk reports percentiles per run, which cannot be merged exactly)."""
    apps = ["service"] if args.no_floor else ["service", "floor"]
    pairs = [(config, app) for config in configs for app in apps]
    slice_s = max(1, args.duration // args.rounds)
    load_before = os.getloadavg()[0]  # a shared machine's other work shows up here: report it
    with ExitStack() as stack:
        servers = {(c.name, app): start(app, c, args, body, workdir, stack) for c, app in pairs}
        print(f"  [{', '.join(c.name for c in configs)}] {' and '.join(apps)} ready; {args.rounds} rounds of "
              f"{slice_s} s each, {args.connections} connections ...", file=sys.stderr, flush=True)
        results: dict[tuple, list[dict]] = {(c.name, app): [] for c, app in pairs}
        for n in range(args.rounds):
            for key in (list(results) if n % 2 == 0 else list(results)[::-1]):
                results[key].append(run_wrk(servers[key][0].url, workdir / "body.lua", slice_s,
                                            args.connections, args.wrk_threads))
    rows = []
    for (name, app), rounds in results.items():
        seconds = sum(r["duration_us"] for r in rounds) / 1e6
        requests = sum(r["requests"] for r in rounds)
        rows.append({"config": name, "app": app, "requests": requests, "rps": round(requests / seconds, 1),
                     "p50_ms": statistics.median(r["p50_us"] for r in rounds) / 1000,
                     "p99_ms": max(r["p99_us"] for r in rounds) / 1000,
                     "max_ms": max(r["max_us"] for r in rounds) / 1000,
                     "non_2xx": sum(r["status"] for r in rounds),
                     "socket_errors": sum(r[k] for r in rounds for k in ("connect", "read", "write", "timeout")),
                     "decision_rows": decision_rows(servers[(name, app)][1]) if app == "service" else None,
                     "load_1m": f"{load_before:.1f}-{os.getloadavg()[0]:.1f}"})
    floors = {r["config"]: r["rps"] for r in rows if r["app"] == "floor"}
    for row in rows:
        if row["app"] == "service" and row["config"] in floors:
            row["ratio"] = row["rps"] / floors[row["config"]]
    return rows


def print_table(rows: list[dict], args, resources: int, kib: float) -> None:
    print(f"order-select, {resources} resources ({kib:.0f} KiB body), wrk {args.duration} s, "
          f"{args.connections} connections, {args.wrk_threads} wrk thread(s), {os.cpu_count()} cores")
    print()
    print("| gunicorn | app | requests | req/s | p50 ms | p99 ms | max ms | non-2xx | socket errors "
          "| decision rows | service/floor | load avg |")
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        cells = [r["config"], r["app"], r["requests"], f"{r['rps']:.1f}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}",
                 f"{r['max_ms']:.2f}", r["non_2xx"], r["socket_errors"],
                 "-" if r.get("decision_rows") is None else r["decision_rows"],
                 f"{r['ratio']:.2f}" if "ratio" in r else "-", r["load_1m"]]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print()
    for r in (r for r in rows if r["app"] == "service"):
        ok = r["rps"] >= TARGET_RPS and r["non_2xx"] == 0 and r["socket_errors"] == 0
        print(f"[{r['config']}] {r['rps']:.0f} calls/s, {r['non_2xx']} non-2xx, {r['socket_errors']} socket "
              f"errors (target >= {TARGET_RPS}/s, 0 errors) -> {'MET' if ok else 'NOT MET'}")
        if r["decision_rows"] is not None and r["decision_rows"] < r["requests"] - r["non_2xx"]:
            print(f"[{r['config']}] WARNING: fewer decision rows than 2xx answers: some calls stored nothing")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="conf",
                        help="comma-separated: conf, sync:<workers>, gevent:<workers>, gthread:<workers>x<threads> (default conf)")
    parser.add_argument("--size", type=int, default=100, help="clinical resources in the prefetch (default 100)")
    parser.add_argument("--duration", type=int, default=20, help="seconds of load per app and config, over all rounds (default 20)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating wrk runs per app (default 4)")
    parser.add_argument("--connections", type=int, default=8, help="concurrent wrk connections (default 8)")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1: it shares the cores)")
    parser.add_argument("--ready-timeout", type=float, default=60.0, help="seconds to wait for gunicorn (default 60)")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor app")
    parser.add_argument("--json", metavar="OUT", help="also write the rows as JSON to OUT")
    parser.add_argument("--together", action="store_true",
                        help="start every config at once and alternate wrk rounds among all of them (side by side)")
    args = parser.parse_args(argv)
    configs = [ServerConfig.parse(s.strip()) for s in args.configs.split(",") if s.strip()]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: no orphan servers
    request, body = build_request(args.size), request_body(args.size)
    rows = []
    with tempfile.TemporaryDirectory(prefix="spine-cds-load-") as tmp:
        workdir = Path(tmp)
        (workdir / "body.json").write_bytes(body)
        (workdir / "body.lua").write_text(LUA % {"body": json.dumps(str(workdir / "body.json")),
                                                 "placeholder": json.dumps(HOOK_INSTANCE)})
        for group in ([configs] if args.together else [[config] for config in configs]):
            rows += measure(group, args, body, workdir)
    print_table(rows, args, resource_count(request), len(body) / 1024)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
