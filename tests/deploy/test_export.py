"""ONNX export: parity with fastai one text at a time, int8, base vocab, encryption."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from edge_tl.config import ModelConfig
from edge_tl.deploy.tokenizer import SPECIAL_TOKENS
from edge_tl.store.models import TrainedModel

WORDS = (
    "the movie was great awful boring fun i it and a of to is this film not good bad "
    "plot acting , . ! ? 's n't do"
).split()
PRIVATE = ["zorblax", "quux"]  # tokens only the private data has (not in the fake base)


def tiny_model(seed: int = 0, bptt: int = 5, max_len: int = 20, n_class: int = 3) -> TrainedModel:
    """A random-weight classifier, small enough for CI, with non-trivial BatchNorm stats."""
    import torch

    from edge_tl.awd_lstm import build_classifier

    vocab = [*SPECIAL_TOKENS, *WORDS, *PRIVATE]
    vocab += [f"xxfake{i}" for i in range((8 - len(vocab) % 8) % 8)]
    cfg = ModelConfig(vocab_size=len(vocab), emb_sz=8, n_hid=12, n_layers=3)
    torch.manual_seed(seed)
    clf = build_classifier(cfg, n_class, seq_len=bptt, max_len=max_len)
    gen = torch.Generator().manual_seed(seed)
    for m in clf.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=gen))
    labels = ["neg", "pos", "meh"][:n_class]
    return TrainedModel(
        name="tiny",
        model_cfg=cfg,
        vocab=vocab,
        labels=labels,
        state_dict=clf.state_dict(),
        train_config={"bptt": bptt, "max_len": max_len},
        metrics={"accuracy": 0.5},
        base="fakebase",
        base_sha256="0" * 64,
        dataset_fingerprint="f" * 16,
        created="2026-01-01T00:00:00Z",
    )


def fastai_probs(model: TrainedModel, seqs: list[list[int]]) -> np.ndarray:
    """fastai's classifier fed one text at a time, no padding (the reference)."""
    import torch

    from edge_tl.deploy.export import fastai_classifier

    clf = fastai_classifier(model)
    out = []
    with torch.no_grad():
        for s in seqs:
            clf.reset()
            out.append(torch.softmax(clf(torch.tensor([s]))[0], dim=-1)[0].numpy())
    return np.stack(out)


def random_seqs(model: TrainedModel, lengths: list[int], seed: int = 0) -> list[list[int]]:
    """xxbos + random non-special, non-pad ids."""
    rng = np.random.default_rng(seed)
    n = len(model.vocab)
    return [[2, *rng.integers(len(SPECIAL_TOKENS), n, size=k - 1).tolist()] for k in lengths]


def run_padded(sess, seqs: list[list[int]]) -> np.ndarray:
    width = max(len(s) for s in seqs)
    ids = np.ones((len(seqs), width), dtype=np.int64)  # (batch, seq), right-padded with xxpad
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
    lens = np.array([len(s) for s in seqs], dtype=np.int64)
    return sess.run(["probs"], {"input_ids": ids, "lengths": lens})[0]


@pytest.fixture(scope="module")
def model() -> TrainedModel:
    return tiny_model()


@pytest.fixture(scope="module")
def fp32_bytes(model: TrainedModel) -> bytes:
    from edge_tl.deploy.export import to_onnx_bytes

    return to_onnx_bytes(model, vocab="full")


def test_graph_contract(fp32_bytes: bytes) -> None:
    proto = onnx.load_from_string(fp32_bytes)
    onnx.checker.check_model(proto, full_check=True)
    ins = {i.name: i.type.tensor_type for i in proto.graph.input}
    assert set(ins) == {"input_ids", "lengths"}
    assert ins["input_ids"].elem_type == onnx.TensorProto.INT64
    assert [d.dim_param for d in ins["input_ids"].shape.dim] == ["batch", "seq"]
    assert [d.dim_param for d in ins["lengths"].shape.dim] == ["batch"]
    (out,) = proto.graph.output
    assert out.name == "probs" and out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    keys = {p.key for p in proto.metadata_props}
    assert {
        "edge_tl.format",
        "edge_tl.format_version",
        "edge_tl.vocab",
        "edge_tl.labels",
        "edge_tl.tokenizer",
        "edge_tl.provenance",
    } <= keys
    # The LSTM weights must be initializers feeding the node directly (int8 needs that).
    inits = {i.name for i in proto.graph.initializer}
    lstms = [n for n in proto.graph.node if n.op_type == "LSTM"]
    assert len(lstms) == 3
    assert all(n.input[1] in inits and n.input[2] in inits and n.input[3] in inits for n in lstms)


@pytest.mark.parametrize("batch", [1, 3, 8, 17])
def test_parity_with_fastai_padded_batches(model, fp32_bytes, batch: int) -> None:
    import onnxruntime as ort

    # Lengths cross bptt (5) and max_len (20) so the chunked pooling window is exercised.
    lengths = [1, 2, 4, 5, 6, 11, 19, 20, 21, 24, 26, 33, 40, 47, 52, 3, 9][:batch]
    seqs = random_seqs(model, lengths, seed=batch)
    ref = fastai_probs(model, seqs)
    got = run_padded(ort.InferenceSession(fp32_bytes), seqs)
    assert np.abs(got - ref).max() < 1e-4


