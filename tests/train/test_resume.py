"""Checkpoints: encrypted, atomic, round-trip exactly; kill -9 mid-run, then --resume finishes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from tinydata import SCRATCH_TOML as TOML
from tinydata import popen_child
from tinydata import scratch_texts as _texts

from edge_tl.cli import cli
from edge_tl.errors import ModelError
from edge_tl.store import datasets as data
from edge_tl.store import keys
from edge_tl.store.checkpoints import (
    Checkpoint,
    Position,
    capture_rng,
    checkpoint_from_bytes,
    checkpoint_path,
    checkpoint_to_bytes,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from edge_tl.store.models import load_model, model_path


def _ckpt(name: str = "r", fp: str = "fp") -> Checkpoint:
    torch.manual_seed(0)
    w = torch.nn.Linear(3, 2)
    opt = {
        "state": [{"grad_avg": torch.ones(2, 3), "step": 3, "do_wd": True}, {}],
        "hypers": [{"lr": 0.1, "mom": 0.9, "wd": 0.01}],
    }
    return Checkpoint(
        name=name,
        data="d",
        base=None,
        lm_data=[],
        dataset_fingerprint=fp,
        train_config={"seed": 1},
        position=Position("clas", 1, 0, 7),
        vocab=["xxunk", "xxpad"],
        labels=["a", "b"],
        model_state=w.state_dict(),
        opt_state=opt,
        rng_epoch_start=capture_rng(),
        rng_now=capture_rng(),
        extra={"lm_tokens_per_s": 5.0},
    )


def test_checkpoint_round_trip_and_rng() -> None:
    c = _ckpt()
    back = checkpoint_from_bytes(checkpoint_to_bytes(c), "checkpoint r")
    assert back.position == c.position and back.extra == c.extra and back.vocab == c.vocab
    for k, v in c.model_state.items():
        assert torch.equal(back.model_state[k], v)
    st = back.opt_state["state"]
    assert torch.equal(st[0]["grad_avg"], torch.ones(2, 3)) and st[0]["step"] == 3
    assert st[1] == {} and back.opt_state["hypers"][0]["lr"] == 0.1
    restore_rng(back.rng_now)
    draws = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    restore_rng(c.rng_now)
    assert draws == (random.random(), float(np.random.rand()), float(torch.rand(1)))


def test_checkpoint_is_encrypted_and_checked() -> None:
    keys.init_identity(None)
    path = save_checkpoint(_ckpt())
    raw = path.read_bytes()
    assert raw.startswith(b"age-encryption.org/v1") and b"xxunk" not in raw
    assert load_checkpoint("r").position.batch == 7
    path.write_bytes(raw[:-5])
    res = CliRunner().invoke(cli, ["train", "--resume", "r"])
    assert res.exit_code == 1
    assert res.output.startswith("Error: cannot decrypt checkpoint r: wrong key")
    plain = checkpoint_to_bytes(_ckpt())
    with pytest.raises(ModelError, match="not an edge_tl/checkpoint v1 file"):
        checkpoint_from_bytes(b"edge_tl/model v1\n" + plain[22:], "checkpoint r")


def test_resume_refuses_changed_data() -> None:
    keys.init_identity(None)
    t, lab = _texts(30)
    data.save_dataset("d", t, lab)
    save_checkpoint(_ckpt(fp="not-the-same"))
    res = CliRunner().invoke(cli, ["train", "--resume", "r"])
    assert res.exit_code == 1
    assert res.output.strip().endswith(
        "Error: dataset 'd' changed since the run started. start over with `edge-tl train "
        "--data d --out r --restart` (the checkpoint is for other data)"
    )


def test_kill_9_then_resume_finishes_with_the_same_config(tmp_path: Path, edge_tl_home) -> None:
    keys.init_identity(None)
    t, lab = _texts(40)
    data.save_dataset("d", t, lab)
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TOML)
    marker = tmp_path / "paused"
    # The child parks itself right after the first clas-stage-2 checkpoint, so the kill lands
    # there on any machine speed (polling alone raced a fast CI box to the finished model).
    code = f"""
import sys, time, torch
torch.backends.mkldnn.enabled = False
import edge_tl.store.checkpoints as ck
_real = ck.save_checkpoint
def _save(c):
    path = _real(c)
    p = c.position
    if p.phase == "clas" and (p.stage, p.epoch, p.batch) >= (1, 0, 1):
        open({str(marker)!r}, "w").close()
        time.sleep(600)
    return path
