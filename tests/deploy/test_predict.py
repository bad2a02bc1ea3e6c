"""edge_tl.deploy.predict and `edge-tl predict`: onnxruntime only, exact errors, fuzzed metadata."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_export import fastai_probs, tiny_model

from edge_tl.cli import cli
from edge_tl.deploy.predict import Classifier, read_metadata
from edge_tl.errors import DataError, ExportError

ROOT = Path(__file__).resolve().parents[2]
TEXTS = [
    "This movie was great fun, I loved it!",
    "Boring plot and bad acting. It's not good.",
    "The film is awful " * 30,
    "Good.",
]


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=1, n_class=2)


@pytest.fixture(scope="module")
def onnx_path(model, tmp_path_factory) -> Path:
    from edge_tl.deploy.export import export_onnx

    return export_onnx(model, tmp_path_factory.mktemp("m") / "tiny.onnx")


@pytest.fixture(scope="module")
def clf(onnx_path: Path) -> Classifier:
    return Classifier(onnx_path)


def _props(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(path).metadata_props}


def _with_props(src: Path, dst: Path, **changes: str | None) -> Path:
    proto = onnx.load(src)
    props = {p.key: p.value for p in proto.metadata_props}
    for k, v in changes.items():
        k = k.replace("__", ".")
        if v is None:
            props.pop(k, None)
        else:
            props[k] = v
    del proto.metadata_props[:]
    for k, v in props.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.save(proto, dst)
    return dst


def test_predict_matches_fastai_one_at_a_time(model, clf: Classifier) -> None:
    probs = clf.predict_proba(TEXTS)
    ref = fastai_probs(model, clf.encode(TEXTS))
    assert np.abs(probs - ref).max() < 1e-4
    preds = clf.predict(TEXTS)
    assert [p.label for p in preds] == [clf.labels[i] for i in ref.argmax(1)]
    assert set(preds[0].probs) == {"neg", "pos"}
    assert abs(sum(preds[0].probs.values()) - 1) < 1e-5


def test_batching_does_not_change_predictions(clf: Classifier) -> None:
    together = clf.predict_proba(TEXTS * 20)  # several length buckets
    alone = np.stack([clf.predict_proba([t])[0] for t in TEXTS])
    assert np.abs(together - np.tile(alone, (20, 1))).max() < 1e-6


def test_provenance_travels_in_the_file(clf: Classifier) -> None:
    prov = clf.provenance
    assert prov["base"] == "fakebase" and prov["dataset_fingerprint"] == "f" * 16
    assert prov["metrics"] == {"accuracy": 0.5} and prov["quantize"] is None
    assert clf.meta.format_version == 1


def test_cli_text_file_stdin_and_json(onnx_path: Path, tmp_path: Path, clf: Classifier) -> None:
    r = CliRunner().invoke(cli, ["predict", str(onnx_path), TEXTS[0]])
    assert r.exit_code == 0, r.output
    label = clf.predict(TEXTS[0])[0].label
    assert r.output.startswith(f"{label}\t")
    f = tmp_path / "texts.txt"
    f.write_text("\n".join(TEXTS) + "\n\n", encoding="utf-8")
    r = CliRunner().invoke(cli, ["predict", str(onnx_path), "--file", str(f), "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert [row["label"] for row in rows] == [p.label for p in clf.predict(TEXTS)]
    r = CliRunner().invoke(cli, ["predict", str(onnx_path), "-"], input="\n".join(TEXTS[:2]))
    assert r.exit_code == 0 and len(r.output.splitlines()) == 2


def _error(args: list[str], input: bytes | str | None = None) -> str:
    r = CliRunner().invoke(cli, ["predict", *args], input=input)
    assert r.exit_code == 1, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    return r.output.splitlines()[-1]


def test_bad_inputs_give_clear_errors(onnx_path: Path, tmp_path: Path) -> None:
    m = str(onnx_path)
    assert _error([m, "   "]) == "Error: text 1 is empty. give some text to classify"
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 movie\n".encode("latin-1"))
    assert _error([m, "--file", str(bad)]) == (
        f"Error: {bad} is not UTF-8 text (bad byte at offset 3). "
        "convert it to UTF-8, one text per line"
    )
    assert _error([m, "-"], input="\n \n") == (
        "Error: standard input has no text. give one text per line"
    )
    missing = tmp_path / "nope.onnx"
    line = _error([str(missing), "hi"])
    assert line == f"Error: model file {missing} does not exist. check the path"
    r = CliRunner().invoke(cli, ["predict", m])
    assert r.exit_code == 2


def test_not_a_model_and_corrupted(onnx_path: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a model at all\n" * 10)
    assert _error([str(junk), "hi"]) == (
        f"Error: {junk} is not a readable ONNX model (corrupted or not a model file). "
        "re-export it with `edge-tl export`"
    )
    data = onnx_path.read_bytes()
    for cut in (10, len(data) // 3, len(data) - 7):
        trunc = tmp_path / f"trunc{cut}.onnx"
        trunc.write_bytes(data[:cut])
        with pytest.raises(ExportError):
            Classifier(trunc)
    # An ONNX model that is not ours (no edge_tl metadata).
    foreign = _with_props(onnx_path, tmp_path / "foreign.onnx", edge_tl__format=None)
    assert _error([str(foreign), "hi"]) == (
        "Error: this is not an edge_tl model (no edge_tl format marker in its metadata). "
        "give a file written by `edge-tl export`"
    )


def test_wrong_format_version(onnx_path: Path, tmp_path: Path) -> None:
    v3 = _with_props(onnx_path, tmp_path / "v3.onnx", edge_tl__format_version="3")
    assert _error([str(v3), "hi"]) == (
        "Error: model file is format version 3; this edge_tl reads versions 1 and 2. "
        "upgrade edge_tl"
    )


def test_encrypted_model_decrypts_in_memory(
    model, tmp_path: Path, clf: Classifier, edge_tl_home: Path, monkeypatch
) -> None:
    from edge_tl.deploy.export import export_onnx
    from edge_tl.store import keys

    keys.init_identity(None)
    enc = export_onnx(model, tmp_path / "enc.onnx", encrypt=True)
    assert enc.read_bytes().startswith(b"age-encryption.org/v1")
    got = Classifier(enc).predict_proba(TEXTS)
    assert np.abs(got - clf.predict_proba(TEXTS)).max() == 0
    # Another device (another identity) cannot read it.
    other = tmp_path / "other_home"
    monkeypatch.setenv("EDGE_TL_HOME", str(other))
    keys.init_identity(None)
    line = _error([str(enc), "hi"])
    assert line.startswith(f"Error: cannot decrypt model {enc}: wrong key")


def test_predict_imports_no_torch_fastai_spacy(onnx_path: Path) -> None:
    code = (
        "import sys\n"
        "from edge_tl.cli import cli\n"
        f"cli.main(['predict', {str(onnx_path)!r}, 'great movie'], standalone_mode=False)\n"
        "from edge_tl.deploy.predict import Classifier\n"
        f"Classifier({str(onnx_path)!r}).predict(['fun'])\n"
        "bad = sorted(m for m in ('torch', 'fastai', 'spacy') if m in sys.modules)\n"
        "print('IMPORTED', bad)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    ).stdout
    assert out.splitlines()[-1] == "IMPORTED []"


# ---- fuzz: the metadata reader never fails with anything but ExportError ----

_KEYS = [
    "edge_tl.format",
    "edge_tl.format_version",
    "edge_tl.labels",
    "edge_tl.vocab",
    "edge_tl.tokenizer",
    "edge_tl.provenance",
]
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
    max_leaves=12,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    key=st.sampled_from(_KEYS),
    value=st.one_of(_json_values.map(json.dumps), st.text(max_size=20), st.none()),
)
def test_fuzz_metadata_one_field(onnx_path: Path, key: str, value: str | None) -> None:
    props = dict(_props_cache(onnx_path))
    if value is None:
        props.pop(key)
    else:
        props[key] = value
    try:
        meta = read_metadata(props)
    except ExportError:
        return
    # Accepted: then it must be usable.
    from edge_tl.deploy.tokenizer import tokenizer_from_spec

    try:
        tokenizer_from_spec(meta.tokenizer)
    except ExportError:
        pass
    assert meta.format_version == 1 and meta.labels


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(_KEYS) | st.text(max_size=10),
        st.text(max_size=30) | _json_values.map(json.dumps),
        max_size=8,
    )
)
def test_fuzz_metadata_arbitrary(props: dict[str, str]) -> None:
    try:
        read_metadata(props)
    except ExportError:
        pass


_CACHE: dict[Path, dict[str, str]] = {}


def _props_cache(path: Path) -> dict[str, str]:
    if path not in _CACHE:
        _CACHE[path] = _props(path)
    return _CACHE[path]


def test_empty_api_input_is_an_error(clf: Classifier) -> None:
    with pytest.raises(DataError, match="text 2 is empty"):
        clf.predict(["fine", ""])
