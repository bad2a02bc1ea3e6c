"""The CLI's error boundary and the store's basic guarantees."""

from __future__ import annotations

import os
import socket
import stat

import click
import pytest
from click.testing import CliRunner

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


def test_network_is_blocked(no_network):
    with pytest.raises(Exception, match="blocked"):
        socket.create_connection(("192.0.2.1", 80), timeout=1)
    no_network.clear()  # this test caused the attempt on purpose


TRAINING_NAMES = {
    "evaluate_texts",
    "export_onnx",
    "finetune_lm",
    "train_classifier",
    "train_from_vault",
}


def test_public_api_names_resolve_without_torch():
    """Every public name but the training stack's resolves without importing torch; those do."""
    import subprocess
    import sys

    code = (
        "import sys, edge_tl\n"
        "for n in edge_tl.__all__:\n"
        "    before = 'torch' in sys.modules\n"
        "    getattr(edge_tl, n)\n"
        "    if 'torch' in sys.modules and not before: print(n)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    first = out.stdout.split()[:1]  # once torch is in, later names cannot be told apart
    assert first and first[0] in TRAINING_NAMES
    code = (
        "import sys, edge_tl\n"
        + "".join(
            f"edge_tl.{n}\n" for n in sorted(set(__import__("edge_tl").__all__) - TRAINING_NAMES)
        )
        + "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
