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
import torch
from click.testing import CliRunner
from test_export import tiny_model
from tinydata import SCRATCH_TOML as TOML
from tinydata import popen_child, wait_for_writes
from tinydata import scratch_texts as _texts

from edge_tl.cli import cli
from edge_tl.health.integrity import check_store
from edge_tl.store import datasets as data
from edge_tl.store import keys
from edge_tl.store.checkpoints import Position, checkpoint_path, load_checkpoint
from edge_tl.store.models import TrainedModel, load_model, model_path, save_model

CHILD = "import sys; from edge_tl.cli import main; sys.argv[0] = 'edge-tl'; main()"
# The same CLI, parked at its first fsync of a file in FAULT_DIR (the export's folder): inside
# the write of --out, its bytes written, the one point a timed kill rarely hits.
PARKED_CHILD = """
import os, sys, time
real_fsync = os.fsync
def fsync(fd):
    if os.path.dirname(os.readlink(f"/proc/self/fd/{fd}")) == os.environ["FAULT_DIR"]:
        open(os.environ["FAULT_MARKER"], "w").close()
        time.sleep(600)
    real_fsync(fd)
os.fsync = fsync
from edge_tl.cli import main
sys.argv[0] = "edge-tl"
main()
"""
# tiny_model()'s base is not installed: export its whole vocabulary.
FULL = ["--vocab", "full"]
# One thread: a run's float sums then do not depend on how many cores the load average leaves,
# so the killed-and-resumed run and the uninterrupted one compute the same numbers.
FAULT_TOML = TOML + "threads = 1\n"


@pytest.fixture
def one_thread():
    """Restore torch's thread count after an in-process run set it to the config's 1."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _child(
    args: list[str], home: Path, cwd: Path, code: str = CHILD, **env: str
) -> subprocess.Popen:
    return popen_child(
        [sys.executable, "-c", code, *args],
        env={**os.environ, "EDGE_TL_HOME": str(home), **env},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _output(proc: subprocess.Popen) -> str:
    return proc.stdout.read().decode(errors="replace")[-3000:] if proc.stdout else ""


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL `proc`, which must still be running (the kill lands inside its work)."""
    assert proc.poll() is None, f"exit {proc.returncode} before the kill\n{_output(proc)}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, _output(proc)


def _no_parts(home: Path) -> list[Path]:
    return list(home.rglob("*.part"))


