"""The TF-IDF head: sklearn parity, the ONNX v2 graph, storage and the MUST-reject rules."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from tinydata import keyword_texts, run_child, tiny_base

# tests/deploy's helper, importable whichever folder pytest collects first
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
from test_export import tiny_model  # noqa: E402

from edge_tl.errors import ExportError, ModelError
from edge_tl.tfidf_head import NgramCounter, TfidfHead, head_proba
from edge_tl.train.head import fit_head

ODD_TEXTS = [
    "Good movie, GOOD movie!! It's a must-see; 10/10 — naïve café x2 ab_cd",
    "bad. Bad bad plot (the worst) ... a b c",
    "",
    "   ",
    "Ünïcode façade: ÉCOLE école, über-cool_movie 42",
]


def _fit(n_class: int = 2, n: int = 60, seed: int = 0):
    from edge_tl.train.baseline import train_tfidf

    texts, labels = keyword_texts(n, seed, noise=0.2)
    if n_class == 3:
        labels = [lab if i % 3 else "meh" for i, lab in enumerate(labels)]
    return texts, labels, train_tfidf(texts, labels, seed)


def test_known_answer_vector() -> None:
    """Hand-computed: 'good' twice (tf 1 + ln 2, idf 1), 'good movie' once (idf 1.5)."""
    head = TfidfHead(
        ["good", "bad", "good movie"],
        np.array([1.0, 3.0, 1.5], np.float32),
        np.array([[-2, 3, -1], [2, -3, 1]], np.float32),
        np.array([-0.5, 0.5], np.float32),
    )
    p = head_proba(head, ["Good movie, good!"])[0]
    assert p == pytest.approx([0.0653666, 0.9346334], abs=1e-6)


@pytest.mark.parametrize("n_class", [2, 3])
def test_head_matches_sklearn_predict_proba(n_class: int) -> None:
    texts, labels, m = _fit(n_class)
    names = sorted(set(labels), reverse=True)  # another order than sklearn's
    head = fit_head(texts, labels, names, seed=0)
    test, _ = keyword_texts(40, seed=7, noise=0.3)
    test += ODD_TEXTS
    want = np.array(m.predict_proba(test))[:, [m.labels.index(n) for n in names]]
    np.testing.assert_allclose(head_proba(head, test), want, atol=2e-6)


def test_ngram_counter_is_sklearns_analyzer() -> None:
    texts, _, m = _fit()
    vec = m.vectorizer
    count = NgramCounter(list(vec.get_feature_names_out()))
    analyzer = vec.build_analyzer()
    for t in [*ODD_TEXTS, *texts[:10]]:
        want = Counter(vec.vocabulary_[g] for g in analyzer(t) if g in vec.vocabulary_)
        assert count(t) == dict(want)


@pytest.fixture(scope="module")
def head_model():
    texts, labels = keyword_texts(60, 0, noise=0.2)
    labels = [lab if i % 3 else "meh" for i, lab in enumerate(labels)]
    model = tiny_model()  # labels neg, pos, meh
    return dataclasses.replace(model, tfidf_head=fit_head(texts, labels, model.labels))


def test_onnx_v2_is_the_mix_of_network_and_head(head_model, tmp_path: Path) -> None:
    from edge_tl.deploy.export import to_onnx_bytes
    from edge_tl.deploy.predict import Classifier

    v1, v2 = tmp_path / "v1.onnx", tmp_path / "v2.onnx"
    v1.write_bytes(to_onnx_bytes(head_model, tfidf_head=False, vocab="full"))
    v2.write_bytes(to_onnx_bytes(head_model, vocab="full"))
    c1, c2 = Classifier(v1), Classifier(v2)
    assert (c1.meta.format_version, c2.meta.format_version) == (1, 2)
    texts = [t for t in ODD_TEXTS if t.strip()] + keyword_texts(20, seed=3)[0]
    neural, tf = c1.predict_proba(texts), head_proba(head_model.tfidf_head, texts)
    np.testing.assert_allclose(c2.predict_proba(texts), 0.5 * neural + 0.5 * tf, atol=2e-6)
    # the graph's own two outputs: sklearn's probabilities and the network's
    got_tf, got_nn = c2.outputs(texts, ["probs_tfidf", "probs_neural"])
    np.testing.assert_allclose(got_tf, tf, atol=2e-6)
    np.testing.assert_allclose(got_nn, neural, atol=2e-6)


def test_int8_keeps_the_head_in_float(head_model, tmp_path: Path) -> None:
    from edge_tl.deploy.export import to_onnx_bytes
    from edge_tl.deploy.predict import Classifier

    p = tmp_path / "q.onnx"
    p.write_bytes(to_onnx_bytes(head_model, quantize="int8", vocab="full"))
    proto = onnx.load(p)
    coef = next(i for i in proto.graph.initializer if i.name == "tfidf_coef")
    assert coef.data_type == onnx.TensorProto.FLOAT
    probs = Classifier(p).predict_proba(["good fun movie", "awful boring plot"])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_model_container_round_trip_and_rejects(head_model) -> None:
    from edge_tl.store import models

    back = models.model_from_bytes(models.model_to_bytes(head_model), "m")
    h0, h1 = head_model.tfidf_head, back.tfidf_head
    assert h1.features == h0.features and h1.c == h0.c
    np.testing.assert_array_equal(h1.coef, h0.coef)
    text = ["good fun movie"]
    np.testing.assert_array_equal(head_proba(h1, text), head_proba(h0, text))
    # a model without a head is stored exactly as before: no header key, no extra tensors
    plain = models.model_to_bytes(dataclasses.replace(head_model, tfidf_head=None))
    assert b"tfidf" not in plain

    def tampered(edit) -> bytes:  # noqa: ANN001
        header, body = models.unpack_container(
            models.MODEL_MAGIC, models.model_to_bytes(head_model), "m"
        )
        tensors = {k: v.clone() for k, v in models.tensors_from_bytes(body, "m").items()}
        edit(header, tensors)
        body = models.tensors_to_bytes(tensors)
        import hashlib

        header["tensors_sha256"] = hashlib.sha256(body).hexdigest()
        return models.pack_container(models.MODEL_MAGIC, header, body)

    def dup(h, t) -> None:  # noqa: ANN001
        h["tfidf_head"]["features"][1] = h["tfidf_head"]["features"][0]

    def short(h, t) -> None:  # noqa: ANN001
        t["tfidf.coef"] = t["tfidf.coef"][:, :-1]

    def missing(h, t) -> None:  # noqa: ANN001
        del t["tfidf.idf"]

    def orphan(h, t) -> None:  # noqa: ANN001
        del h["tfidf_head"]

    for edit, msg in (
        (dup, "repeat"),
        (short, "shape"),
        (missing, "missing"),
        (orphan, "unexpected"),
    ):
        with pytest.raises(ModelError, match=msg):
            models.model_from_bytes(tampered(edit), "m")


def _props(head_model) -> dict[str, str]:
    from edge_tl.deploy.export import build_metadata

    return build_metadata(head_model, head_model.vocab, {}, head_model.tfidf_head)


@pytest.mark.parametrize(
    "edit, msg",
    [
        (lambda t: t.pop("features"), "features"),
        (lambda t: t.update(version=2), "version"),
        (lambda t: t.update(ngram_range=[0, 2]), "ngram_range"),
        (lambda t: t.update(ngram_range=[1, 4]), "ngram_range"),
        (lambda t: t.update(lowercase="yes"), "lowercase"),
        (lambda t: t.update(norm="l1"), "norm"),
        (lambda t: t.update(weight=1.5), "weight"),
        (lambda t: t.update(weight=True), "weight"),
        (lambda t: t.update(token_pattern="(unclosed"), "compile"),
        (lambda t: t.update(features=["a", "a"]), "repeat"),
    ],
)
def test_metadata_must_reject(head_model, edit, msg: str) -> None:
    from edge_tl.deploy.artefact import read_metadata

    props = _props(head_model)
    assert read_metadata(props).tfidf is not None
    spec = json.loads(props["edge_tl.tfidf"])
    edit(spec)
    props["edge_tl.tfidf"] = json.dumps(spec)
    with pytest.raises(ExportError, match=msg):
        read_metadata(props)


def test_v2_without_head_spec_and_graph_mismatch_are_rejected(head_model, tmp_path) -> None:
    from edge_tl.deploy.artefact import read_metadata
    from edge_tl.deploy.export import to_onnx_bytes
    from edge_tl.deploy.predict import Classifier

    props = _props(head_model)
    del props["edge_tl.tfidf"]
    with pytest.raises(ExportError, match="edge_tl.tfidf"):
        read_metadata(props)
    # a v1 graph labelled version 2 (inputs do not match the metadata)
    proto = onnx.load_from_string(to_onnx_bytes(head_model, tfidf_head=False, vocab="full"))
    for p in proto.metadata_props:
        if p.key == "edge_tl.format_version":
            p.value = "2"
    proto.metadata_props.add(key="edge_tl.tfidf", value=_props(head_model)["edge_tl.tfidf"])
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(proto.SerializeToString())
    with pytest.raises(ExportError, match="inputs/outputs"):
        Classifier(bad)


def test_vocab_base_export_drops_private_ngrams(tmp_path: Path) -> None:
    """--vocab base against a real base in the store: the private word leaves the file, with
    every n-gram that holds it; the kept n-grams score a text exactly as the full export scores
    the same text without that word (dropped n-grams count for nothing, in the norm too)."""
    from edge_tl.bases.store import import_base
    from edge_tl.deploy.export import to_onnx_bytes
    from edge_tl.deploy.predict import Classifier

    assert import_base(tiny_base(tmp_path / "b.etlb", "tb"), allow_unsigned=True) == "tb"
    texts, labels = keyword_texts(40, 0)  # words of the base's vocabulary only
    texts = [f"{t} zorblax" if i % 2 else t for i, t in enumerate(texts)]  # a private word
    model = dataclasses.replace(tiny_model(n_class=2), base="tb")
    model = dataclasses.replace(model, tfidf_head=fit_head(texts, labels, model.labels))
    paths = {}
    for vocab in ("full", "base"):
        paths[vocab] = tmp_path / f"{vocab}.onnx"
        # min_docs=1: this test is about the word rule; the document count has its own test
        # (tests/deploy/test_private_export.py::test_min_docs_is_the_bar_an_ngram_must_clear)
        paths[vocab].write_bytes(to_onnx_bytes(model, vocab=vocab, min_docs=1))
    full, base = Classifier(paths["full"]), Classifier(paths["base"])
    assert b"zorblax" in paths["full"].read_bytes()
    assert b"zorblax" not in paths["base"].read_bytes()
    feats = {k: json.loads(_meta(p)["edge_tl.tfidf"])["features"] for k, p in paths.items()}
    private = [f for f in feats["full"] if "zorblax" in f.split(" ")]
    assert "zorblax" in private and any(" " in f for f in private)  # a word and a bigram
    assert feats["base"] == [f for f in feats["full"] if f not in private]
    assert base.provenance["dropped_ngrams"] == len(private)
    for with_word, without in (
        ("good movie zorblax", "good movie"),
        ("zorblax awful plot", "awful plot"),
        ("zorblax", "qwv"),  # no feature on either side: the intercepts alone
    ):
        np.testing.assert_allclose(
            base.outputs([with_word], ["probs_tfidf"])[0],
            full.outputs([without], ["probs_tfidf"])[0],
            atol=1e-6,
        )
    probs = base.predict_proba(["good movie zorblax", "awful plot"])
    assert probs.shape == (2, 2)


def _meta(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_predict_v2_imports_no_torch_sklearn(head_model, tmp_path: Path) -> None:
    """The head is read with re, collections and numpy only: predict stays onnxruntime-only."""
    import sys

    from edge_tl.deploy.export import export_onnx

    path = export_onnx(head_model, tmp_path / "v2.onnx", vocab="full")
    code = (
        "import sys\n"
        "from edge_tl.cli import cli\n"
        f"cli.main(['predict', {str(path)!r}, 'great movie'], standalone_mode=False)\n"
        "bad = sorted(m for m in ('torch', 'fastai', 'spacy', 'sklearn') if m in sys.modules)\n"
        "print('IMPORTED', bad)\n"
    )
    out = run_child(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.splitlines()[-1] == "IMPORTED []"


def test_external_data_and_cli_predict_carry_the_head(head_model, tmp_path: Path) -> None:
    """The head's initializers move to the .data file like the network's; predict reads both."""
    from click.testing import CliRunner

    from edge_tl.cli import cli
    from edge_tl.deploy.export import export_onnx
    from edge_tl.deploy.predict import Classifier

    one = export_onnx(head_model, tmp_path / "one.onnx", vocab="full")
    two = export_onnx(head_model, tmp_path / "two.onnx", external_data=True, vocab="full")
    assert (tmp_path / "two.onnx.data").stat().st_size > 4096
    proto = onnx.load(str(two), load_external_data=False)
    ext = {i.name for i in proto.graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL}
    assert "tfidf_coef" in ext
    texts = ["good fun movie", "awful boring plot", "the plot"]
    np.testing.assert_array_equal(
        Classifier(one).predict_proba(texts), Classifier(two).predict_proba(texts)
    )
    r = CliRunner().invoke(cli, ["predict", str(two), "--json", "-"], input="\n".join(texts))
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    want = Classifier(one).predict(texts)
    assert [g["label"] for g in got] == want


def test_evaluate_scores_the_mix_the_export_predicts(head_model, tmp_path: Path) -> None:
    """evaluate (torch) and the v2 export (onnxruntime) agree on every row's mixed prediction."""
    from edge_tl.deploy.export import export_onnx
    from edge_tl.deploy.predict import Classifier
    from edge_tl.metrics import format_report
    from edge_tl.train.evaluate import evaluate_texts

    texts, labels = keyword_texts(30, seed=11, noise=0.2)
    r = evaluate_texts(head_model, texts, labels)
    preds = Classifier(export_onnx(head_model, tmp_path / "m.onnx", vocab="full")).predict(texts)
    right = [p == y for p, y in zip(preds, labels, strict=True)]
    assert r["accuracy"] == pytest.approx(np.mean(right))
    head_pred = head_proba(head_model.tfidf_head, texts).argmax(1)
    assert r["tfidf_accuracy"] == pytest.approx(
        np.mean([head_model.labels[i] == y for i, y in zip(head_pred, labels, strict=True)])
    )
    assert "TF-IDF head alone" in format_report(r)


