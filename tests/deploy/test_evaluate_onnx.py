"""`edge-tl evaluate MODEL.onnx`: the exported file scored with onnxruntime alone gives the
report the stored model gets (fp32 to float precision; int8 within its measured tolerance)."""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_export import tiny_model
from tinydata import keyword_texts, run_child

from edge_tl.cli import cli
from edge_tl.deploy.evaluate import evaluate_onnx
from edge_tl.deploy.predict import Classifier
from edge_tl.errors import DataError
from edge_tl.train.evaluate import evaluate_texts
from edge_tl.train.head import fit_head

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def head_model():
    texts, labels = keyword_texts(60, 0, noise=0.2)
    model = tiny_model(seed=2, n_class=2)
    return dataclasses.replace(model, tfidf_head=fit_head(texts, labels, model.labels))


@pytest.fixture(scope="module")
def rows():
    return keyword_texts(40, seed=9, noise=0.3)


@pytest.mark.parametrize("quantize", [None, "int8"])
@pytest.mark.parametrize("head", [True, False])
def test_the_export_scores_like_the_stored_model(head_model, rows, tmp_path, quantize, head):
    from edge_tl.deploy.export import export_onnx

    model = head_model if head else dataclasses.replace(head_model, tfidf_head=None)
    texts, labels = rows
    want = evaluate_texts(model, texts, labels)
    clf = Classifier(export_onnx(model, tmp_path / "m.onnx", quantize=quantize, vocab="full"))
    got = evaluate_onnx(clf, texts, labels)
    keys = ["accuracy", "neural_accuracy", "tfidf_accuracy"] if head else ["accuracy"]
    # int8: dynamic quantization of the LSTM and linear weights moves a probability by
    # <= 0.02 on these rows (test_export's parity bound), so an accuracy by at most a row or two
    tol = 0 if quantize is None else 2 / len(texts)
    for k in keys:
        assert got[k] == pytest.approx(want[k], abs=tol + 1e-9), k
    if quantize is None:
        assert got["confusion_matrix"] == want["confusion_matrix"]
        if head:
            assert got["weight_sweep"] == pytest.approx(want["weight_sweep"], abs=1e-9)


def test_the_cli_evaluates_a_file_of_rows_without_torch(head_model, rows, tmp_path) -> None:
    from edge_tl.deploy.export import export_onnx

    path = export_onnx(head_model, tmp_path / "m.onnx", vocab="full")
    src = tmp_path / "test.csv"
    with src.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["review", "y"])
        w.writerows(zip(*rows, strict=True))
    args = ["evaluate", str(path), "--file", str(src), "--text-col", "review", "--label-col", "y"]
    r = CliRunner().invoke(cli, [*args, "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    want = evaluate_texts(head_model, *rows)
    assert got["accuracy"] == pytest.approx(want["accuracy"]) and got["n"] == len(rows[0])
    code = (
        "import sys\nfrom edge_tl.cli import cli\n"
        f"cli.main({args!r}, standalone_mode=False)\n"
        "print('IMPORTED', sorted(m for m in ('torch', 'fastai', 'sklearn') if m in sys.modules))"
    )
    out = run_child(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "accuracy" in out.stdout and "IMPORTED []" in out.stdout


def test_labels_the_model_does_not_know_are_an_error(head_model, tmp_path) -> None:
    from edge_tl.deploy.export import export_onnx

    clf = Classifier(export_onnx(head_model, tmp_path / "m.onnx", vocab="full"))
    with pytest.raises(DataError, match="label 'meh' is not one the model predicts"):
        evaluate_onnx(clf, ["good film"], ["meh"])
