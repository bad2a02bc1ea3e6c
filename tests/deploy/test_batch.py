"""Batch scoring (`edge-tl predict --file ... --out ...`), the scikit-learn style API and
execution providers."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_export import tiny_model

from edge_tl.cli import cli
from edge_tl.deploy.batch import read_rows, score_stream
from edge_tl.deploy.predict import Classifier, resolve_providers
from edge_tl.errors import DataError, DeviceError

TEXTS = ["great fun, loved it", "boring and bad", "not good at all", "a fine film"]


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory) -> Path:
    from edge_tl.deploy.export import export_onnx

    return export_onnx(
        tiny_model(seed=3, n_class=2), tmp_path_factory.mktemp("m") / "b.onnx", vocab="full"
    )


@pytest.fixture(scope="module")
def clf(onnx_path: Path) -> Classifier:
    return Classifier(onnx_path)


def _run(*args: str, input: str | None = None) -> str:
    r = CliRunner().invoke(cli, ["predict", *args], input=input)
    assert r.exit_code == 0, r.output
    return r.stdout


@pytest.mark.parametrize("sep", ["\u0085", "\u2028", "\u2029", "\x0c", "\x1c", "\x0b"])
def test_one_result_per_newline_whatever_else_the_text_holds(onnx_path, clf, sep) -> None:
    """Unicode line breaks inside a text stay inside it (str.splitlines would split there)."""
    texts = [f"good film{sep}great cast", "bad", f"{sep}dull{sep}"]
    out = _run(str(onnx_path), "-", "--jsonl", input="\n".join(texts) + "\n")
    rows = [json.loads(line) for line in out.splitlines()]  # JSONL escapes every line break
    assert [r["text"] for r in rows] == texts
    assert [r["label"] for r in rows] == clf.predict(texts)


def test_a_file_with_crlf_lines_scores_each_line_once(onnx_path, tmp_path) -> None:
    f = tmp_path / "t.txt"
    f.write_bytes(b"good\r\nbad\r\n\r\nfine")
    rows = [json.loads(x) for x in _run(str(onnx_path), "--file", str(f), "--jsonl").splitlines()]
    assert [r["text"] for r in rows] == ["good", "bad", "fine"]


def test_csv_in_csv_out_keeps_every_column(onnx_path, clf, tmp_path) -> None:
    src = tmp_path / "in.csv"
    with src.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "review", "note"])
        for i, t in enumerate(TEXTS):
            w.writerow([i, t.replace(",", ",\n"), f"n{i}"])  # a text with a newline inside
    out = tmp_path / "out.csv"
    r = CliRunner().invoke(
        cli,
        ["predict", str(onnx_path), "--file", str(src), "--text-col", "review", "--out", str(out)],
    )
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(out.open(encoding="utf-8", newline="")))
    assert list(rows[0]) == ["id", "review", "note", "label", "prob_neg", "prob_pos"]
    texts = [t.replace(",", ",\n") for t in TEXTS]
    assert [r["review"] for r in rows] == texts and [r["id"] for r in rows] == ["0", "1", "2", "3"]
    assert [r["label"] for r in rows] == clf.predict(texts)
    probs = clf.predict_proba(texts)
    assert [float(r["prob_pos"]) for r in rows] == pytest.approx(probs[:, 1].tolist(), abs=1e-6)


def test_gzipped_jsonl_in_jsonl_out(onnx_path, clf, tmp_path) -> None:
    src = tmp_path / "in.jsonl.gz"
    with gzip.open(src, "wt", encoding="utf-8") as f:
        for i, t in enumerate(TEXTS):
            f.write(json.dumps({"id": i, "text": t, "meta": {"k": i}}) + "\n")
    out = tmp_path / "out.jsonl"
    _run(str(onnx_path), "--file", str(src), "--out", str(out))
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [r["meta"] for r in rows] == [{"k": i} for i in range(4)]
    assert [r["label"] for r in rows] == clf.predict(TEXTS)
    assert set(rows[0]["probs"]) == {"neg", "pos"}


def test_scoring_streams_rows_a_chunk_at_a_time(clf) -> None:
    """The first chunk's results come out before later rows are read: constant memory."""
    read = []

    def rows():
        for i in range(10):
            read.append(i)
            yield {"i": i}, TEXTS[i % 4]

    scored = score_stream(clf, rows(), chunk=3)
    first = next(scored)
    assert first[0] == {"i": 0} and read == [0, 1, 2]


def test_missing_text_column_names_the_columns(onnx_path, tmp_path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("id,body\n1,hello\n", encoding="utf-8")
    r = CliRunner().invoke(cli, ["predict", str(onnx_path), "--file", str(src)])
    assert r.exit_code == 1
    assert r.output.strip() == (
        f"Error: {src} has no column 'text' (its columns: id, body). "
        "name the text column with --text-col"
    )


def test_an_empty_text_in_a_file_is_named_by_its_row(clf) -> None:
    rows = read_rows(io.StringIO("id,text\n1,good\n2,\n"), "csv", "text", "in.csv")
    with pytest.raises(DataError, match="text 2 is empty"):
        list(score_stream(clf, rows))


def test_providers_resolve_or_say_what_is_missing(onnx_path) -> None:
    assert resolve_providers(None) == ["CPUExecutionProvider"]
    assert resolve_providers(["cpu"]) == ["CPUExecutionProvider"]
    with pytest.raises(DeviceError, match="execution provider 'nope' is not available"):
        resolve_providers(["nope"])
    assert Classifier(onnx_path, providers=["cpu"]).providers == ["CPUExecutionProvider"]
    r = CliRunner().invoke(cli, ["predict", str(onnx_path), "hi", "--provider", "tensorrt"])
    import onnxruntime as ort

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        assert r.exit_code == 1 and "install onnxruntime-gpu" in r.output


def test_sklearn_style_api(clf) -> None:
    probs = clf.predict_proba(TEXTS)
    assert probs.shape == (4, 2) and list(clf.classes_) == ["neg", "pos"]
    assert clf.predict(TEXTS) == [clf.classes_[i] for i in probs.argmax(1)]
    assert [p.label for p in clf.classify(TEXTS)] == clf.predict(TEXTS)
