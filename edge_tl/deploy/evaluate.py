"""Evaluate the file you ship: an exported ONNX model scored with onnxruntime alone, with the
same report as `evaluate` gives for a model in the store (torch-free)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_tl.deploy.predict import Classifier
from edge_tl.errors import DataError
from edge_tl.metrics import metrics_from_predictions, mix_metrics

CHUNK = 256  # texts per onnxruntime pass: bounded memory on any size of test set


def evaluate_onnx(
    clf: Classifier,
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    tfidf_weight: float | None = None,
) -> dict[str, Any]:
    """Accuracy, per-class P/R/F1 and confusion matrix of the export on labelled rows; for a
    model with a TF-IDF head also each part's accuracy and the weight sweep."""
    names = list(clf.labels)
    unknown = sorted(set(labels) - set(names))
    if unknown:
        raise DataError(
            f"label {unknown[0]!r} is not one the model predicts ({', '.join(names)})",
            "evaluate on rows labelled like the training data",
        )
    if not texts:
        raise DataError("no labelled rows to evaluate on", "give rows with a label")
    y = [names.index(lab) for lab in labels]
    has_head = clf.meta.format_version >= 2
    outs = ("probs_neural", "probs_tfidf", "probs") if has_head else ("probs",)
    parts = _outputs(clf, texts, outs)
    if not has_head:
        r = metrics_from_predictions(y, parts[0].argmax(1).tolist(), names)
    else:
        weight = clf.meta.tfidf["weight"] if tfidf_weight is None else tfidf_weight
        # the graph's own stacked mix, unless a share is asked for
        stacked = parts[2] if clf.meta.mix == "stacked" and tfidf_weight is None else None
        r = mix_metrics(parts[0], parts[1], weight, y, names, stacked)
    r["model"] = str(clf.path)
    return r


def _outputs(clf: Classifier, texts: Sequence[str], names: Sequence[str]) -> list[Any]:
    """Graph outputs `names` for every text, computed CHUNK texts at a time."""
    import numpy as np  # onnxruntime has loaded it already

    chunks = [clf.outputs_batched(texts[i : i + CHUNK], names) for i in range(0, len(texts), CHUNK)]
    return [np.concatenate([c[k] for c in chunks]) for k in range(len(names))]


def read_labelled(path: Path, text_col: str = "text", label_col: str = "label") -> tuple:
    """(texts, labels) of a CSV/TSV/JSONL file's labelled rows (unlabelled rows are skipped)."""
    from edge_tl.store.sources import read_source

    texts: list[str] = []
    labels: list[str] = []
    for text, label in read_source(path, text_col=text_col, label_col=label_col):
        if label is not None:
            texts.append(text)
            labels.append(label)
    return texts, labels


__all__ = ["evaluate_onnx", "read_labelled"]
