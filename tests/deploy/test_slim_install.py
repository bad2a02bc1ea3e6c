"""The runtime install (`pip install edge_tl`, no extras): predict, evaluate MODEL.onnx, keys
and data work without the training stack; a command that needs it says which extra to add."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_export import tiny_model
from tinydata import run_child

ROOT = Path(__file__).resolve().parents[2]
# What the runtime install lacks: importing any of these fails as if it were not installed.
TRAINING = ("torch", "fastai", "fastprogress", "sklearn", "onnx", "safetensors", "matplotlib")
SERVE = ("uvicorn", "starlette")


def _slim(args: list[str], missing: tuple[str, ...], home: Path) -> subprocess.CompletedProcess:
    code = (
        "import sys\n"
        f"for m in {missing!r}: sys.modules[m] = None\n"
        "from edge_tl.cli import main\n"
        f"sys.argv = ['edge-tl', *{args!r}]\n"
        "main()\n"
    )
    env = {"PATH": "/usr/bin:/bin", "EDGE_TL_HOME": str(home), "PYTHONPATH": str(ROOT)}
    return run_child(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory) -> Path:
    from edge_tl.deploy.export import export_onnx

    return export_onnx(
        tiny_model(seed=4, n_class=2), tmp_path_factory.mktemp("m") / "r.onnx", vocab="full"
    )


def test_predict_and_evaluate_run_without_the_training_stack(onnx_path, tmp_path) -> None:
    r = _slim(["predict", str(onnx_path), "good film"], TRAINING + SERVE, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\t")[0] in ("neg", "pos")
    rows = tmp_path / "rows.csv"
    rows.write_text("text,label\ngood film,pos\nbad film,neg\n", encoding="utf-8")
    r = _slim(["evaluate", str(onnx_path), "--file", str(rows)], TRAINING + SERVE, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("accuracy ")
    r = _slim(["keys", "init", "--no-passphrase"], TRAINING + SERVE, tmp_path)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    ("args", "missing", "extra"),
    [
        (["train", "--data", "d", "--out", "m"], TRAINING, "train"),
        (["export", "m", "--out", "m.onnx"], TRAINING, "train"),
        (["serve", "m.onnx"], SERVE, "serve"),
    ],
)
def test_a_command_that_needs_an_extra_says_which(args, missing, extra, tmp_path) -> None:
    r = _slim(args, missing, tmp_path)
    assert r.returncode == 1, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: this command needs ") and "Traceback" not in r.stderr
    assert last.endswith(f"install it with `pip install 'edge_tl[{extra}]'`")
