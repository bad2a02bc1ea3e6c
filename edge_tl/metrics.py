"""Classification metrics from labels and predictions: accuracy, per-class P/R/F1, confusion,
the mix of a network and its TF-IDF head, and the report `evaluate` prints. Pure Python and
numpy: the torch-free `evaluate MODEL.onnx` uses it as much as training does."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

SWEEP = (0.0, 0.25, 0.5, 0.75, 1.0)  # head weights whose accuracy evaluate reports


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


def _how_mixed(r: dict[str, Any]) -> str:
    if r.get("tfidf_mix") == "stacked":
        return "the model stacks them: a logistic regression on both parts' log-odds"
    return f"the model mixes them at head weight {r['tfidf_weight']:g}"


def format_report(r: dict[str, Any]) -> str:
    """Human-readable metrics table."""
    names = r["labels"]
    w = max(8, *(len(n) for n in names))
    lines = [f"accuracy {r['accuracy']:.4f} on {r['n']} rows (macro F1 {r['macro_f1']:.4f})"]
    if "neural_accuracy" in r:  # a model with a TF-IDF head: the mix, then each part alone
        lines.append(
            f"(network alone {r['neural_accuracy']:.4f}, TF-IDF head alone "
            f"{r['tfidf_accuracy']:.4f}; {_how_mixed(r)})"
        )
        if r.get("weight_sweep"):
            ws, accs = r["weight_sweep"], r["weight_sweep"].values()
            lines.append(
                f"head weight {' / '.join(ws)}: accuracy "
                f"{' / '.join(f'{a:.4f}' for a in accs)} (export --tfidf-weight W "
                "sets it; choose it on rows you do not report)"
            )
    lines += ["", f"{'label':<{w}}  precision  recall     f1  support"]
    for n in names:
        c = r["per_class"][n]
        lines.append(
            f"{n:<{w}}  {c['precision']:9.4f}  {c['recall']:6.4f}  {c['f1']:5.4f}"
            f"  {c['support']:7d}"
        )
    lines += [
        "",
        "confusion matrix (rows = true label, columns = predicted)",
        " " * w + "  " + "  ".join(f"{n[:8]:>8}" for n in names),
    ]
    for n, row in zip(names, r["confusion_matrix"], strict=True):
        lines.append(f"{n:<{w}}  " + "  ".join(f"{v:8d}" for v in row))
    return "\n".join(lines)


def mix_metrics(
    neural: Any,
    tfidf: Any,
    weight: float,
    y: Sequence[int],
    names: Sequence[str],
    stacked: Any = None,
) -> dict[str, Any]:
    """Metrics of what an export predicts: the `stacked` mix's probabilities when given, else
    `weight` x head + (1 - weight) x network; with each part's own accuracy and the accuracy at
    every weight of SWEEP. Arrays (n, n_class)."""
    import numpy as np  # lazy: the metrics above need none

    neural = np.asarray(neural, dtype=np.float32).reshape(len(y), len(names))
    tfidf = np.asarray(tfidf, dtype=np.float32).reshape(len(y), len(names))
    gold = np.asarray(y)

    def mixed(w: float) -> Any:
        return (w * tfidf + (1 - w) * neural).argmax(1)

    shipped = mixed(weight) if stacked is None else np.asarray(stacked).argmax(1)
    out = metrics_from_predictions(list(y), shipped.tolist(), list(names))
    out.update(
        neural_accuracy=float((neural.argmax(1) == gold).mean()),
        tfidf_accuracy=float((tfidf.argmax(1) == gold).mean()),
        tfidf_weight=weight,
        tfidf_mix="share" if stacked is None else "stacked",
        weight_sweep={f"{w:g}": float((mixed(w) == gold).mean()) for w in SWEEP},
    )
    return out
