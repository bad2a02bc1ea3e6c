"""The `transfer + TF-IDF` series of a comparison: the mean of the two arms' test probabilities.

A transfer unit refits the TF-IDF + LR baseline on its own N rows (the same deterministic model
as that size and seed's `tfidf` unit, seconds on a CPU) and averages the two models' probabilities
on the test rows. No weight is fitted, so nothing is chosen on the test set, and no per-row output
is written to disk (test rows may be private). It answers whether the neural model knows
something the bag of n-grams does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edge_tl.metrics import argmax, metrics_from_predictions
from edge_tl.train.baseline import train_tfidf

ARM = "transfer+tfidf"


def in_label_order(
    probs: Sequence[Sequence[float]], have: Sequence[str], want: Sequence[str]
) -> list[list[float]]:
    """Probability columns moved from label order `have` to `want` (0 for a label not in `have`)."""
    col = {n: i for i, n in enumerate(have)}
    return [[p[col[n]] if n in col else 0.0 for n in want] for p in probs]


def mean_of_probs(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> list[int]:
    """Class index of the mean of two models' probabilities, row by row (ties: first class)."""

    if len(a) != len(b):
        raise ValueError(f"{len(a)} rows of probabilities against {len(b)}")
    return [
        argmax([(x + y) / 2 for x, y in zip(p, q, strict=True)]) for p, q in zip(a, b, strict=True)
    ]


def ensemble_metrics(
    neural: Sequence[Sequence[float]],
    train_texts: Sequence[str],
    train_labels: Sequence[str],
    test_texts: Sequence[str],
    gold: Sequence[int],
    names: Sequence[str],
    seed: int,
) -> dict[str, Any]:
    """Accuracy, macro F1 and confusion matrix of the mean of `neural` (probabilities in `names`
    order) and a TF-IDF + LR model fitted on the same rows."""

    m = train_tfidf(train_texts, train_labels, seed)
    tf = in_label_order(m.predict_proba(test_texts), m.labels, names)
    r = metrics_from_predictions(list(gold), mean_of_probs(neural, tf), list(names))
    return {
        "accuracy": r["accuracy"],
        "macro_f1": r["macro_f1"],
        "confusion_matrix": r["confusion_matrix"],
        "tfidf_c": m.c,
        "combine": "mean of probabilities",
    }


__all__ = ["ARM", "ensemble_metrics", "in_label_order", "mean_of_probs"]
