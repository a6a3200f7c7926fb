"""Every file or folder a README names exists, so the documentation cannot drift from the tree.

A path with a slash must exist relative to the repository (or to the README's own folder); a
bare file name (``auth.py`` in the flow table) must exist somewhere in the repository.  URLs,
route templates and placeholders (``<guideline>``, ``*``) are not paths.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
READMES = ["README.md", "mappings/README.md", "valuesets/README.md", "bench/README.md", "docker/README.md",
           "tests/cases/README.md"]
SUFFIXES = (".py", ".json", ".md", ".toml", ".yaml", ".yml", ".mjs", ".txt", ".conf", ".ndjson", ".sh")
TOKEN = re.compile(r"[A-Za-z0-9_.\-/$]+")
SKIP_DIRS = {".git", ".venv", "node_modules", "__pycache__"}
# Files a command in a README writes (outputs), and the guideline texts kept on the reference
# shelf outside the repository (../shared/guidelines/): named, never shipped.
NOT_IN_REPO = {"out.json", "gil.txt", "nia-lumbar-spine-mri.txt"}


def _all_names() -> set[str]:
    return {p.name for p in ROOT.rglob("*") if not SKIP_DIRS & set(p.parts)}


def _candidates(text: str) -> set[str]:
    """Tokens in code spans and code blocks that look like repository paths."""
    spans = re.findall(r"```.*?```", text, flags=re.S) + re.findall(r"`([^`\n]+)`", text)
    found = set()
    for span in spans:
        for token in TOKEN.findall(span):
            token = token.rstrip(".,:;")
            if token.startswith(("-", ".venv", "http", "/", "..", "$")) or "<" in token or "*" in token or "//" in token or "$" in token:
                continue
            is_file = token.endswith(SUFFIXES) and not token.startswith(".") or token.startswith(".ci/")
            has_dir = "/" in token and token.split("/")[0] in {p.name for p in ROOT.iterdir()}
            if is_file or has_dir:
                found.add(token)
    return found


@pytest.mark.parametrize("readme", READMES)
def test_every_path_a_readme_names_exists(readme):
    path = ROOT / readme
    names = _all_names()
    missing = []
    for token in sorted(_candidates(path.read_text(encoding="utf-8")) - NOT_IN_REPO):
        if "/" in token:
            if not any((base / token).exists() for base in (ROOT, path.parent, ROOT / "cds_service")):
                missing.append(token)
        elif token not in names:
            missing.append(token)
    assert not missing, f"{readme} names paths that do not exist: {missing}"


def test_the_check_can_fail():
    assert "cds_service/nowhere.py" in _candidates("see `cds_service/nowhere.py`")
    assert "protocol/hooks.py" in _candidates("```\nprotocol/hooks.py   one call\n```")
    assert "auth.py" in _candidates("`auth.py` verifies")


def test_every_readme_block_that_starts_a_server_waits_for_it_then_stops_it():
    """A pasted block must not call the server before it listens (#15 §7: the curl block failed
    when pasted), and must not leave it holding the port for the next block."""
    text = (ROOT / "README.md").read_text()
    blocks = [b for b in re.findall(r"```sh\n(.*?)```", text, flags=re.S) if re.search(r"spine-cds serve[^\n]*&", b)]
    assert blocks, "the README shows curl calls against a background server"
    for block in blocks:
        lines = block.splitlines()
        start = next(i for i, line in enumerate(lines) if re.search(r"spine-cds serve[^\n]*& server=\$!", line))
        wait = next(i for i, line in enumerate(lines) if "/health" in line and ("until" in line or "seq" in line))
        first_call = next(i for i, line in enumerate(lines) if "curl" in line and i != wait)
        assert start < wait < first_call, block
        assert lines[-1].strip() == "kill $server", block
    first = text.index(".venv/bin/spine-cds serve\n```")
    assert text[first:].split("```", 2)[1].lstrip().startswith("Discovery is then at <http://127.0.0.1:8080/cds-services>")
