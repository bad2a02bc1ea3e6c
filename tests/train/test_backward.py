"""Forward + backward (ULMFiT): a backward network trained on reversed text beside the forward
one; the model stores both (docs/model-format.md), evaluates and exports their mean, and the
exported graph reverses each padded row itself (docs/onnx-format.md)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import tinydata
import torch
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
from test_export import fastai_probs, random_seqs, run_padded, tiny_model  # noqa: E402
from test_train import TOML as TRAIN_TOML  # noqa: E402

from edge_tl.cli import cli  # noqa: E402
from edge_tl.errors import ModelError  # noqa: E402
from edge_tl.store.models import (  # noqa: E402
    MODEL_MAGIC,
    Backward,
    load_model,
    model_from_bytes,
    model_to_bytes,
    pack_container,
    tensors_from_bytes,
    tensors_to_bytes,
    unpack_container,
)


def two_way(seed: int = 0, n_class: int = 2):
    """A tiny model with a backward network whose weights differ from the forward one's."""
    fwd, other = tiny_model(seed=seed, n_class=n_class), tiny_model(seed=seed + 7, n_class=n_class)
    return dataclasses.replace(fwd, backward=Backward(other.state_dict, "tinybwd", "ab" * 32))


def reference(m, seqs: list[list[int]]) -> np.ndarray:
    """fastai one text at a time: the forward network on each text, the backward one on it
    reversed, averaged (what ULMFiT's forward + backward predicts)."""
    bwd = dataclasses.replace(m, state_dict=m.backward.state_dict, backward=None)
    return (fastai_probs(m, seqs) + fastai_probs(bwd, [s[::-1] for s in seqs])) / 2


def test_export_is_the_mean_of_both_directions_on_padded_batches() -> None:
    import onnxruntime as ort

    from edge_tl.deploy.export import to_onnx_bytes

    m = two_way()
    sess = ort.InferenceSession(to_onnx_bytes(m, vocab="full"), providers=["CPUExecutionProvider"])
    seqs = random_seqs(m, [3, 17, 9, 1, 30], seed=4)  # rows of unequal length: right padding
    got = run_padded(sess, seqs)
    want = reference(m, seqs)
    np.testing.assert_allclose(got, want, atol=2e-6)
    # each direction alone is off by far more: the graph really averages both
    fwd_only = fastai_probs(m, seqs)
    assert np.abs(got - fwd_only).max() > 1e-3


def test_private_export_keeps_both_directions_on_the_base_vocab(monkeypatch) -> None:
    import onnxruntime as ort

    from edge_tl.deploy import export as exp

    m = two_way()
    keep = [i for i, t in enumerate(m.vocab) if t not in ("zorblax", "quux")]
    vocab = [m.vocab[i] for i in keep]
    monkeypatch.setattr(exp, "_base_vocab_keep", lambda model: (keep, vocab, set(vocab)))
    data = exp.to_onnx_bytes(m)
    assert b"zorblax" not in data and b"quux" not in data  # nothing private in either direction
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    seqs = [[keep[j] for j in s] for s in random_seqs(dataclasses.replace(m, vocab=vocab), [5, 8])]
    remapped = [[keep.index(i) for i in s] for s in seqs]  # the export's ids
    np.testing.assert_allclose(run_padded(sess, remapped), reference(m, seqs), atol=2e-6)


