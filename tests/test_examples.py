"""examples/0*.py run as a user runs them: subprocesses, in order, in one fresh home, --tiny.

The checks read figures the scripts computed at run time (accuracies, per-class counts, the
exported file, predictions), not fixed strings only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
from tinydata import run_child

from edge_tl.deploy.predict import Classifier

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = ("01_vault.py", "02_train_evaluate.py", "03_export_predict.py", "04_compare.py")
TINY = {"02_train_evaluate.py", "04_compare.py"}  # the scripts with a --tiny flag
PLAINTEXT = b"Having seen and loved Greg Lombardo"  # start of the first review of the sample
NUM = r"(\d+\.\d+)"
# The four scripts on the real IMDb sample take the longest of any module (~40 s on 2 cores).
pytestmark = pytest.mark.slow


def run_example(script: str, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Run one example with its own EDGE_TL_HOME (via --home) and no inherited passphrase."""
    clean = {k: v for k, v in os.environ.items() if k not in ("EDGE_TL_HOME", "EDGE_TL_PASSPHRASE")}
    return run_child(
        [sys.executable, EXAMPLES / script, "--home", home, *args],
        cwd=home.parent,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Run the four scripts in order in one new home; the home and each script's stdout."""
    home = tmp_path_factory.mktemp("examples") / "home"
    out = {}
    for script in SCRIPTS:
        res = run_example(script, home, *(["--tiny"] if script in TINY else []))
        assert res.returncode == 0, f"{script} exited {res.returncode}\n{res.stdout}{res.stderr}"
        out[script] = res.stdout
    return home, out


def test_vault_key_import_list_open(chain: tuple[Path, dict[str, str]]) -> None:
    home, out = chain
    text = out["01_vault.py"]
    assert "created device identity (no passphrase); recipient age1" in text
    assert re.search(r"imdb-sample\s+1000 rows\s+neg 500, pos 500", text)
    assert re.search(r"imdb-sample-test\s+500 rows\s+neg 250, pos 250", text)
    assert "opened 'imdb-sample' in memory: 1000 rows, labels ['neg', 'pos']" in text
    # After every script ran: no file under the home holds a review in plaintext.
    leaks = [p for p in home.rglob("*") if p.is_file() and PLAINTEXT in p.read_bytes()]
    assert leaks == []


def test_train_evaluate_reports_consistent_figures(chain: tuple[Path, dict[str, str]]) -> None:
    text = chain[1]["02_train_evaluate.py"]
    valid = re.search(rf"validation accuracy {NUM} on (\d+) rows", text)
    assert valid and 0.0 <= float(valid[1]) <= 1.0 and int(valid[2]) == 20  # 10 % of 200
    acc = re.search(rf"^accuracy {NUM} on (\d+) rows \(macro F1 {NUM}\)$", text, re.M)
    assert acc and int(acc[2]) == 100 and 0.0 <= float(acc[1]) <= 1.0
    per_class = re.findall(rf"^(neg|pos)\s+{NUM}\s+{NUM}\s+{NUM}\s+(\d+)$", text, re.M)
    assert [c[0] for c in per_class] == ["neg", "pos"]
    assert all(0.0 <= float(x) <= 1.0 for c in per_class for x in c[1:4])
    assert sum(int(c[4]) for c in per_class) == 100
    cm = [[int(a), int(b)] for a, b in re.findall(r"^(?:neg|pos)\s+(\d+)\s+(\d+)$", text, re.M)]
    assert len(cm) == 2 and sum(map(sum, cm)) == 100
    assert float(acc[1]) == pytest.approx((cm[0][0] + cm[1][1]) / 100, abs=1e-4)


def test_export_is_int8_onnx_and_predictions_match(chain: tuple[Path, dict[str, str]]) -> None:
    home, out = chain
    path = home / "exports" / "sentiment.int8.onnx"
    assert f"exported {path} ({path.stat().st_size:,} bytes, int8)" in out["03_export_predict.py"]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # the model carries its TF-IDF head (train's default): format version 2
    assert [i.name for i in sess.get_inputs()] == [
        "input_ids",
        "lengths",
        "tfidf_ids",
        "tfidf_counts",
    ]
    assert json.loads(sess.get_modelmeta().custom_metadata_map["edge_tl.labels"]) == ["neg", "pos"]
    assert "DynamicQuantizeLSTM" in {n.op_type for n in onnx.load(str(path)).graph.node}
    printed = re.findall(rf"^  (neg|pos)\s+{NUM}  ", out["03_export_predict.py"], re.M)
    spec = importlib.util.spec_from_file_location("ex03", EXAMPLES / "03_export_predict.py")
    assert spec is not None and spec.loader is not None
    ex03 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex03)
    preds = Classifier(path).classify(ex03.REVIEWS)
    assert [(p.label, f"{p.score:.3f}") for p in preds] == printed and len(printed) == 3


def test_compare_curve_table_and_files(chain: tuple[Path, dict[str, str]]) -> None:
    home, out = chain
    text = out["04_compare.py"]
    units = dict(re.findall(rf"^\[\d/6\] (\S+): accuracy {NUM} ", text, re.M))
    assert sorted(units) == sorted(
        f"{arm}/{n}/0"
        for arm in ("tfidf/none", "scratch/none", "transfer/supervised")
        for n in (10, 20)
    )
    folder = home / "compare-tiny"
    doc = json.loads((folder / "results.json").read_text())
    assert len(doc["runs"]) == 6
    for key, rec in doc["runs"].items():
        assert 0.0 <= rec["accuracy"] <= 1.0 and units[key] == f"{rec['accuracy']:.4f}"
        assert rec["test_rows"] == 20
    assert re.search(r"^\| 10 \| 0\.\d{3} ± 0\.000 \(1\) \|", text, re.M)
    assert re.search(r"^\| 20 \| 0\.\d{3} ± 0\.000 \(1\) \|", text, re.M)
    assert (folder / "curve.png").read_bytes().startswith(b"\x89PNG")
    assert (folder / "table.md").is_file() and (folder / "table.csv").is_file()


def test_passphrase_from_env_and_errors_as_lines(tmp_path: Path) -> None:
    home = tmp_path / "home"
    res = run_example("01_vault.py", home, EDGE_TL_PASSPHRASE="correct horse")
    assert res.returncode == 0, res.stderr
    assert "created device identity (passphrase-protected)" in res.stdout
    assert (home / "keys" / "identity.txt").read_bytes().startswith(b"-----BEGIN AGE")
    res = run_example("01_vault.py", home)  # no passphrase now: an EdgeTLError, no traceback
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.startswith("Error: the device identity is passphrase-protected")
    res = run_example("03_export_predict.py", home, "--model", "missing")
    assert res.returncode == 1 and res.stderr.startswith("Error: no model named 'missing'")