def test_batch_composition_does_not_change_a_prediction(model, fp32_bytes) -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(fp32_bytes)
    seqs = random_seqs(model, [7, 50, 2, 23, 13], seed=3)
    alone = run_padded(sess, seqs[:1])[0]
    for others in ([1, 2], [3, 4, 1], [4]):
        with_others = run_padded(sess, [seqs[0], *[seqs[i] for i in others]])[0]
        assert np.abs(with_others - alone).max() < 1e-6


def test_int8_uses_dynamic_quantized_lstm(model, fp32_bytes) -> None:
    import onnxruntime as ort

    from edge_tl.deploy.export import to_onnx_bytes

    q = to_onnx_bytes(model, quantize="int8", vocab="full")
    ops = {n.op_type for n in onnx.load_from_string(q).graph.node}
    assert "DynamicQuantizeLSTM" in ops and "LSTM" not in ops
    seqs = random_seqs(model, [5, 12, 30], seed=1)
    fp = run_padded(ort.InferenceSession(fp32_bytes), seqs)
    assert np.abs(run_padded(ort.InferenceSession(q), seqs) - fp).max() < 0.05


def test_vocab_base_drops_private_tokens(model, monkeypatch) -> None:
    import types

    import onnxruntime as ort

    import edge_tl.deploy.export
    from edge_tl.deploy.artefact import read_metadata
    from edge_tl.deploy.export import to_onnx_bytes

    base_vocab = [*SPECIAL_TOKENS, *WORDS, "unused"]
    monkeypatch.setattr(
        edge_tl.deploy.export,
        "load_base",
        lambda name: types.SimpleNamespace(vocab=base_vocab),
        raising=False,
    )
    data = to_onnx_bytes(model, vocab="base")
    meta = read_metadata({p.key: p.value for p in onnx.load_from_string(data).metadata_props})
    assert not set(PRIVATE) & set(meta.vocab)
    assert meta.vocab == [*SPECIAL_TOKENS, *WORDS]
    assert meta.provenance["vocab_mode"] == "base"
    emb = [i for i in onnx.load_from_string(data).graph.initializer if i.name == "emb.weight"]
    assert list(emb[0].dims) == [len(meta.vocab), 8]
    # A text made only of base words predicts exactly as with the full vocabulary.
    full = ort.InferenceSession(to_onnx_bytes(model, vocab="full"))
    seqs = random_seqs(model, [9, 4], seed=5)
    seqs = [[t if t < len(meta.vocab) else 9 for t in s] for s in seqs]
    got = run_padded(ort.InferenceSession(data), seqs)
    assert np.abs(got - run_padded(full, seqs)).max() < 1e-6


def test_vocab_base_needs_a_base(model) -> None:
    from dataclasses import replace

    from edge_tl.deploy.export import to_onnx_bytes
    from edge_tl.errors import ExportError

    with pytest.raises(ExportError, match="was trained without a base, so all 31 words"):
        to_onnx_bytes(replace(model, base=None), vocab="base")


def test_cli_export_plain_and_encrypted(model, tmp_path: Path, monkeypatch) -> None:
    from click.testing import CliRunner

    import edge_tl.store.models
    from edge_tl.cli import cli
    from edge_tl.store import keys

    monkeypatch.setattr(edge_tl.store.models, "load_model", lambda name: model, raising=False)
    out = tmp_path / "m.onnx"
    res = CliRunner().invoke(cli, ["export", "tiny", "--out", str(out), "--vocab", "full"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[-1].startswith(f"Exported tiny to {out} (")
    assert res.output.startswith("--vocab full: writing the whole vocabulary (base 'fakebase'")
    onnx.checker.check_model(onnx.load(out))

    keys.init_identity(None)
    enc = tmp_path / "m.onnx.age"
    res = CliRunner().invoke(
        cli, ["export", "tiny", "--out", str(enc), "--encrypt", "--vocab", "full"]
    )
    assert res.exit_code == 0, res.output
    raw = enc.read_bytes()
    assert raw.startswith(b"age-encryption.org/v1") and b"edge_tl.vocab" not in raw

    res = CliRunner().invoke(cli, ["export", "tiny", "--out", str(tmp_path / "no" / "m.onnx")])
    assert res.exit_code == 1
    assert res.output.splitlines()[-1] == (
        f"Error: folder {tmp_path / 'no'} does not exist. create it or pick another --out"
    )


def test_cli_export_rejects_unknown_quantization() -> None:
    from click.testing import CliRunner

    from edge_tl.cli import cli

    res = CliRunner().invoke(cli, ["export", "tiny", "--out", "x.onnx", "--quantize", "int4"])
    assert res.exit_code == 2
