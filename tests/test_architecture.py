"""The house rules, held by the suite: layered imports, no cycles, small modules."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import grimp
import pytest
from tinydata import run_child

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "edge_tl"
MAX_LINES = 450


def test_import_contracts_hold() -> None:
    """`lint-imports` checks the layers and the torch-free predict path (pyproject.toml)."""
    lint = Path(sys.executable).with_name("lint-imports")
    res = run_child([lint], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("edge_tl", cache_dir=None)


def cycles(graph: grimp.ImportGraph) -> list[str]:
    """Each direct import whose target leads back to the importer (imports in functions too)."""
    found = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if graph.chain_exists(importer=imported, imported=importer):
                chain = graph.find_shortest_chain(importer=imported, imported=importer)
                found.append(f"{importer} -> {' -> '.join(chain)}")
    return found


def test_no_module_imports_one_that_imports_it_back(graph: grimp.ImportGraph) -> None:
    """No import cycle between two modules, however long the way back."""
    assert cycles(graph) == []


def test_the_cycle_check_can_fail() -> None:
    """The check above sees a cycle once one is added (to a fresh graph; the code untouched)."""
    g = grimp.build_graph("edge_tl", cache_dir=None)
    g.add_import(importer="edge_tl.store.files", imported="edge_tl.store.keys")
    assert any(c.startswith("edge_tl.store.files -> edge_tl.store.keys") for c in cycles(g))


def test_no_module_is_over_the_size_limit() -> None:
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines())
        for p in PACKAGE.rglob("*.py")
    }
    assert {p: n for p, n in sizes.items() if n > MAX_LINES} == {}


def test_every_concern_has_its_folder() -> None:
    """A reader finds each concern by its folder name; each folder has a public face."""
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert folders == {
        "bases",
        "cli",
        "compare",
        "deploy",
        "fed",
        "hardware",
        "health",
        "store",
        "train",
    }


# How a test could start a process around the suite's network guard (tests/tinydata.py).
UNGUARDED = {
    "subprocess": {"run", "Popen", "call", "check_call", "check_output", "getoutput"},
    "os": {"system", "popen", "spawnv", "spawnve", "spawnvp", "spawnl", "posix_spawn"},
}


def unguarded_launches(source: str) -> list[str]:
    """`module.function` calls in `source` that start a process without tinydata's guard."""
    found = []
    for node in ast.walk(ast.parse(source)):
        f = node.func if isinstance(node, ast.Call) else None
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
            if f.attr in UNGUARDED.get(f.value.id, ()):
                found.append(f"{f.value.id}.{f.attr} (line {node.lineno})")
    return found


def test_every_child_process_of_the_suite_runs_guarded() -> None:
    """Tests start processes through tinydata (run_child, popen_child, guarded + child_env): in
    a network namespace, with the guard loaded, their attempts checked."""
    tests = ROOT / "tests"
    launches = {
        str(p.relative_to(tests)): hits
        for p in sorted(tests.rglob("*.py"))
        if p.name != "tinydata.py" and (hits := unguarded_launches(p.read_text(encoding="utf-8")))
    }
    assert launches == {}
    assert unguarded_launches("import subprocess\nsubprocess.run(['true'])\n")  # it can fail
