"""Evaluate a trained classifier: accuracy, per-class precision/recall/F1, confusion matrix."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastai.text.data import pad_input_chunk
from matplotlib.figure import Figure

from edge_tl.awd_lstm import build_classifier
from edge_tl.errors import ConfigError, DataError, ModelError
from edge_tl.metrics import argmax, metrics_from_predictions
from edge_tl.store.datasets import open_dataset
from edge_tl.store.files import atomic_write
from edge_tl.store.models import TrainedModel, load_model
from edge_tl.train.engine import PAD, autocast_ctx, numericalize, tokenize
from edge_tl.train.head import mixed_metrics


def predict_proba_ids(
    model, ids: list, bs: int, bptt: int, dtype: str = "fp32", device: Any = "cpu"
) -> list[list[float]]:
    """Class probabilities (softmax) of every doc, in input order (model in eval mode)."""

    model.eval()
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # longest first: little padding
    probs: list[list[float]] = [[] for _ in ids]
    with torch.no_grad():
        for s in range(0, len(order), bs):
            idx = order[s : s + bs]
            batch = pad_input_chunk(
                [(ids[i],) for i in idx], pad_idx=PAD, pad_first=True, seq_len=bptt
            )
            x = torch.stack([b[0] for b in batch]).to(device)  # (bs, padded_len)
            with autocast_ctx(dtype, torch.device(device).type):
                logits = model(x)[0]  # (bs, n_class)
            for i, p in zip(idx, logits.float().softmax(1).tolist(), strict=True):
                probs[i] = p
    return probs


def predict_ids(model, ids: list, bs: int, bptt: int, dtype: str = "fp32", device: Any = "cpu"):
    """Class index of every doc (model in eval mode; longest docs first, little padding)."""
    return [argmax(p) for p in predict_proba_ids(model, ids, bs, bptt, dtype, device)]


def evaluate_texts(
    m: TrainedModel,
    texts: Sequence[str],
    labels: Sequence[str],
    bs: int = 64,
    dtype: str = "fp32",
    workers: int = 0,
) -> dict[str, Any]:
    """Metrics of stored/in-memory model `m` on labelled texts (tokenized in memory)."""

    unknown = sorted(set(labels) - set(m.labels))
    if unknown:
        raise DataError(
            f"label {unknown[0]!r} is not one the model knows ({', '.join(m.labels)})",
            "evaluate on a dataset with the same label names as the training data",
        )
    ids = numericalize(tokenize(texts, workers), m.vocab)
    c2i = {n: i for i, n in enumerate(m.labels)}
    gold = [c2i[x] for x in labels]
    probs = network_proba(m, ids, bs, dtype)
    if m.tfidf_head is not None:  # what the model predicts: the mix with its TF-IDF head
        return mixed_metrics(m.tfidf_head, probs, texts, gold, m.labels)
    return metrics_from_predictions(gold, probs.argmax(1).tolist(), m.labels)


def classifier_of(m: TrainedModel, state: dict[str, Any] | None = None) -> Any:
    """The fastai classifier of `m` with `state` (default: the forward network's) loaded."""
    tc = m.train_config
    bptt, max_len = int(tc.get("bptt", 72)), int(tc.get("max_len", 1440))
    model = build_classifier(
        m.model_cfg, len(m.labels), seq_len=bptt, max_len=max_len, lin_ftrs=list(m.lin_ftrs)
    )
    model.load_state_dict(m.state_dict if state is None else state)
    return model


def network_proba(
    m: TrainedModel, ids: list, bs: int = 64, dtype: str = "fp32", device: Any = "cpu"
) -> Any:
    """The network's class probabilities of id lists: the forward network's, or with a backward
    network the mean of both directions (it reads each text reversed)."""
    bptt = int(m.train_config.get("bptt", 72))
    fwd = classifier_of(m).to(device)
    f = np.asarray(predict_proba_ids(fwd, ids, bs, bptt, dtype, device), np.float64)
    if m.backward is None:
        return f
    bwd = classifier_of(m, m.backward.state_dict).to(device)
    rev = [torch.as_tensor(t).flip(0) for t in ids]  # each text reversed
    b = np.asarray(predict_proba_ids(bwd, rev, bs, bptt, dtype, device), np.float64)
    return (f + b) / 2


def evaluate_model(
    name: str, data: str, dtype: str = "fp32", tfidf_weight: float | None = None
) -> dict[str, Any]:
    """Evaluate stored model `name` on the labelled rows of vault dataset `data` (its TF-IDF
    head mixed at `tfidf_weight`, default the model's own)."""

    m = load_model(name)
    if tfidf_weight is not None:
        if m.tfidf_head is None:
            raise ModelError(
                f"model {name!r} has no TF-IDF head to weigh",
                "drop --tfidf-weight, or retrain with --tfidf-head",
            )
        m = dataclasses.replace(m, tfidf_head=m.tfidf_head.with_weight(tfidf_weight))
    ds = open_dataset(data)
    texts, labels = ds.labelled()
    if not texts:
        raise DataError(
            f"dataset {data!r} has no labelled rows to evaluate on", "import a labelled dataset"
        )
    out = evaluate_texts(m, texts, labels, dtype=dtype)
    out.update(model=name, data=data, dataset_fingerprint=ds.fingerprint)
    return out


def plot_png(r: dict[str, Any]) -> bytes:
    """PNG of an evaluation: the confusion matrix and per-class precision/recall/F1."""

    names, cm = list(r["labels"]), r["confusion_matrix"]
    fig = Figure(figsize=(9, 4), dpi=110)
    ax_cm, ax_f = fig.subplots(1, 2)
    ax_cm.imshow(cm, cmap="Blues")
    top = max((v for row in cm for v in row), default=0)
    for i, row in enumerate(cm):
        for j, v in enumerate(row):
            ax_cm.text(
                j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black"
            )
    ax_cm.set_xticks(range(len(names)), names)
    ax_cm.set_yticks(range(len(names)), names)
    ax_cm.set_xlabel("predicted")
    ax_cm.set_ylabel("true")
    ax_cm.set_title(f"{r.get('model', '')} on {r.get('data', '')}: accuracy {r['accuracy']:.3f}")
    width = 0.27
    for k, metric in enumerate(("precision", "recall", "f1")):
        xs = [i + (k - 1) * width for i in range(len(names))]
        ax_f.bar(xs, [r["per_class"][n][metric] for n in names], width, label=metric)
    ax_f.set_xticks(range(len(names)), names)
    ax_f.set_ylim(0, 1)
    ax_f.set_title(f"per class (n = {r['n']:,})")
    ax_f.legend(fontsize=8, loc="lower right")
    ax_f.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def save_plot(r: dict[str, Any], path: Path) -> Path:
    """Write plot_png(r) to `path` atomically (counts and scores only, never text)."""

    path = Path(path)
    if not path.parent.is_dir():
        raise ConfigError(
            f"folder {path.parent} does not exist", "create it or pick another --plot"
        )
    atomic_write(path, plot_png(r), 0o644)
    return path
