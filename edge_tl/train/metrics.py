"""Classification metrics from labels and predictions: accuracy, per-class P/R/F1, confusion."""

from __future__ import annotations

from collections.abc import Sequence


def metrics_from_predictions(y: Sequence[int], pred: Sequence[int], names: Sequence[str]) -> dict:
    """Accuracy, per-class precision/recall/F1/support and the confusion matrix (rows = truth)."""
    n = len(names)
    cm = [[0] * n for _ in range(n)]
    for t, p in zip(y, pred, strict=True):
        cm[t][p] += 1
    total = len(y)
    per_class = {}
    for c, name in enumerate(names):
        tp = cm[c][c]
        predicted = sum(cm[r][c] for r in range(n))
        actual = sum(cm[c])
        prec = tp / predicted if predicted else 0.0
        rec = tp / actual if actual else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per_class[name] = {"precision": prec, "recall": rec, "f1": f1, "support": actual}
    return {
        "accuracy": sum(cm[c][c] for c in range(n)) / total if total else 0.0,
        "n": total,
        "per_class": per_class,
        "macro_f1": sum(v["f1"] for v in per_class.values()) / n if n else 0.0,
        "labels": list(names),
        "confusion_matrix": cm,
    }


def argmax(p: Sequence[float]) -> int:
    """Index of the largest value (the first of equal ones)."""
    return max(range(len(p)), key=p.__getitem__)


__all__ = ["argmax", "metrics_from_predictions"]
