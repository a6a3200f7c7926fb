"""Batch evaluation: a folder or an NDJSON file of hook requests through one app, summarised."""
from __future__ import annotations

import io
import json
from collections import Counter
from datetime import date

import pytest

import cds_service
from cds_service.tools.batch import Result, render_summary, run_batch, summarize
from cds_service.tools.batch import offline_response
from cds_service.tools.cli import SAMPLES, main

TODAY = date(2026, 11, 22)
INDEX = json.loads((SAMPLES / "index.json").read_text())


def sample(name: str) -> dict:
    return json.loads((SAMPLES / name).read_text())


@pytest.fixture
def apps_created(monkeypatch):
    """Counts create_app calls, to show a batch builds one app, not one per request."""
    calls = []
    real = cds_service.create_app
    monkeypatch.setattr(cds_service, "create_app", lambda config=None: calls.append(1) or real(config))
    return calls


def test_samples_folder_matches_one_app_per_request(capsys, apps_created):
    assert main(["evaluate", str(SAMPLES), "--today", TODAY.isoformat(), "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert len(apps_created) == 1
    assert summary["inputs"] == len(INDEX["samples"]) + 1
    assert (summary["evaluated"], summary["failed"], summary["invalid"]) == (len(INDEX["samples"]), 0, 0)
    assert summary["skipped"] == 1 and summary["skipped_inputs"] == ["index.json"]
    expected = Counter(s["expect"] for s in INDEX["samples"] if s.get("expect"))
    assert summary["by_outcome"] == {o: expected[o] for o in ("approve", "alternative", "documentation", "no-policy")}
    assert summary["requests_without_spine_orders"] == sum(1 for s in INDEX["samples"] if not s.get("expect"))
    nia = summary["by_program"]["nia"]
    assert (nia["approve"], nia["alternative"], nia["documentation"], nia["no-policy"]) == (4, 3, 4, 1)
    assert (nia["total"], nia["decided"], nia["auto_approval_rate"]) == (12, 11, pytest.approx(4 / 11))
    assert summary["by_program"]["aim"]["auto_approval_rate"] == 1.0
    assert summary["failures"] == []
    # The same numbers as deciding each request in its own app (the reference behaviour).
    one_by_one = []
    for s in INDEX["samples"]:
        status, response = offline_response(sample(s["file"]), TODAY)
        one_by_one.append(Result(s["file"], "evaluated", status,
                                 tuple(c["extension"]["spine-cds.decision"] for c in response["cards"])))
    alone = summarize(one_by_one)
    assert (alone["by_program"], alone["by_indication"]) == (summary["by_program"], summary["by_indication"])
    assert captured.err.splitlines()[-1] == f"[{summary['inputs']}/{summary['inputs']}]"


def test_text_summary_of_the_samples(capsys):
    assert main(["evaluate", str(SAMPLES), "--today", TODAY.isoformat()]) == 0
    out = capsys.readouterr().out
    n = len(INDEX["samples"])
    assert out.startswith(f"{n + 1} inputs: {n} evaluated, 0 failed, 0 invalid, 1 skipped (not a hook request)")
    lines = [line.split() for line in out.splitlines()]
    assert ["nia", "4", "3", "4", "1", "12", "11", "36%"] in lines
    assert ["healthhelp", "1", "0", "0", "0", "1", "1", "100%"] in lines
    assert ["nia", "nia-lumbar-spine-mri", "conservative-care-failed", "2", "0", "3", "0", "5"] in lines
    assert ["nia", "-", "-", "0", "0", "0", "1", "1"] in lines
    assert "Skipped inputs (not a hook request)\n  index.json" in out


@pytest.fixture
def ndjson(tmp_path):
    """Eight lines: approve, blank, broken JSON, alternative, a 400, not a request, another 400, and
    an order-select + order-sign pair for the same order (independent requests in a batch)."""
    signed = sample("order-sign-with-coverage.json")
    selected = {**json.loads(json.dumps(signed)), "hook": "order-select"}
    selected["context"]["selections"] = [f"ServiceRequest/{e['resource']['id']}"
                                         for e in signed["context"]["draftOrders"]["entry"]]
    lines = [json.dumps(sample("radiculopathy-conservative-care-failed.json")), "", '{"hook": "order-select",',
             json.dumps(sample("infant-sacral-dimple.json")),
             json.dumps({"hook": "order-select", "hookInstance": "h-1", "context": {}}),
             "[1, 2, 3]", json.dumps({"hook": "order-select"}), json.dumps(selected), json.dumps(signed)]
    path = tmp_path / "requests.ndjson"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_ndjson_counts_failures_and_invalid_lines_without_stopping(ndjson, capsys, apps_created):
    assert main(["evaluate", str(ndjson), "--today", TODAY.isoformat(), "--json"]) == 1
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert len(apps_created) == 1
    assert {k: summary[k] for k in ("inputs", "evaluated", "failed", "invalid", "skipped")} == \
        {"inputs": 8, "evaluated": 4, "failed": 2, "invalid": 1, "skipped": 1}
    assert summary["by_outcome"] == {"approve": 3, "alternative": 1, "documentation": 0, "no-policy": 0}
    assert summary["by_program"]["nia"]["auto_approval_rate"] == pytest.approx(3 / 4)
    [failure] = summary["failures"]
    assert (failure["status"], failure["count"], failure["first_source"]) == (400, 2, "line 5")
    assert "context" in failure["first_error"]
    [invalid] = summary["invalid_inputs"]
    assert invalid["source"] == "line 3" and invalid["error"].startswith("not valid JSON")
    assert summary["skipped_inputs"] == ["line 6"]
    assert captured.err.splitlines() == [f"[{n}/8]" for n in range(1, 9)]


def test_ndjson_text_summary_names_the_failures(ndjson, capsys):
    assert main(["evaluate", str(ndjson), "--today", TODAY.isoformat()]) == 1
    out = capsys.readouterr().out
    assert "Failed requests (HTTP status != 200)" in out
    assert any(line.split()[:3] == ["400", "2", "line"] for line in out.splitlines())
    assert "Invalid inputs\n  line 3: not valid JSON" in out


def test_folder_with_broken_files(tmp_path, capsys):
    (tmp_path / "a-good.json").write_text(json.dumps(sample("thoracic-mri-no-policy.json")))
    (tmp_path / "b-broken.json").write_text("{nope")
    (tmp_path / "c-latin1.json").write_bytes('{"hook": "café"}'.encode("latin-1"))
    (tmp_path / "notes.txt").write_text("not a request")
    assert main(["evaluate", str(tmp_path), "--today", TODAY.isoformat(), "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["inputs"] == 3 and summary["by_outcome"]["no-policy"] == 1
    assert summary["by_program"]["nia"]["auto_approval_rate"] is None  # nothing decided by a guideline
    assert summary["invalid_inputs"] == [{"source": "b-broken.json", "error": summary["invalid_inputs"][0]["error"]},
                                         {"source": "c-latin1.json", "error": "not UTF-8 text"}]


def test_missing_batch_input_is_a_clear_error(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "missing.ndjson")]) == 2
    assert "cannot read" in capsys.readouterr().err


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_is_one_updating_line(tmp_path):
    path = tmp_path / "two.jsonl"
    path.write_text("[]\n{}\n")
    stream = Terminal()
    results = run_batch(path, TODAY, progress=stream)
    assert [r.kind for r in results] == ["skipped", "skipped"]
    assert stream.getvalue() == "\r[1/2] line 1\x1b[K\r[2/2] line 2\x1b[K\n"


def test_summarize_and_render_are_pure():
    decision = {"program": "cohere", "guideline": "cohere-mri-spine", "indication": "myelopathy"}
    results = [Result("r1", "evaluated", 200, ({**decision, "outcome": "approve"}, {**decision, "outcome": "documentation"})),
               Result("r2", "evaluated", 200, ()),
               Result("r3", "failed", 412, error="prefetch missing"),
               Result("r4", "failed", 500, error="boom"),
               Result("r5", "failed", 412, error="other")]
    summary = summarize(results)
    assert summary["orders"] == 2 and summary["requests_without_spine_orders"] == 1
    assert summary["by_program"]["cohere"]["auto_approval_rate"] == 0.5
    assert summary["by_indication"] == [{**decision, "approve": 1, "alternative": 0, "documentation": 1,
                                         "no-policy": 0, "total": 2}]
    assert [(f["status"], f["count"], f["first_source"], f["first_error"]) for f in summary["failures"]] == \
        [(412, 2, "r3", "prefetch missing"), (500, 1, "r4", "boom")]
    text = render_summary(summary)
    lines = [line.split() for line in text.splitlines()]
    assert ["cohere", "1", "0", "1", "0", "2", "2", "50%"] in lines
    assert ["412", "2", "r3", "prefetch", "missing"] in lines and ["500", "1", "r4", "boom"] in lines
