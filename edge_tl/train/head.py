"""Fitting the TF-IDF head a trained classifier carries, and the metrics of its mix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edge_tl.metrics import mix_metrics
from edge_tl.tfidf_head import MISSING_LABEL_INTERCEPT, TfidfHead, head_proba
from edge_tl.train.baseline import train_tfidf


def fit_head(
    texts: Sequence[str],
    labels: Sequence[str],
    names: Sequence[str],
    seed: int = 0,
    weight: float = 0.5,
) -> TfidfHead:
    """Fit TF-IDF + LR (baseline.train_tfidf: C by CV) and lay it out in `names` order."""

    m = train_tfidf(texts, labels, seed)
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


def mixed_metrics(
    head: TfidfHead, neural: Any, texts: Sequence[str], y: Sequence[int], names: Sequence[str]
) -> dict[str, Any]:
    """Metrics of the mix (what the exported model predicts) on labelled rows, with the
    network's and the head's own accuracy beside them."""
    out = mix_metrics(neural, head_proba(head, texts), head.weight, y, names)
    out.update(tfidf_c=head.c, tfidf_features=len(head.features))
    return out


__all__ = ["fit_head", "mixed_metrics"]
