"""The spine-cds command: evaluate and demo in-process, serve as a real process on loopback."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cds_service.tools.cli import SAMPLES, main
from ports import free_port


def test_evaluate_prints_the_hook_response(capsys):
    sample = SAMPLES / "radiculopathy-conservative-care-failed.json"
    assert main(["evaluate", str(sample), "--today", "2026-11-22"]) == 0
    response = json.loads(capsys.readouterr().out)
    [card] = response["cards"]
    assert card["extension"]["spine-cds.decision"]["outcome"] == "approve"


def test_evaluate_reports_an_unreadable_file(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    assert main(["evaluate", str(bad)]) == 2
    assert "is not a JSON file" in capsys.readouterr().err   # says what it expected (#15 §7)


def test_demo_decides_every_sample(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    index = json.loads((SAMPLES / "index.json").read_text())
    assert f"{len(index['samples'])} requests and the synthetic patients decided" in out
    for sample in index["samples"]:
        assert sample["title"] in out
        if sample.get("expect"):
            assert sample["expect"].upper() in out
    from cds_service.tools.patients import describe, load_bundle, patient_files
    for path in patient_files():  # each synthetic patient Bundle is decided too, to its tags
        assert describe(load_bundle(path))["title"] in out and path.name in out
    assert "expected " not in out  # what the demo prints when a patient misses its tags


def test_every_sample_gets_the_outcome_its_index_promises():
    from cds_service.tools.batch import offline_response
    from datetime import date
    index = json.loads((SAMPLES / "index.json").read_text())
    for sample in index["samples"]:
        status, response = offline_response(json.loads((SAMPLES / sample["file"]).read_text()), date(2026, 11, 22))
        outcomes = [c["extension"]["spine-cds.decision"]["outcome"] for c in response["cards"]]
        assert status == 200 and outcomes == ([sample["expect"]] if sample.get("expect") else []), sample["file"]


def test_serve_answers_discovery_and_stops_gracefully(tmp_path):
    port = free_port()
    env = {**os.environ, "SPINE_CDS_DATA_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "cds_service.tools.cli", "serve", "--port", str(port), "--workers", "1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/cds-services", timeout=2) as response:
                    services = json.load(response)["services"]
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read().decode()
                time.sleep(0.2)
        assert {s["hook"] for s in services} == {"order-select", "order-sign"}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        proc.stdout.close()
    assert Path(tmp_path, "spine-cds.sqlite3").exists()


def test_errors_say_the_expected_format(tmp_path, capsys):
    """#15 §7: a wrong date or a file that is not JSON says what is expected."""
    with pytest.raises(SystemExit) as exited:
        main(["evaluate", str(SAMPLES / "radiculopathy-conservative-care-failed.json"), "--today", "22/11/2026"])
    assert exited.value.code == 2 and "--today takes a date as YYYY-MM-DD" in capsys.readouterr().err
    not_json = tmp_path / "request.json"
    not_json.write_text("hook: order-select\n")
    assert main(["evaluate", str(not_json)]) == 2
    assert "is not a JSON file" in capsys.readouterr().err


# --- help a new user can read (#15 §7) ----------------------------------------------------------

def _help_of(capsys, *command: str) -> str:
    from cds_service.tools.cli import main as cli_main
    with pytest.raises(SystemExit) as done:
        cli_main([*command, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


COMMANDS = [(), ("serve",), ("evaluate",), ("demo",), ("report",), ("load-patients",)]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_is_plain_text_and_names_every_default(capsys, command):
    import argparse
    from cds_service.tools.cli import build_parser
    text = _help_of(capsys, *command)
    assert "``" not in text and ":class:" not in text and ":func:" not in text  # no reStructuredText
    assert all(len(line) <= 100 for line in text.splitlines()), "help lines wrap"
    parser = build_parser()
    if command:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command[0]]
    for action in parser._actions:
        if action.option_strings and action.dest != "help" and not action.required:
            assert "(default: " in (action.help or ""), f"{command} {action.option_strings} does not name its default"


def test_top_level_help_shows_the_discovery_url(capsys):
    assert "http://127.0.0.1:8080/cds-services" in _help_of(capsys)
