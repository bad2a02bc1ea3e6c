"""`edge-tl evaluate`: metrics checked against scikit-learn and an unbatched forward pass."""

from __future__ import annotations

import json
import random

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from edge_tl.awd_lstm import build_classifier
from edge_tl.cli import cli
from edge_tl.config import ModelConfig
from edge_tl.metrics import metrics_from_predictions
from edge_tl.store import datasets as data
from edge_tl.store import keys
from edge_tl.store.models import TrainedModel, save_model
from edge_tl.train.engine import tokenize
from edge_tl.train.evaluate import evaluate_texts

CFG = ModelConfig(vocab_size=24, emb_sz=8, n_hid=12, n_layers=2)
WORDS = "good bad film plot the a great awful fine".split()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=1, max_size=60))
def test_metrics_match_sklearn(pairs) -> None:
    y, p = [a for a, _ in pairs], [b for _, b in pairs]
    r = metrics_from_predictions(y, p, ["a", "b", "c"])
    assert r["accuracy"] == pytest.approx(accuracy_score(y, p))
    assert r["confusion_matrix"] == confusion_matrix(y, p, labels=[0, 1, 2]).tolist()
    prec, rec, f1, sup = precision_recall_fscore_support(y, p, labels=[0, 1, 2], zero_division=0)
    for i, name in enumerate("abc"):
        c = r["per_class"][name]
        assert c["precision"] == pytest.approx(prec[i]) and c["recall"] == pytest.approx(rec[i])
        assert c["f1"] == pytest.approx(f1[i]) and c["support"] == sup[i]


def _model(seed: int = 0) -> TrainedModel:
    from edge_tl.train.engine import build_vocab

    rng = random.Random(seed)
    docs = tokenize([" ".join(rng.choice(WORDS) for _ in range(10)) for _ in range(20)])
    vocab = list(build_vocab(docs, min_freq=1))[: CFG.vocab_size]
    vocab += [f"xxfake{i}" for i in range(CFG.vocab_size - len(vocab))]
    torch.manual_seed(seed)
    net = build_classifier(CFG, 3, seq_len=16, max_len=64, lin_ftrs=[])
    for name, p in net.named_parameters():  # spread the logits: argmax depends on the input
        torch.nn.init.normal_(p, std=0.0 if name.endswith("bias") else 1.0)
    # fastai's LSTM also reads the left padding of shorter docs in a batch; a zero pad
    # embedding with zero biases makes padding a no-op, so batched == one by one exactly.
    with torch.no_grad():
        net[0].module.encoder.weight[1] = 0.0
    return TrainedModel(
        name="ev",
        model_cfg=CFG,
        vocab=vocab,
        labels=["a", "b", "c"],
        state_dict=net.state_dict(),
        lin_ftrs=[],
        train_config={"bptt": 16, "max_len": 64},
    )


def _texts(n: int, seed: int = 1) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 90))) for _ in range(n)]
    return texts, [rng.choice("abc") for _ in range(n)]


def test_batched_predictions_equal_one_by_one() -> None:
    from edge_tl.train.evaluate import predict_ids

    m = _model()
    net = build_classifier(CFG, 3, seq_len=16, max_len=64, lin_ftrs=[])
    net.load_state_dict(m.state_dict)
    # Lengths are multiples of bptt: fastai's SentenceEncoder is only exact for such batches
    # (it drops rows whose chunk starts with padding), so any mismatch here is ours.
    ids = [
        torch.cat(
            [
                torch.full((8 * (1 + i % 5),), 2 + i % 22),
                torch.full((8 * (1 + i % 5),), 2 + (3 * i) % 22),
            ]
        )
        for i in range(40)
    ]
    pred = predict_ids(net, ids, bs=7, bptt=16)
    net.eval()
    with torch.no_grad():
        one = [int(net(x[None])[0].argmax()) for x in ids]
    assert pred == one
    assert len(set(one)) > 1  # the check is not vacuous
    texts, labels = _texts(30)
    r = evaluate_texts(m, texts, labels, bs=7)
    assert r["n"] == 30 and sum(map(sum, r["confusion_matrix"])) == 30


def test_cli_evaluate_text_and_json() -> None:
    keys.init_identity(None)
    save_model(_model())
    texts, labels = _texts(25)
    data.save_dataset("ev_data", texts, labels)
    r = CliRunner()
    res = r.invoke(cli, ["evaluate", "ev", "--data", "ev_data", "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    assert got == {
        **evaluate_texts(_model(), texts, labels),
        "model": "ev",
        "data": "ev_data",
        "dataset_fingerprint": data.open_dataset("ev_data").fingerprint,
    }
    res = r.invoke(cli, ["evaluate", "ev", "--data", "ev_data"])
    assert res.exit_code == 0
    assert res.output.startswith(f"accuracy {got['accuracy']:.4f} on 25 rows")
    assert "confusion matrix (rows = true label, columns = predicted)" in res.output


def test_cli_evaluate_errors() -> None:
    keys.init_identity(None)
    save_model(_model())
    data.save_dataset("other", ["x y", "y z", "z x"], ["neg", "pos", "neg"])
    r = CliRunner()
    res = r.invoke(cli, ["evaluate", "ev", "--data", "other"])
    assert res.exit_code == 1
    assert res.output.strip() == (
        "Error: label 'neg' is not one the model knows (a, b, c). "
        "evaluate on a dataset with the same label names as the "
        "training data"
    )
    res = r.invoke(cli, ["evaluate", "nope", "--data", "other"])
    assert res.exit_code == 1
    assert res.output.strip() == (
        "Error: no model named 'nope'. run `edge-tl models list` to see them"
    )


def test_cli_evaluate_plot(tmp_path) -> None:
    keys.init_identity(None)
    save_model(_model())
    texts, labels = _texts(25)
    data.save_dataset("ev_data", texts, labels)
    png = tmp_path / "ev.png"
    res = CliRunner().invoke(cli, ["evaluate", "ev", "--data", "ev_data", "--plot", str(png)])
    assert res.exit_code == 0, res.output
    blob = png.read_bytes()
    assert blob.startswith(b"\x89PNG\r\n\x1a\n") and len(blob) > 5000
    assert texts[0].encode() not in blob  # numbers only, never the evaluated text
    res = CliRunner().invoke(
        cli, ["evaluate", "ev", "--data", "ev_data", "--plot", str(tmp_path / "missing" / "ev.png")]
    )
    assert res.exit_code == 1
    assert res.output.startswith(f"Error: folder {tmp_path / 'missing'} does not exist")
