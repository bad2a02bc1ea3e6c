"""The house rules, held by the suite: layered imports, no cycles, small modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "edge_tl"
MAX_LINES = 450


def test_import_contracts_hold() -> None:
    """`lint-imports` checks the layers and the torch-free predict path (pyproject.toml)."""
    lint = Path(sys.executable).with_name("lint-imports")
    res = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120)
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
    assert folders == {"bases", "cli", "compare", "deploy", "hardware", "health", "store", "train"}
