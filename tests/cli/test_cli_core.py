"""The CLI's error boundary and the store's basic guarantees."""

from __future__ import annotations

import ast
import os
import stat
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from tinydata import check_children, popen_child, run_child

from edge_tl import cli as cli_mod
from edge_tl.errors import DataError
from edge_tl.store.files import atomic_write, atomic_writer
from edge_tl.store.home import home, subdir


def test_edge_tl_error_becomes_error_line_and_exit_1(monkeypatch):
    @click.command()
    def boom() -> None:
        raise DataError("dataset 'x' does not exist", "run `edge-tl data list` to see names")

    monkeypatch.setitem(cli_mod.COMMANDS, "boom", "doctor:doctor")
    monkeypatch.setattr(cli_mod.LazyGroup, "get_command", lambda self, ctx, name: boom)
    result = CliRunner().invoke(cli_mod.cli, ["boom"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: dataset 'x' does not exist. run `edge-tl data list` to see names"
    )
    assert "Traceback" not in result.output


def test_unknown_command_is_usage_error():
    result = CliRunner().invoke(cli_mod.cli, ["no-such-command"])
    assert result.exit_code == 2


def test_home_is_isolated_and_private(edge_tl_home):
    assert home() == edge_tl_home
    keys = subdir("keys")
    assert stat.S_IMODE(os.stat(keys).st_mode) == 0o700


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write(target, b"old")
    with pytest.raises(RuntimeError), atomic_writer(target) as f:
        f.write(b"new partial")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600


ROOT = Path(__file__).resolve().parents[2]
# Outbound network clients (servers and plain `socket` for local pipes are not in this list).
OUTBOUND = (
    "urllib.request",
    "http.client",
    "requests",
    "httpx",
    "aiohttp",
    "urllib3",
    "ftplib",
    "smtplib",
    "fastai.data.external",
    "fastdownload",
    "torch.hub",
    "huggingface_hub",
    "spacy.cli",
)
NETWORK_CALLS = {"create_connection", "getaddrinfo", "gethostbyname", "urlopen", "untar_data"}


def _network_uses(path: Path) -> set[str]:
    """Outbound-client imports and connect/lookup/download calls in one source file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        else:
            names = []
        found |= {n for n in names if any(n == m or n.startswith(m + ".") for m in OUTBOUND)}
        name = getattr(node, "attr", None) or getattr(node, "id", None)
        if isinstance(node, ast.Attribute | ast.Name) and name in NETWORK_CALLS:
            found.add(name)
    return found


def test_only_base_fetch_can_reach_the_network():
    """The no-network promise in the code: only edge_tl/bases/wt103.py (`base fetch wt103`,
    behind EDGE_TL_OFFLINE) imports an outbound network client or connects or resolves."""
    uses = {}
    for path in sorted((ROOT / "edge_tl").rglob("*.py")):
        if found := _network_uses(path):
            uses[path.relative_to(ROOT).as_posix()] = found
    assert uses == {
        "edge_tl/bases/wt103.py": {"create_connection", "fastai.data.external", "untar_data"}
    }


def test_base_fetch_offline_makes_no_attempt_from_a_real_process(tmp_path):
    """In a child with no network: EDGE_TL_OFFLINE=1 makes `base fetch` refuse without one
    attempt; without it, the one attempt goes to the documented host and fails as one line."""
    cmd = [sys.executable, "-m", "edge_tl", "base", "fetch", "wt103", "--out", tmp_path / "w"]
    offline = {**os.environ, "EDGE_TL_OFFLINE": "1"}
    r = run_child(cmd, env=offline, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.startswith("Error: cannot reach s3.amazonaws.com")
    proc = popen_child(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=120)
    attempts = check_children(fail=False)
    assert proc.returncode == 1 and err.startswith("Error: cannot reach s3.amazonaws.com"), err
    assert attempts and all("s3.amazonaws.com" in a for a in attempts), attempts
    assert not (tmp_path / "w").exists()


TRAINING_NAMES = {
    "evaluate_texts",
    "export_onnx",
    "finetune_lm",
    "train_classifier",
    "train_from_vault",
}


def test_public_api_names_resolve_without_torch():
    """Every public name but the training stack's resolves without importing torch; those do."""
    code = (
        "import sys, edge_tl\n"
        "for n in edge_tl.__all__:\n"
        "    before = 'torch' in sys.modules\n"
        "    getattr(edge_tl, n)\n"
        "    if 'torch' in sys.modules and not before: print(n)\n"
    )
    out = run_child([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    first = out.stdout.split()[:1]  # once torch is in, later names cannot be told apart
    assert first and first[0] in TRAINING_NAMES
    code = (
        "import sys, edge_tl\n"
        + "".join(
            f"edge_tl.{n}\n" for n in sorted(set(__import__("edge_tl").__all__) - TRAINING_NAMES)
        )
        + "print('torch' in sys.modules)"
    )
    out = run_child([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_python_dash_m_edge_tl_is_the_cli():
    """`python -m edge_tl` runs the same CLI as `edge-tl` (edge_tl/__main__.py)."""
    from importlib.metadata import version

    py = [sys.executable, "-m", "edge_tl"]
    r = run_child([*py, "--version"], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (0, f"edge-tl, version {version('edge_tl')}\n"), r.stderr
    r = run_child([*py, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("Usage: edge-tl [OPTIONS] COMMAND"), r.stderr
    listed = r.stdout[r.stdout.index("Commands:") :].split()
    assert {"doctor", "keys", "data", "train", "export", "predict"} <= set(listed)
    r = run_child([*py, "no-such-command"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "No such command 'no-such-command'" in r.stderr
