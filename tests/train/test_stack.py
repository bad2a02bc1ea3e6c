"""The stacked mix: a logistic regression on both parts' log-odds (docs/onnx-format.md, v3),
fitted by `train`, stored with the model, computed by the exported graph and rejected when
malformed."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from sklearn.linear_model import LogisticRegression
from tinydata import keyword_texts

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
from test_export import tiny_model  # noqa: E402

from edge_tl.errors import ConfigError, ExportError, ModelError  # noqa: E402
from edge_tl.tfidf_head import Stack, head_proba, stack_features  # noqa: E402
from edge_tl.train.head import fit_head, fit_stack  # noqa: E402

KNOWN = Stack(
    np.array([[0.5, -0.5, 1, -1], [-0.5, 0.5, -1, 1]], np.float32),
    np.array([0.1, -0.1], np.float32),
)


def test_known_answer_vector() -> None:
    """Hand-computed in float64: log-odds (-ln 4, ln 4) and (ln 1.5, -ln 1.5), z = -/+0.4754."""
    p = KNOWN.proba(np.array([[0.2, 0.8]]), np.array([[0.6, 0.4]]))
    assert p[0] == pytest.approx([0.2787384, 0.7212616], abs=1e-6)
    # a part at exactly 0 or 1 is clipped, never an infinite log-odds
    q = KNOWN.proba(np.array([[0.0, 1.0]]), np.array([[1.0, 0.0]]))
    assert np.isfinite(q).all() and q.sum() == pytest.approx(1.0, abs=1e-6)


def _rows(n: int, k: int, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    good = np.full((n, k), 0.1 / (k - 1))
    good[np.arange(n), y] = 0.9
    noise = rng.dirichlet(np.ones(k), n)
    flip = rng.random(n) < 0.2  # the good part is wrong on a fifth of the rows
    good[flip] = np.roll(good[flip], 1, axis=1)
    return y, good, noise


@pytest.mark.parametrize("k", [2, 3])
def test_fit_stack_is_sklearns_logistic_regression(k: int) -> None:
    y, net, head = _rows(300, k, 0)
    stack = fit_stack(net, head, y, seed=0)
    assert stack.coef.shape == (k, 2 * k) and stack.intercept.shape == (k,)
    ref = LogisticRegression(C=1.0, max_iter=1000, random_state=0)
    ref.fit(stack_features(net, head), y)
    _, net_t, head_t = _rows(50, k, 1)
    want = ref.predict_proba(stack_features(net_t, head_t))
    np.testing.assert_allclose(stack.proba(net_t, head_t), want, atol=1e-5)


def test_fit_stack_follows_the_informative_part_and_needs_every_label() -> None:
    y, good, noise = _rows(300, 2, 0)
    yt, good_t, noise_t = _rows(200, 2, 1)
    for net, head, net_t, head_t in (
        (noise, good, noise_t, good_t),
        (good, noise, good_t, noise_t),
    ):
        p = fit_stack(net, head, y).proba(net_t, head_t)
        best = max((good_t.argmax(1) == yt).mean(), 0.75)
        assert (p.argmax(1) == yt).mean() >= best - 0.01
    assert fit_stack(noise, good, np.zeros(300, int)) is None


@pytest.fixture(scope="module")
def stacked_model():
    texts, labels = keyword_texts(60, 0, noise=0.2)
    model = tiny_model(seed=2, n_class=2)
    head = fit_head(texts, labels, model.labels)
    return dataclasses.replace(model, tfidf_head=dataclasses.replace(head, stack=KNOWN))


def test_onnx_v3_computes_the_stacked_mix(stacked_model, tmp_path: Path) -> None:
    from edge_tl.deploy.export import to_onnx_bytes
    from edge_tl.deploy.predict import Classifier

    v3 = tmp_path / "v3.onnx"
    v3.write_bytes(to_onnx_bytes(stacked_model, vocab="full"))
    clf = Classifier(v3)
    assert clf.meta.format_version == 3 and "stack" in clf.meta.tfidf
    texts = keyword_texts(30, seed=3, noise=0.3)[0] + ["good good good", "zzz"]
    neural, tfidf = clf.outputs(texts, ["probs_neural", "probs_tfidf"])
    np.testing.assert_allclose(tfidf, head_proba(stacked_model.tfidf_head, texts), atol=2e-6)
    want = stacked_model.tfidf_head.mix(neural, tfidf)
    np.testing.assert_allclose(clf.predict_proba(texts), want, atol=2e-6)
    # and not the share's mix: the stack is what the file predicts
    share = 0.5 * neural + 0.5 * tfidf
    assert np.abs(clf.predict_proba(texts) - share).max() > 0.01


def test_a_share_given_replaces_the_stack(stacked_model, tmp_path: Path) -> None:
    from edge_tl.deploy.export import to_onnx_bytes
    from edge_tl.deploy.predict import Classifier

    head = stacked_model.tfidf_head
    assert head.with_weight(None) is head
    assert head.with_weight(0.3).stack is None
    p = tmp_path / "w.onnx"
    p.write_bytes(to_onnx_bytes(stacked_model, vocab="full", tfidf_weight=0.3))
    clf = Classifier(p)
    assert clf.meta.format_version == 2 and "stack" not in clf.meta.tfidf
    with pytest.raises(ConfigError):
        head.with_weight(1.5)


def test_the_model_file_keeps_the_stack(stacked_model) -> None:
    from edge_tl.store import models

    back = models.model_from_bytes(models.model_to_bytes(stacked_model), "m").tfidf_head
    np.testing.assert_array_equal(back.stack.coef, KNOWN.coef)
    np.testing.assert_array_equal(back.stack.intercept, KNOWN.intercept)
    # the private export keeps it too: dropping n-grams does not touch the mix
    assert back.restricted(set(back.features[:3])).stack == back.stack
    # a malformed stack in the model file is refused like any other defect of the head
    header, body = models.unpack_container(
        models.MODEL_MAGIC, models.model_to_bytes(stacked_model), "m"
    )
    header["tfidf_head"]["stack"]["intercept"] = [0.0]
    with pytest.raises(ModelError, match="stack intercept"):
        models.model_from_bytes(models.pack_container(models.MODEL_MAGIC, header, body), "m")


def _props(model) -> dict[str, str]:
    from edge_tl.deploy.export import build_metadata

    return build_metadata(model, model.vocab, {}, model.tfidf_head)


@pytest.mark.parametrize(
    "edit, msg",
    [
        (lambda s: s.pop("stack"), "stack is missing"),
        (lambda s: s["stack"].update(coef=[[1, 2, 3, 4]]), "coef"),
        (lambda s: s["stack"].update(coef=[[1, 2, 3], [4, 5, 6]]), "coef"),
        (lambda s: s["stack"]["coef"][0].__setitem__(0, float("nan")), "coef"),
        (lambda s: s["stack"]["coef"][1].__setitem__(2, True), "coef"),
        (lambda s: s["stack"]["coef"][1].__setitem__(2, "1"), "coef"),
        (lambda s: s["stack"].update(intercept=[0.0, 0.0, 0.0]), "intercept"),
        (lambda s: s["stack"].update(intercept=[float("inf"), 0.0]), "intercept"),
        (lambda s: s["stack"].update(extra=1), "coef and intercept only"),
        (lambda s: s.update(stack=[1, 2]), "coef and intercept only"),
    ],
)
def test_v3_metadata_must_reject(stacked_model, edit, msg: str) -> None:
    from edge_tl.deploy.artefact import read_metadata

    props = _props(stacked_model)
    assert json.loads(props["edge_tl.format_version"]) == 3
    assert read_metadata(props).tfidf["stack"]["intercept"] == pytest.approx([0.1, -0.1])
    spec = json.loads(props["edge_tl.tfidf"])
    edit(spec)
    props["edge_tl.tfidf"] = json.dumps(spec)
    with pytest.raises(ExportError, match=msg):
        read_metadata(props)


def test_a_stack_in_format_2_is_rejected(stacked_model) -> None:
    from edge_tl.deploy.artefact import read_metadata

    props = _props(stacked_model)
    props["edge_tl.format_version"] = "2"
    with pytest.raises(ExportError, match="not allowed in format 2"):
        read_metadata(props)


def test_int8_keeps_the_stack_in_float(stacked_model, tmp_path: Path) -> None:
    from edge_tl.deploy.export import to_onnx_bytes

    proto = onnx.load_from_string(to_onnx_bytes(stacked_model, quantize="int8", vocab="full"))
    coef = next(i for i in proto.graph.initializer if i.name == "stack_coef_t")
    assert coef.data_type == onnx.TensorProto.FLOAT


def test_evaluate_scores_the_stacked_mix_the_file_predicts(stacked_model, tmp_path: Path) -> None:
    from edge_tl.deploy.evaluate import evaluate_onnx
    from edge_tl.deploy.export import export_onnx
    from edge_tl.deploy.predict import Classifier
    from edge_tl.train.evaluate import evaluate_texts

    texts, labels = keyword_texts(40, seed=9, noise=0.3)
    want = evaluate_texts(stacked_model, texts, labels)
    clf = Classifier(export_onnx(stacked_model, tmp_path / "m.onnx", vocab="full"))
    got = evaluate_onnx(clf, texts, labels)
    assert got["tfidf_mix"] == want["tfidf_mix"] == "stacked"
    assert got["confusion_matrix"] == want["confusion_matrix"]
    y = np.array([clf.labels.index(lab) for lab in labels])
    assert got["accuracy"] == (clf.predict_proba(texts).argmax(1) == y).mean()
    # a share asked for replaces the stack: the sweep's figure at that share
    share = evaluate_onnx(clf, texts, labels, tfidf_weight=0.5)
    assert share["tfidf_mix"] == "share" and share["accuracy"] == share["weight_sweep"]["0.5"]


def test_the_private_export_mixes_at_the_share(stacked_model, tmp_path: Path) -> None:
    """--vocab base drops tokens and n-grams from both parts: the stack was fitted to the parts
    as trained, so the default export writes format 2 at the model's share."""
    from tinydata import tiny_base

    from edge_tl.bases.store import import_base
    from edge_tl.deploy.export import to_onnx_bytes
    from edge_tl.deploy.predict import Classifier

    assert import_base(tiny_base(tmp_path / "b.etlb", "tb"), allow_unsigned=True) == "tb"
    model = dataclasses.replace(stacked_model, base="tb")
    p = tmp_path / "private.onnx"
    p.write_bytes(to_onnx_bytes(model, vocab="base", min_docs=1))
    clf = Classifier(p)
    assert clf.meta.format_version == 2 and "stack" not in clf.meta.tfidf
    assert clf.meta.tfidf["weight"] == model.tfidf_head.weight