def test_model_file_round_trip_and_rejects() -> None:
    m = two_way(n_class=3)
    back = model_from_bytes(model_to_bytes(m), "t")
    assert back.backward.base == "tinybwd" and back.backward.base_sha256 == "ab" * 32
    for k, v in m.backward.state_dict.items():
        assert torch.equal(torch.as_tensor(back.backward.state_dict[k]), v)
    assert (
        model_from_bytes(model_to_bytes(dataclasses.replace(m, backward=None)), "t").backward
        is None
    )

    header, body = unpack_container(MODEL_MAGIC, model_to_bytes(m), "t")
    tensors = tensors_from_bytes(body, "t")

    def rebuilt(h, t) -> bytes:
        return pack_container(MODEL_MAGIC, h, tensors_to_bytes(t))

    def fix_sha(h, t):
        import hashlib

        return {**h, "tensors_sha256": hashlib.sha256(tensors_to_bytes(t)).hexdigest()}

    no_key = {k: v for k, v in header.items() if k != "backward"}
    fwd_only = {k: v for k, v in tensors.items() if not k.startswith("bwd.")}
    one_short = dict(tensors)
    one_short.pop(sorted(k for k in tensors if k.startswith("bwd."))[0])
    bad_shape = dict(tensors)
    key = sorted(k for k in tensors if k.startswith("bwd.") and tensors[k].dim() == 2)[0]
    bad_shape[key] = torch.zeros(3, 3)
    cases = {
        "unexpected": (no_key, tensors),
        "no backward tensors": (header, fwd_only),
        "missing or unexpected": (header, one_short),
        "has shape": (header, bad_shape),
        "backward must be an object": (
            {**header, "backward": {"base": 3, "base_sha256": None}},
            tensors,
        ),
        "backward must be an object ": ({**header, "backward": ["x"]}, tensors),
    }
    for want, (h, t) in cases.items():
        with pytest.raises(ModelError, match=want.strip()):
            model_from_bytes(rebuilt(fix_sha(h, t), t), "t")


def test_stored_model_evaluates_the_mean_of_both_networks() -> None:
    from edge_tl.train.evaluate import network_proba

    m = two_way()
    seqs = random_seqs(m, [4, 11, 6], seed=2)
    got = np.asarray(network_proba(m, [torch.tensor(s) for s in seqs], bs=2))
    # predict_proba_ids pads at the front (fastai's batches); fastai_probs feeds one text alone
    np.testing.assert_allclose(got, reference(m, seqs), atol=1e-5)


# ---------------------------------------------------------------- train, end to end


# train's tiny settings; 4 validation rows may choose the mix here (100 by default)
TOML = TRAIN_TOML + "tfidf_weight_min_rows = 4\n"


@pytest.fixture
def two_bases(tmp_path: Path) -> Path:
    from edge_tl.bases.store import import_base
    from edge_tl.store import datasets as data
    from edge_tl.store import keys

    keys.init_identity(None)
    pos = "good great fine excellent lovely superb".split()
    neg = "bad awful poor terrible boring dull".split()
    rng = np.random.default_rng(0)
    texts, labels = [], []
    for i in range(60):
        words = pos if i % 2 else neg
        texts.append(" ".join(rng.choice(words + ["the", "movie", "and"], size=12)))
        labels.append("pos" if i % 2 else "neg")
    data.save_dataset("tiny", texts, labels)
    for name, seed in (("tinybase", 0), ("tinybwd", 1)):
        assert import_base(
            tinydata.tiny_base(tmp_path / f"{name}.etlb", name, seed), allow_unsigned=True
        )
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TOML)
    return cfg


def _train(cfg: Path, *flags: str):
    threads = torch.get_num_threads()
    try:
        args = ["train", "--data", "tiny", "--base", "tinybase", "--config", str(cfg)]
        return CliRunner().invoke(cli, [*args, "--quiet", *flags])
    finally:
        torch.set_num_threads(threads)