def _train_args(cfg: Path, out: str) -> list[str]:
    return ["train", "--data", "d", "--out", out, "--scratch", "--config", str(cfg), "--quiet"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    """The model a run of FAULT_TOML stores when nothing interrupts it (its own home)."""
    root = tmp_path_factory.mktemp("uninterrupted")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGE_TL_HOME", str(root / "home"))
        cfg = _new_run(root)
        res = CliRunner().invoke(cli, _train_args(cfg, "ref"))
        assert res.exit_code == 0, res.output
        model = load_model("ref")
    torch.set_num_threads(threads)
    return model


def _new_run(folder: Path) -> Path:
    """An identity, dataset `d` and FAULT_TOML in the current home; the config's path."""
    keys.init_identity(None)
    t, lab = _texts(40)
    data.save_dataset("d", t, lab)
    cfg = folder / "tiny.toml"
    cfg.write_text(FAULT_TOML)
    return cfg


def _resume_after_kill(home: Path) -> tuple[TrainedModel, Position]:
    """Check the store after a kill mid-run, --resume, check again; the model and position."""
    # No model yet, the last checkpoint whole (atomic), and `doctor --check-store` finding at
    # most the temp file of a checkpoint write the kill cut short.
    assert not model_path("r").exists()
    at = load_checkpoint("r").position
    after_kill = check_store()
    assert all(p.path.name.endswith(".part") for p in after_kill.problems), after_kill.problems
    res = CliRunner().invoke(cli, ["train", "--resume", "r", "--quiet"])
    assert res.exit_code == 0, res.output
    stage = f"{at.phase} stage {at.stage + 1}, epoch {at.epoch + 1}, batch {at.batch}"
    assert f"resuming r: {stage}" in res.output
    assert not checkpoint_path("r").exists()
    assert _no_parts(home) == []  # the next write of each folder cleaned up
    assert check_store().problems == []
    return load_model("r"), at


def _assert_same_model(m: TrainedModel, ref: TrainedModel, at: Position) -> None:
    assert m.labels == ref.labels == ["neg", "pos"] and m.vocab == ref.vocab
    assert m.train_config == ref.train_config and m.train_config["stages"] == [1, 1, 2]
    assert set(m.state_dict) == set(ref.state_dict)
    for k, v in ref.state_dict.items():
        assert torch.equal(m.state_dict[k], v), (k, at)
    assert m.tfidf_head is not None and ref.tfidf_head is not None
    assert m.tfidf_head.features == ref.tfidf_head.features


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kill_9_at_a_random_point_of_training_then_resume(
    seed, tmp_path, edge_tl_home, one_thread, uninterrupted
):
    """SIGKILL at a random batch of the classifier's stages (a checkpoint after every batch),
    then --resume: the model equals, bit for bit, the one an uninterrupted run stores."""
    cfg = _new_run(tmp_path)
    rng = random.Random(seed)
    # Checkpoints 1-12 are the LM's, 13 ends the head stage, 14-40 are stages 2 and 3 (9 a
    # stage epoch); before 14 resume is not exact yet (the xfail test below).
    writes, jitter = rng.randint(14, 36), rng.uniform(0.0, 0.02)
    proc = _child(_train_args(cfg, "r"), edge_tl_home, tmp_path)
    try:
        wait_for_writes(proc, checkpoint_path("r"), writes)
        time.sleep(jitter)  # anywhere in the batch after that checkpoint, its save included
        _kill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    m, at = _resume_after_kill(edge_tl_home)
    assert at.phase == "clas" and (at.stage, at.epoch, at.batch) >= (1, 0, 1), at
    # Resume restores weights, optimizer moments, schedule position and every RNG (Python,
    # NumPy, torch, the loader's); on one thread the arithmetic is then the same: equality.
    _assert_same_model(m, uninterrupted, at)


PARKED_TRAIN = """
import os, sys, time
import edge_tl.store.checkpoints as ck
real_save = ck.save_checkpoint
def save(c):
    path = real_save(c)
    p = c.position
    if f"{p.phase},{p.stage},{p.epoch},{p.batch}" == os.environ["FAULT_AT"]:
        open(os.environ["FAULT_MARKER"], "w").close()
        time.sleep(600)
    return path
ck.save_checkpoint = save
from edge_tl.cli import main
sys.argv[0] = "edge-tl"
main()
"""


@pytest.mark.parametrize(
    "at",
    [
        pytest.param("lm,1,0,5", id="lm-mid-epoch"),
        pytest.param(
            "clas,1,0,0",
            id="after-the-head-stage",
            marks=pytest.mark.xfail(
                strict=True,
                reason="resuming from the checkpoint written right after the cached-features "
                "head stage is not exact yet, though it now holds the RNG state",
            ),
        ),
    ],
)
def test_kill_9_where_a_checkpoint_lacks_state_then_resume(
    at, tmp_path, edge_tl_home, one_thread, uninterrupted
):
    """The same promise at the two checkpoints that do not hold everything yet: exact resume.
    The kill lands right after that checkpoint (the child parks there)."""
    cfg = _new_run(tmp_path)
    marker = tmp_path / "parked"
    env = {"FAULT_AT": at, "FAULT_MARKER": str(marker)}
    proc = _child(_train_args(cfg, "r"), edge_tl_home, tmp_path, PARKED_TRAIN, **env)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert proc.poll() is None, _output(proc)
            assert time.monotonic() < deadline, "the run never reached that checkpoint"
            time.sleep(0.01)
        _kill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    m, pos = _resume_after_kill(edge_tl_home)
    assert f"{pos.phase},{pos.stage},{pos.epoch},{pos.batch}" == at
    _assert_same_model(m, uninterrupted, pos)


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
    assert runner.invoke(cli, ["export", "tiny", "--out", str(out), *FULL]).exit_code == 0
    old = out.read_bytes()

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    res = runner.invoke(cli, ["export", "tiny", "--out", str(out), "--quantize", "int8", *FULL])
    assert res.exit_code == 1 and "Error: no space left on the device" in res.output
    assert out.read_bytes() == old and list(tmp_path.glob(".*.part")) == []


def _graph(path: Path) -> bytes:
    """The model without its metadata (which holds the export time): weights and graph."""
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    return proto.SerializeToString()


def _export_child(
    out: Path, home: Path, cwd: Path, tmp: Path, code: str = CHILD
) -> subprocess.Popen:
    args = ["export", "tiny", "--out", str(out), "--quantize", "int8", *FULL]
    marker = {"FAULT_MARKER": str(cwd / "parked"), "FAULT_DIR": str(out.parent)}
    return _child(args, home, cwd, code, TMPDIR=str(tmp), **marker)


def _wait_for_quantizing(proc: subprocess.Popen, tmp: Path) -> float:
    """Poll until the export has written its unquantized graph (the int8 step has begun)."""
    deadline = time.monotonic() + 120
    while not any(tmp.glob("edge_tl_q*")):
        assert proc.poll() is None, f"exit {proc.returncode} before quantizing\n{_output(proc)}"
        assert time.monotonic() < deadline, "the export never started quantizing"
        time.sleep(0.002)
    return time.monotonic()


# Seed 0 parks the child inside the final write (written, not renamed); seed 1 kills at a
# random time from the start of quantization, which mostly lands before the write.
@pytest.mark.parametrize("seed", [0, 1])
def test_kill_9_at_a_random_point_of_export(seed, tmp_path, edge_tl_home):
    """SIGKILL between the start of quantization and the end of the file write: --out then
    holds the previous export byte for byte or the whole new one, never a part of either."""
    keys.init_identity(None)
    save_model(tiny_model())
    out_dir, tmp = tmp_path / "exports", tmp_path / "tmp"
    out_dir.mkdir()
    tmp.mkdir()
    (out_dir / ".other.part").write_bytes(b"not ours")  # a user's file: must survive cleanup
    out, ref = out_dir / "m.onnx", tmp_path / "ref.onnx"
    runner = CliRunner()
    int8 = ["--quantize", "int8", *FULL]
    assert runner.invoke(cli, ["export", "tiny", "--out", str(ref), *int8]).exit_code == 0
    assert runner.invoke(cli, ["export", "tiny", "--out", str(out), *FULL]).exit_code == 0
    old = out.read_bytes()  # the previous export: fp32, so unlike the int8 one in every byte
    if seed:  # an uninterrupted export times the stretch from quantizing to its exit
        proc = _export_child(tmp_path / "timed.onnx", edge_tl_home, tmp_path, tmp)
        began = _wait_for_quantizing(proc, tmp)
        assert proc.wait() == 0, _output(proc)
        span = time.monotonic() - began
    proc = _export_child(out, edge_tl_home, tmp_path, tmp, PARKED_CHILD if seed == 0 else CHILD)
    try:
        if seed == 0:  # inside the final write: the new file written, not yet renamed
            deadline = time.monotonic() + 120
            while not (tmp_path / "parked").exists():
                assert proc.poll() is None, _output(proc)
                assert time.monotonic() < deadline, "the export never reached its write"
                time.sleep(0.01)
        else:
            _wait_for_quantizing(proc, tmp)
            time.sleep(random.Random(100 + seed).uniform(0.0, 0.6) * span)
        _kill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Atomic: the old file intact, or the whole new one; beside it at most our temp file.
    now = out.read_bytes()
    if now != old:
        onnx.checker.check_model(onnx.load(str(out)))
        assert _graph(out) == _graph(ref)  # the int8 export, complete
    left = sorted(p.name for p in out_dir.iterdir() if p.name not in ("m.onnx", ".other.part"))
    assert all(n.startswith(".m.onnx.") and n.endswith(".part") for n in left), left
    if seed == 0:  # parked before the rename: the old file, and the written temp file beside it
        assert now == old and len(left) == 1
    res = runner.invoke(cli, ["export", "tiny", "--out", str(out), "--quantize", "int8", *FULL])
    assert res.exit_code == 0, res.output
    assert _graph(out) == _graph(ref)
    assert sorted(p.name for p in out_dir.iterdir()) == [".other.part", "m.onnx"]


def test_interrupted_export_leaves_nothing_and_the_next_one_cleans_up(tmp_path, edge_tl_home):
    """Deterministic half of the test above: a temp file from a killed export is removed."""
    keys.init_identity(None)
    save_model(tiny_model())
    out = tmp_path / "m.onnx"
    stale = tmp_path / ".m.onnx.abc123.part"
    stale.write_bytes(b"half a model")
    assert CliRunner().invoke(cli, ["export", "tiny", "--out", str(out), *FULL]).exit_code == 0
    assert not stale.exists() and out.exists()