def test_mixed_metrics_sweep_spans_network_to_head() -> None:
    """The sweep's ends are the network alone and the head alone; its middle is the mix."""
    from edge_tl.metrics import SWEEP
    from edge_tl.train.head import mixed_metrics

    texts, labels, _ = _fit()
    names = ["neg", "pos"]
    head = fit_head(texts, labels, names, seed=0)
    test, gold_names = keyword_texts(40, seed=5, noise=0.4)
    gold = [names.index(g) for g in gold_names]
    neural = np.random.default_rng(0).dirichlet([1, 1], size=len(test)).astype(np.float32)
    r = mixed_metrics(head, neural, test, gold, names)
    sweep = r["weight_sweep"]
    assert list(sweep) == [f"{w:g}" for w in SWEEP]
    assert sweep["0"] == pytest.approx(r["neural_accuracy"])
    assert sweep["1"] == pytest.approx(r["tfidf_accuracy"])
    assert sweep["0.5"] == pytest.approx(r["accuracy"])
    r8 = mixed_metrics(head.with_weight(0.75), neural, test, gold, names)
    assert r8["accuracy"] == pytest.approx(sweep["0.75"]) and r8["tfidf_weight"] == 0.75


def test_export_and_evaluate_at_another_weight(head_model, tmp_path: Path, monkeypatch) -> None:
    """export --tfidf-weight mixes the graph at W; evaluate --tfidf-weight scores that mix;
    a weight outside [0, 1], or one for a model without its head, is an Error."""
    from click.testing import CliRunner

    import edge_tl.store.models
    import edge_tl.train.evaluate
    from edge_tl.cli import cli
    from edge_tl.deploy.predict import Classifier
    from edge_tl.store import datasets as data
    from edge_tl.store import keys

    monkeypatch.setattr(edge_tl.store.models, "load_model", lambda name: head_model, raising=False)
    monkeypatch.setattr(edge_tl.train.evaluate, "load_model", lambda name: head_model)
    out = tmp_path / "w.onnx"
    args = ["export", "m", "--out", str(out), "--tfidf-weight", "0.8", "--vocab", "full"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0 and "weight 0.8" in r.output, r.output
    c = Classifier(out)
    assert c.meta.tfidf is not None and c.meta.tfidf["weight"] == pytest.approx(0.8)
    texts = keyword_texts(20, seed=4)[0]
    tf, nn = c.outputs(texts, ["probs_tfidf", "probs_neural"])
    np.testing.assert_allclose(c.predict_proba(texts), 0.8 * tf + 0.2 * nn, atol=2e-6)

    for args, msg in [
        (["--tfidf-weight", "1.5"], "Error: TF-IDF head weight 1.5 is outside"),
        (
            ["--tfidf-weight", "0.3", "--no-tfidf-head"],
            "Error: model 'tiny': --tfidf-weight needs the model's TF-IDF head",
        ),
    ]:
        r = CliRunner().invoke(cli, ["export", "m", "--out", str(tmp_path / "x.onnx"), *args])
        assert r.exit_code == 1 and r.output.startswith(msg), r.output

    keys.init_identity(None)
    texts, labels = keyword_texts(30, seed=12, noise=0.3)
    labels = [lab if i % 3 else "meh" for i, lab in enumerate(labels)]
    data.save_dataset("held", texts, labels)
    got = {}
    for w in ("0", "1", "0.5"):
        r = CliRunner().invoke(
            cli, ["evaluate", "m", "--data", "held", "--json", "--tfidf-weight", w]
        )
        assert r.exit_code == 0, r.output
        got[w] = json.loads(r.output)
    base = got["0.5"]
    assert got["0"]["accuracy"] == pytest.approx(base["neural_accuracy"])
    assert got["1"]["accuracy"] == pytest.approx(base["tfidf_accuracy"])
    assert got["1"]["tfidf_weight"] == 1.0 and base["weight_sweep"]["1"] == got["1"]["accuracy"]
    r = CliRunner().invoke(cli, ["evaluate", "m", "--data", "held"])
    assert "head weight 0 / 0.25 / 0.5 / 0.75 / 1: accuracy " in r.output
    assert "head weight 0.5)" in r.output
    bare = dataclasses.replace(head_model, tfidf_head=None)
    monkeypatch.setattr(edge_tl.train.evaluate, "load_model", lambda name: bare)
    r = CliRunner().invoke(cli, ["evaluate", "m", "--data", "held", "--tfidf-weight", "1"])
    assert r.exit_code == 1 and r.output.startswith("Error: model 'm' has no TF-IDF head"), r.output
