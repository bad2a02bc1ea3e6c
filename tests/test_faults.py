"""Fault injection: kill -9 at random points of training and export, a full disk while
checkpointing. After every fault the store stays consistent and the work can finish."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from test_export import tiny_model
from tinydata import SCRATCH_TOML as TOML
from tinydata import scratch_texts as _texts

from edge_tl.cli import cli
from edge_tl.health.integrity import check_store
from edge_tl.store import datasets as data
from edge_tl.store import keys
from edge_tl.store.checkpoints import checkpoint_path, load_checkpoint
from edge_tl.store.models import load_model, model_path, save_model

ROOT = Path(__file__).resolve().parents[1]

CHILD = "import sys; from edge_tl.cli import main; sys.argv[0] = 'edge-tl'; main()"


def _child(args: list[str], home: Path, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "EDGE_TL_HOME": str(home), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _no_parts(home: Path) -> list[Path]:
    return list(home.rglob("*.part"))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kill_9_at_a_random_point_of_training_then_resume(seed, tmp_path, edge_tl_home):
    keys.init_identity(None)
    t, lab = _texts(40)
    data.save_dataset("d", t, lab)
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TOML)
    args = ["train", "--data", "d", "--out", "r", "--scratch", "--config", str(cfg), "--quiet"]
    proc = _child(args, edge_tl_home, tmp_path)
    # Startup (imports) takes ~2-4 s and the run ~5-15 s: anywhere from start-up to the end.
    time.sleep(random.Random(seed).uniform(1.0, 9.0))
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Whatever the point: a stored model is complete, a checkpoint loads, and the only thing
    # `doctor --check-store` may find is the killed writer's temp file.
    after_kill = check_store()
    assert all(p.path.name.endswith(".part") for p in after_kill.problems), after_kill.problems
    finished = model_path("r").exists()
    if finished:
        assert load_model("r").labels == ["neg", "pos"]
    elif checkpoint_path("r").exists():
        load_checkpoint("r")
    runner = CliRunner()
    if not finished:
        resume = checkpoint_path("r").exists()
        more = ["train", "--resume", "r", "--quiet"] if resume else [*args]
        res = runner.invoke(cli, more)
        assert res.exit_code == 0, res.output
    m = load_model("r")
    assert m.labels == ["neg", "pos"] and m.train_config["stages"] == [1, 1, 2]
    assert not checkpoint_path("r").exists()
    assert _no_parts(edge_tl_home) == []  # the next write of each folder cleaned up
    assert check_store().problems == []


def test_full_disk_while_checkpointing(tmp_path, edge_tl_home, monkeypatch):
    keys.init_identity(None)
    t, lab = _texts(40)
    data.save_dataset("d", t, lab)
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TOML)
    real_fsync, writes = os.fsync, []

    def full_disk(fd: int) -> None:
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if name.startswith(".r.ckpt.") and name.endswith(".part"):
            writes.append(name)
            if len(writes) >= 4:  # the first checkpoints fit, then the disk is full
                raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    runner = CliRunner()
    args = ["train", "--data", "d", "--out", "r", "--scratch", "--config", str(cfg), "--quiet"]
    res = runner.invoke(cli, args)
    assert res.exit_code == 1
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("Error: no space left on the device while writing ")
    assert last.endswith("free some disk space and run the command again; nothing partial was kept")
    assert _no_parts(edge_tl_home) == [] and not model_path("r").exists()
    assert check_store().problems == []  # nothing partial, nothing broken
    before = load_checkpoint("r").position  # the last checkpoint that fitted is intact
    monkeypatch.setattr(os, "fsync", real_fsync)
    res = runner.invoke(cli, ["train", "--resume", "r", "--quiet"])
    assert res.exit_code == 0, res.output
    assert f"batch {before.batch}" in res.output and load_model("r").labels == ["neg", "pos"]


def test_full_disk_while_exporting_keeps_the_old_file(tmp_path, edge_tl_home, monkeypatch):
    keys.init_identity(None)
    save_model(tiny_model())
    out = tmp_path / "m.onnx"
    runner = CliRunner()
    assert runner.invoke(cli, ["export", "tiny", "--out", str(out)]).exit_code == 0
    old = out.read_bytes()

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    res = runner.invoke(cli, ["export", "tiny", "--out", str(out), "--quantize", "int8"])
    assert res.exit_code == 1 and "Error: no space left on the device" in res.output
    assert out.read_bytes() == old and list(tmp_path.glob(".*.part")) == []


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kill_9_at_a_random_point_of_export(seed, tmp_path, edge_tl_home):
    keys.init_identity(None)
    save_model(tiny_model())
    out_dir = tmp_path / "exports"
    out_dir.mkdir()
    (out_dir / ".other.part").write_bytes(b"not ours")  # a user's file: must survive cleanup
    out = out_dir / "m.onnx"
    args = ["export", "tiny", "--out", str(out), "--quantize", "int8"]
    proc = _child(args, edge_tl_home, tmp_path)
    time.sleep(random.Random(100 + seed).uniform(0.5, 6.0))
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    if out.exists():  # atomic: a file that exists is a whole model
        onnx.checker.check_model(onnx.load(str(out)))
    res = CliRunner().invoke(cli, ["export", "tiny", "--out", str(out), "--quantize", "int8"])
    assert res.exit_code == 0, res.output
    onnx.checker.check_model(onnx.load(str(out)))
    assert sorted(p.name for p in out_dir.iterdir()) == [".other.part", "m.onnx"]


def test_interrupted_export_leaves_nothing_and_the_next_one_cleans_up(tmp_path, edge_tl_home):
    """Deterministic half of the test above: a temp file from a killed export is removed."""
    keys.init_identity(None)
    save_model(tiny_model())
    out = tmp_path / "m.onnx"
    stale = tmp_path / ".m.onnx.abc123.part"
    stale.write_bytes(b"half a model")
    assert CliRunner().invoke(cli, ["export", "tiny", "--out", str(out)]).exit_code == 0
    assert not stale.exists() and out.exists()