def test_train_with_a_backward_base_stores_and_exports_both(
    two_bases: Path, tmp_path: Path
) -> None:
    from edge_tl.bases.store import base_info
    from edge_tl.train.evaluate import evaluate_model

    res = _train(two_bases, "--out", "fb", "--backward-base", "tinybwd")
    assert res.exit_code == 0, res.output
    m = load_model("fb")
    assert m.backward is not None and m.backward.base == "tinybwd"
    assert m.backward.base_sha256 == base_info("tinybwd").sha256
    assert m.train_config["backward_base"] == "tinybwd"
    # the backward network was trained: its weights moved away from the forward one's
    diff = max(
        (m.backward.state_dict[k] - m.state_dict[k]).abs().max().item()
        for k in m.state_dict
        if m.state_dict[k].is_floating_point()
    )
    assert diff > 1e-3
    for key in ("forward_network_accuracy", "backward_network_accuracy", "neural_accuracy"):
        assert 0.0 <= m.metrics[key] <= 1.0
    assert m.metrics["tfidf_mix"] == "stacked"  # rechosen on the mean of both (6 rows >= 4)
    # both networks held the 6 rows out (train_on_unused_valid is on: a network without a head
    # would have trained on them, and they chose the mix; combine refuses such a pair)
    assert not m.metrics.get("valid_in_sample")
    res = CliRunner().invoke(cli, ["models", "info", "fb"])
    assert res.exit_code == 0 and "backward:    a second network from tinybwd" in res.output
    r = evaluate_model("fb", "tiny")
    assert r["n"] == 60 and 0.0 <= r["accuracy"] <= 1.0
    out = tmp_path / "fb.onnx"
    res = CliRunner().invoke(cli, ["export", "fb", "--out", str(out), "--vocab", "full"])
    assert res.exit_code == 0, res.output


def test_a_backward_base_of_another_vocabulary_or_scratch_is_refused(two_bases: Path) -> None:
    # the builtin default base: another shape and vocabulary than tinybase
    res = _train(two_bases, "--out", "x", "--backward-base", "default")
    assert res.exit_code != 0 and "another shape or vocabulary" in res.output
    assert "Traceback" not in res.output
    res = _train(two_bases, "--out", "y", "--backward-base", "tinybwd", "--scratch")
    assert res.exit_code != 0 and "backward_base needs a pretrained forward base" in res.output


def test_directions_combine_chooses_the_mix_on_the_mean() -> None:
    from edge_tl.train.config import TrainConfig
    from edge_tl.train.directions import combine
    from edge_tl.train.head import fit_head

    texts, labels = tinydata.keyword_texts(40, 0, noise=0.3)
    fwd = tiny_model(seed=1, n_class=2)
    fwd.tfidf_head = fit_head(texts, labels, fwd.labels)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    good = np.where(y[:, None] == np.arange(2), 0.8, 0.2)
    nf = 0.5 * good + 0.5 * rng.dirichlet([1, 1], 120)
    nb = 0.5 * good + 0.5 * rng.dirichlet([1, 1], 120)
    head = rng.dirichlet([1, 1], 120)
    fwd.held_out = {"neural": nf.tolist(), "head": head, "y": y.tolist(), "cross_fitted": True}
    bwd = dataclasses.replace(tiny_model(seed=2, n_class=2), labels=fwd.labels)
    bwd.held_out = {"neural": nb.tolist(), "y": y.tolist()}
    m = combine(fwd, bwd, TrainConfig())
    mean = (nf + nb) / 2
    assert m.metrics["neural_accuracy"] == pytest.approx((mean.argmax(1) == y).mean())
    assert m.metrics["forward_network_accuracy"] == pytest.approx((nf.argmax(1) == y).mean())
    assert m.tfidf_head.stack is not None  # 120 rows >= 100: stacked on the mean
    np.testing.assert_allclose(m.held_out["neural"], mean)
    bwd.held_out = {"neural": nb.tolist(), "y": y[::-1].tolist()}
    with pytest.raises(ModelError, match="different rows"):
        combine(fwd, bwd, TrainConfig())
    # a backward network that trained on the rows that choose the mix is refused too
    bwd.held_out = {"neural": nb.tolist(), "y": y.tolist(), "in_sample": True}
    with pytest.raises(ModelError, match="different rows"):
        combine(fwd, bwd, TrainConfig())
