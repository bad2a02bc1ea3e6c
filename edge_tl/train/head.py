"""Fitting the TF-IDF head a trained classifier carries, and the metrics of its mix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edge_tl.metrics import mix_metrics
from edge_tl.tfidf_head import (
    MISSING_LABEL_INTERCEPT,
    Stack,
    TfidfHead,
    head_proba,
    stack_features,
)
from edge_tl.train.baseline import TfidfConfig, TfidfModel, train_tfidf


def fit_head(
    texts: Sequence[str],
    labels: Sequence[str],
    names: Sequence[str],
    seed: int = 0,
    weight: float = 0.5,
    *,
    nb: bool = False,
) -> TfidfHead:
    """Fit TF-IDF + LR (baseline.train_tfidf: C by CV; NB-LR with `nb`) in `names` order."""
    return head_of(train_tfidf(texts, labels, seed, TfidfConfig(nb=nb)), names, weight)


def head_of(m: TfidfModel, names: Sequence[str], weight: float = 0.5) -> TfidfHead:
    """A fitted TF-IDF model as the head's arrays, its rows in `names` order."""
    vocab = m.vectorizer.vocabulary_
    features = [""] * len(vocab)
    for gram, col in vocab.items():
        features[col] = gram
    w, b = m.linear_parts()
    if len(m.labels) == 2:  # one row for the second label: -w for the first, w for the second
        w, b = np.vstack([-w, w]), np.concatenate([-b, b])
    rows = {name: i for i, name in enumerate(m.labels)}
    coef = np.zeros((len(names), len(features)), dtype=np.float32)
    intercept = np.full(len(names), MISSING_LABEL_INTERCEPT, dtype=np.float32)
    for k, name in enumerate(names):
        if name in rows:
            coef[k], intercept[k] = w[rows[name]], b[rows[name]]
    vec = m.vectorizer
    return TfidfHead(
        features,
        np.asarray(vec.idf_, dtype=np.float32),
        coef,
        intercept,
        lowercase=bool(vec.lowercase),
        token_pattern=vec.token_pattern,
        ngram_range=tuple(vec.ngram_range),
        sublinear_tf=bool(vec.sublinear_tf),
        weight=weight,
        c=m.c,
        cv_accuracy=m.cv_accuracy,
        doc_freq=m.doc_freq,
    )


def out_of_fold_proba(
    m: TfidfModel, texts: Sequence[str], labels: Sequence[str], names: Sequence[str], seed: int = 0
) -> Any:
    """Cross-fitted probabilities (n, len(names)) of `m`'s kind of model at its C on the rows
    it was fitted on: each row scored by a model fitted on the other folds, never on itself
    (None when a label has fewer than two rows: no fold split can hold it on both sides)."""
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray([m.labels.index(lab) for lab in labels])
    folds = min(5, int(np.bincount(y, minlength=len(m.labels)).min()))
    if folds < 2:
        return None
    x = m.vectorizer.transform(list(texts))
    out = np.zeros((len(y), len(names)), dtype=np.float32)
    cols = [names.index(n) for n in m.labels]
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        clf = clone(m.classifier).fit(x[tr], y[tr])  # its labels: sorted indices of y[tr]
        out[np.ix_(te, [cols[int(k)] for k in clf.classes_])] = clf.predict_proba(x[te])
    return out


def choose_weight(
    neural: Any, tfidf: Any, y: Sequence[int], min_rows: int, fallback: float
) -> tuple[float, str]:
    """The head's share in [0, 1] (steps of 0.05) that minimises the mix's log loss on held-out
    rows, and how it was chosen; `fallback` when fewer than `min_rows` rows can say."""
    if len(y) < min_rows:
        return fallback, f"fallback: {len(y)} held-out rows < {min_rows}"
    return weight_of_losses(mix_log_losses(neural, tfidf, y)), f"log loss on {len(y)} held-out rows"


WEIGHT_GRID = np.linspace(0.0, 1.0, 21)  # the head's shares choose_weight tries


def mix_log_losses(neural: Any, tfidf: Any, y: Sequence[int]) -> Any:
    """Mean log loss of the mix at every share of WEIGHT_GRID (float64, (21,))."""
    neural, tfidf = np.asarray(neural, dtype=np.float64), np.asarray(tfidf, dtype=np.float64)
    gold = np.asarray(y)
    rows = np.arange(len(gold))
    # log loss, not accuracy: on a few hundred rows accuracy is flat over wide ranges of w
    return np.array(
        [
            -np.log(np.clip(w * tfidf[rows, gold] + (1 - w) * neural[rows, gold], 1e-7, 1)).mean()
            for w in WEIGHT_GRID
        ]
    )


def weight_of_losses(losses: Any) -> float:
    """The share of WEIGHT_GRID with the least loss (the first of equals: less of the head)."""
    return float(WEIGHT_GRID[int(np.argmin(losses))])


def fit_stack(neural: Any, tfidf: Any, y: Sequence[int], seed: int = 0) -> Stack | None:
    """Stacking: a logistic regression (C = 1) on both parts' log-odds, fitted on held-out rows
    (the network's held out, the head's cross-fitted); None when the rows miss a label."""
    from sklearn.linear_model import LogisticRegression

    gold = np.asarray(y)
    k = np.asarray(neural).shape[1]
    if set(gold.tolist()) != set(range(k)):
        return None
    fit = LogisticRegression(C=1.0, max_iter=1000, random_state=seed)
    fit.fit(stack_features(neural, tfidf), gold)
    w, b = fit.coef_, fit.intercept_
    if k == 2:  # one row, for the second label: softmax of (-z/2, z/2) is sigmoid(z)
        w, b = np.vstack([-w / 2, w / 2]), np.concatenate([-b / 2, b / 2])
    return Stack(w.astype(np.float32), b.astype(np.float32))


def mixed_metrics(
    head: TfidfHead, neural: Any, texts: Sequence[str], y: Sequence[int], names: Sequence[str]
) -> dict[str, Any]:
    """Metrics of the mix (what the exported model predicts) on labelled rows, with the
    network's and the head's own accuracy beside them."""
    out = head_mix_metrics(head, neural, head_proba(head, texts), y, names)
    out.update(tfidf_c=head.c, tfidf_features=len(head.features))
    return out


def head_mix_metrics(
    head: TfidfHead, neural: Any, tfidf: Any, y: Sequence[int], names: Sequence[str]
) -> dict[str, Any]:
    """metrics.mix_metrics of the mix `head` ships (stacked or at its share), from both parts'
    probabilities (n, n_class)."""
    stacked = None if head.stack is None else head.mix(neural, tfidf)
    return mix_metrics(neural, tfidf, head.weight, y, names, stacked)


__all__ = [
    "WEIGHT_GRID",
    "choose_weight",
    "fit_head",
    "fit_stack",
    "head_mix_metrics",
    "head_of",
    "mix_log_losses",
    "mixed_metrics",
    "out_of_fold_proba",
    "weight_of_losses",
]
