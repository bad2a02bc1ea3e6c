"""edge_tl.deploy.predict and `edge-tl predict`: onnxruntime only, exact errors, fuzzed metadata."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import uuid
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_export import fastai_probs, tiny_model
from tinydata import run_child

from edge_tl.cli import cli
from edge_tl.deploy.artefact import read_metadata
from edge_tl.deploy.predict import Classifier
from edge_tl.errors import DataError, ExportError

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

    return export_onnx(model, tmp_path_factory.mktemp("m") / "tiny.onnx", vocab="full")


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
    preds = clf.classify(TEXTS)
    assert [p.label for p in preds] == [clf.labels[i] for i in ref.argmax(1)]
    assert clf.predict(TEXTS) == [clf.classes_[i] for i in ref.argmax(1)]
    assert list(clf.classes_) == clf.labels == ["neg", "pos"]
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
    label = clf.predict(TEXTS[0])[0]
    assert r.output.startswith(f"{label}\t")
    f = tmp_path / "texts.txt"
    f.write_text("\n".join(TEXTS) + "\n\n", encoding="utf-8")
    r = CliRunner().invoke(cli, ["predict", str(onnx_path), "--file", str(f), "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert [row["label"] for row in rows] == clf.predict(TEXTS)
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
        f"Error: {bad} is not UTF-8 text (byte 0xe9). convert it to UTF-8, one text per line"
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
    v4 = _with_props(onnx_path, tmp_path / "v4.onnx", edge_tl__format_version="4")
    assert _error([str(v4), "hi"]) == (
        "Error: model file is format version 4; this edge_tl reads versions 1, 2, 3. "
        "upgrade edge_tl"
    )


def test_encrypted_model_decrypts_in_memory(
    model, tmp_path: Path, clf: Classifier, edge_tl_home: Path, monkeypatch, plaintext_leaks
) -> None:
    """predict reads an --encrypt export without writing its plaintext anywhere: no file in the
    test's folders, HOME, XDG and temp folders or /dev/shm holds a token of its vocabulary."""
    from edge_tl.deploy.export import export_onnx
    from edge_tl.store import keys

    keys.init_identity(None)
    canary = "zqcanary" + uuid.uuid4().hex[:12]
    marked = dataclasses.replace(model, vocab=[*model.vocab[:-1], canary])
    enc = export_onnx(marked, tmp_path / "enc.onnx", encrypt=True, vocab="full")
    assert enc.read_bytes().startswith(b"age-encryption.org/v1")
    assert canary.encode() in keys.decrypt_on_device(enc.read_bytes(), "enc")  # scannable
    got = Classifier(enc).predict_proba(TEXTS)
    assert np.abs(got - clf.predict_proba(TEXTS)).max() == 0  # the canary token is unused
    r = CliRunner().invoke(cli, ["predict", str(enc), "--json", TEXTS[0]])
    assert r.exit_code == 0, r.output
    assert plaintext_leaks(canary) == []
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
    out = run_child(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.splitlines()[-1] == "IMPORTED []"


# ---- fuzz: metadata is rejected with ExportError, or read exactly as docs/onnx-format.md says ----

_KEYS = [
    "edge_tl.format",
    "edge_tl.format_version",
    "edge_tl.labels",
    "edge_tl.vocab",
    "edge_tl.tokenizer",
    "edge_tl.provenance",
    "edge_tl.tfidf",
    "edge_tl.external_data",
]
SPECIALS = ["xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxrep", "xxwrep", "xxup", "xxmaj"]
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
    max_leaves=12,
)
TFIDF = {
    "version": 1,
    "lowercase": True,
    "token_pattern": r"(?u)\b\w\w+\b",
    "ngram_range": [1, 2],
    "sublinear_tf": True,
    "norm": "l2",
    "weight": 0.5,
    "features": ["good", "bad", "good movie"],
    "c": 30.0,
}
_DROP = object()
# A valid head spec, or one with a field replaced or dropped: most are invalid, some are not.
_tfidf_values = st.one_of(
    st.just(json.dumps(TFIDF)),
    st.tuples(st.sampled_from(sorted(TFIDF)), st.just(_DROP) | _json_values).map(
        lambda kv: json.dumps({k: v for k, v in {**TFIDF, kv[0]: kv[1]}.items() if v is not _DROP})
    ),
)


def _doc_json(props: dict, key: str, kind: type) -> object:
    """The value of `key` if it is JSON of type `kind` (bool is no integer); else _REJECT."""
    try:
        value = json.loads(props[key])
    except (KeyError, TypeError, ValueError, RecursionError):
        return _REJECT
    return value if type(value) is kind else _REJECT


_REJECT = object()