ck.save_checkpoint = _save
from edge_tl.cli import main
sys.argv[0] = "edge-tl"
main()
"""
    proc = popen_child(
        [
            sys.executable,
            "-c",
            code,
            "train",
            "--data",
            "d",
            "--out",
            "r1",
            "--scratch",
            "--config",
            str(cfg),
            "--quiet",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    killed_at = None
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            if marker.exists():
                os.kill(proc.pid, signal.SIGKILL)
                killed_at = load_checkpoint("r1").position
                break
    finally:
        if proc.poll() is None and killed_at is None:
            proc.kill()
        proc.wait()
    assert killed_at is not None, proc.stdout.read().decode()[-2000:]
    assert proc.returncode == -signal.SIGKILL
    assert not model_path("r1").exists()
    before = load_checkpoint("r1")
    res = CliRunner().invoke(cli, ["train", "--resume", "r1", "--quiet"])
    assert res.exit_code == 0, res.output
    p = before.position
    assert (
        f"resuming r1: clas stage {p.stage + 1}, epoch {p.epoch + 1}, batch {p.batch}" in res.output
    )
    m = load_model("r1")
    assert m.train_config == before.train_config and m.train_config["stages"] == [1, 1, 2]
    assert m.vocab == before.vocab and m.labels == ["neg", "pos"]
    assert [s["stage"] for s in m.metrics["stages"]] == list(range(p.stage, 3))
    assert not checkpoint_path("r1").exists()
    assert not list((edge_tl_home / "runs").glob(".*.part"))


def _interrupted_run_setup(tmp_path: Path) -> Path:
    keys.init_identity(None)
    t, lab = _texts(30)
    data.save_dataset("d", t, lab)
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TOML.replace("scratch_lm = true\n", ""))  # no LM stage: straight to clas
    return cfg


def test_a_new_run_never_overwrites_an_interrupted_runs_checkpoint(tmp_path: Path) -> None:
    cfg = _interrupted_run_setup(tmp_path)
    path = save_checkpoint(_ckpt("r", fp=data.dataset_info("d").fingerprint))
    before = path.read_bytes()
    args = ["train", "--data", "d", "--out", "r", "--scratch", "--config", str(cfg), "--quiet"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1
    assert res.output == (
        "Error: an interrupted run of model 'r' left a checkpoint (runs/r.ckpt); starting again "
        "would overwrite it. continue it with `edge-tl train --resume r`, or start over with "
        "--restart (drops the checkpoint)\n"
    )
    assert path.read_bytes() == before and not model_path("r").exists()
    # --restart drops it only once the new run's inputs check out
    res = CliRunner().invoke(cli, [*args[:2], "nope", *args[3:], "--restart"])
    assert res.exit_code == 1 and "dataset 'nope' not found" in res.output
    assert path.read_bytes() == before
    res = CliRunner().invoke(cli, ["train", "--resume", "r", "--restart"])
    assert res.exit_code == 2 and "drop --restart" in res.output
    res = CliRunner().invoke(cli, [*args, "--restart"])
    assert res.exit_code == 0, res.output
    assert "dropped the checkpoint of the interrupted run of 'r' (--restart)" in res.output
    assert load_model("r").labels == ["neg", "pos"] and not checkpoint_path("r").exists()


def test_ctrl_c_prints_the_resume_command(tmp_path: Path, monkeypatch) -> None:
    from edge_tl.train import runner as runner_mod

    cfg = _interrupted_run_setup(tmp_path)
    fp = data.dataset_info("d").fingerprint

    def interrupted(*a, **k):
        save_checkpoint(_ckpt("r", fp=fp))  # as the run's own hook does each epoch
        raise KeyboardInterrupt

    monkeypatch.setattr(runner_mod.recipe, "train_classifier", interrupted)
    args = ["train", "--data", "d", "--out", "r", "--scratch", "--config", str(cfg), "--quiet"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 130
    assert res.stderr.strip().splitlines()[-1] == (
        "Interrupted. Continue from the last checkpoint with: edge-tl train --resume r"
    )
    checkpoint_path("r").unlink()

    def too_early(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner_mod.recipe, "train_classifier", too_early)
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 130 and "nothing to resume" in res.stderr
