"""The architecture holds: import-linter's contracts (pyproject.toml) and no import cycles.

``ls cds_service/`` shows the layers; these tests keep the code inside them.  A broken contract
prints the offending import chain, so the failure says which line to move.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("tools", "protocol", "cards", "store", "record", "runtime", "engine")


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "import-linter is not installed: pip install -e '.[test]'"
    return subprocess.run([exe, "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_import_contracts_are_kept():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout and "3 kept" in result.stdout


def _strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    """Tarjan's algorithm over module → directly imported modules (cds_service only)."""
    edges = {m: sorted(i for i in graph.find_modules_directly_imported_by(m) if i.startswith("cds_service"))
             for m in graph.modules if m.startswith("cds_service")}
    index, low, on_stack, stack, components, counter = {}, {}, set(), [], [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(component)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return [sorted(c) for c in components if len(c) > 1 or node_imports_itself(c[0], edges)]


def node_imports_itself(node: str, edges: dict) -> bool:
    return node in edges.get(node, ())


def test_no_import_cycles_between_modules():
    graph = grimp.build_graph("cds_service", exclude_type_checking_imports=True)
    cycles = _strongly_connected(graph)
    assert cycles == [], f"import cycles: {cycles}"


def test_the_tree_shows_the_layers():
    package = ROOT / "cds_service"
    for layer in LAYERS:
        init = package / layer / "__init__.py"
        assert init.is_file(), f"cds_service/{layer}/ is missing"
        assert len(init.read_text().strip()) > 40, f"cds_service/{layer}/__init__.py should say what the layer holds"
    top = sorted(p.name for p in package.glob("*.py"))
    assert top == ["__init__.py", "errors.py", "model.py"], top


@pytest.mark.parametrize("bad_import, contract", [
    ("cds_service/engine/criteria.py", "The engine is pure"),
    ("cds_service/cards/card.py", "Layers"),
])
def test_a_violation_breaks_a_contract(tmp_path, bad_import, contract):
    """The contracts can fail: a copy of the package with one forbidden import is refused."""
    shutil.copytree(ROOT / "cds_service", tmp_path / "cds_service", ignore=shutil.ignore_patterns("samples"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / bad_import
    line = "import flask  # noqa\n" if "engine" in bad_import else "from cds_service.protocol import routes  # noqa\n"
    target.write_text(line + target.read_text())
    env_path = str(tmp_path)
    result = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                             "from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))", env_path],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0, result.stdout[-2000:]
    assert f"{contract}" in result.stdout and "BROKEN" in result.stdout


def test_the_engine_reads_no_clock():
    """``today`` is passed in: no engine module asks the clock (import-linter cannot see a call)."""
    clock = re.compile(r"\b(date\.today|datetime\.(now|utcnow|today)|time\.(time|monotonic|perf_counter))\s*\(")
    offenders = [f"{path.relative_to(ROOT)}:{n}" for path in sorted((ROOT / "cds_service" / "engine").glob("*.py"))
                 for n, line in enumerate(path.read_text().splitlines(), 1) if clock.search(line)]
    assert offenders == []
    assert clock.search("today = date.today()") and clock.search("t = time.perf_counter()")