def _tfidf_ok(t: dict) -> bool:
    """docs/onnx-format.md, version 2's MUST-reject list, read independently."""
    feats, rng, w, pat = t.get("features"), t.get("ngram_range"), t.get("weight"), None
    if not (type(feats) is list and all(type(f) is str and f for f in feats)):
        return False
    if len(set(feats)) != len(feats):
        return False
    if not (type(rng) is list and len(rng) == 2 and all(type(x) is int for x in rng)):
        return False
    if not 1 <= rng[0] <= rng[1] <= 3:
        return False
    if type(t.get("lowercase")) is not bool or type(t.get("sublinear_tf")) is not bool:
        return False
    if t.get("norm") != "l2" or type(w) not in (int, float) or not 0 <= w <= 1:
        return False
    pat = t.get("token_pattern")
    try:
        re.compile(pat)  # type: ignore[arg-type]
    except (re.error, TypeError):
        return False
    return type(pat) is str and t.get("version") == 1


def _ext_ok(e: dict) -> bool:
    loc, size, digest = e.get("location"), e.get("size"), e.get("sha256")
    if type(loc) is not str or loc in ("", ".", "..") or "/" in loc or "\\" in loc:
        return False
    return (
        type(size) is int
        and size >= 4096
        and type(digest) is str
        and (re.fullmatch(r"[0-9a-f]{64}", digest) is not None)
    )


def _meta_by_the_doc(props: dict) -> tuple | None:
    """What a reader of docs/onnx-format.md takes from `props`: (version, labels, vocab,
    tokenizer, provenance, external data, tfidf), or None where it MUST reject."""
    if _doc_json(props, "edge_tl.format", str) != "edge_tl-onnx-classifier":
        return None
    version = _doc_json(props, "edge_tl.format_version", int)
    tfidf = _doc_json(props, "edge_tl.tfidf", dict) if version == 2 else None
    if version not in (1, 2) or tfidf is _REJECT or (version == 2 and not _tfidf_ok(tfidf)):
        return None
    labels = _doc_json(props, "edge_tl.labels", list)
    vocab = _doc_json(props, "edge_tl.vocab", list)
    tok = _doc_json(props, "edge_tl.tokenizer", dict)
    prov = _doc_json(props, "edge_tl.provenance", dict)
    if _REJECT in (labels, vocab, tok, prov):
        return None
    if not labels or not all(type(x) is str and x for x in labels):
        return None
    if len(set(labels)) != len(labels):
        return None
    if (
        not all(type(t) is str for t in vocab)
        or vocab[:9] != SPECIALS
        or set(vocab[9:]) & set(SPECIALS)
    ):
        return None
    ext = None
    if "edge_tl.external_data" in props:
        ext = _doc_json(props, "edge_tl.external_data", dict)
        if ext is _REJECT or not _ext_ok(ext):
            return None
    return version, labels, vocab, tok, prov, ext, tfidf


def _meta_read(props: dict) -> tuple | None:
    try:
        m = read_metadata(props)
    except ExportError:
        return None
    return m.format_version, m.labels, m.vocab, m.tokenizer, m.provenance, m.external_data, m.tfidf


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    key=st.sampled_from(_KEYS),
    value=st.one_of(_json_values.map(json.dumps), st.text(max_size=20), st.none(), _tfidf_values),
)
def test_fuzz_metadata_one_field(onnx_path: Path, key: str, value: str | None) -> None:
    """One field of a real export changed (a head spec also makes it version 2): read_metadata
    rejects it exactly when the format says so, else reads exactly what the file holds."""
    props = dict(_props_cache(onnx_path))
    assert _meta_read(props) == _meta_by_the_doc(props) is not None
    if value is None:
        props.pop(key, None)
    else:
        props[key] = value
    if key == "edge_tl.tfidf":
        props["edge_tl.format_version"] = "2"
    assert _meta_read(props) == _meta_by_the_doc(props)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    drop=st.sets(st.sampled_from(_KEYS)),
    changes=st.dictionaries(
        st.sampled_from(_KEYS) | st.text(max_size=10),
        st.text(max_size=30)
        | _json_values.map(json.dumps)
        | _tfidf_values
        | st.integers()  # not text: a Python caller's mistake, still an ExportError
        | st.none(),
        max_size=8,
    ),
)
def test_fuzz_metadata_arbitrary(onnx_path: Path, drop: set[str], changes: dict) -> None:
    """A real export's metadata with keys dropped and several changed at once, to garbage or to
    other valid values: rejected with ExportError, or read exactly as the format says."""
    props = {k: v for k, v in _props_cache(onnx_path).items() if k not in drop}
    props.update(changes)
    assert _meta_read(props) == _meta_by_the_doc(props)


_CACHE: dict[Path, dict[str, str]] = {}


def _props_cache(path: Path) -> dict[str, str]:
    if path not in _CACHE:
        _CACHE[path] = _props(path)
    return _CACHE[path]


def test_empty_api_input_is_an_error(clf: Classifier) -> None:
    with pytest.raises(DataError, match="text 2 is empty"):
        clf.predict(["fine", ""])
