"""The federated TF-IDF head. Its features are the base's own words (public, the same on every
node, so the linear weights line up and no word of a node's text is ever named); each node
fits a logistic regression on its rows and sends the change, with its document frequencies
(the mean of which is the pooled idf) and 1 / its row count (how many rows stand behind the
mean). Four arrays travel after the network's: coefficients, intercepts, document shares, and
the inverse row count."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge_tl.tfidf_head import MISSING_LABEL_INTERCEPT, TOKEN_PATTERN, TfidfHead

MIX_LOSS = "mix_log_loss_"  # + index in WEIGHT_GRID: a node's held-out log loss of the mix
KEYS = ("head.coef", "head.intercept", "head.doc_share", "head.inv_rows")
CS = (1.0, 3.0, 10.0, 30.0)  # C by cross-validation on the node; larger C moves weights past 8


def head_features(vocab: Sequence[str]) -> list[str]:
    """The base's words the TF-IDF tokenizer reads as one lowercase word (specials left out)."""
    pat = re.compile(TOKEN_PATTERN)
    seen: set[str] = set()
    out = []
    for w in vocab:
        if w.startswith("xx") or w != w.lower() or not pat.fullmatch(w) or w in seen:
            continue
        seen.add(w)
        out.append(w)
    return out


def head_shapes(n_class: int, n_features: int) -> list[tuple[int, ...]]:
    """Shapes of the four head arrays, in KEYS order."""
    return [(n_class, n_features), (n_class,), (n_features,), (1,)]


def zero_arrays(n_class: int, n_features: int) -> list[np.ndarray]:
    """The head every federation starts from: no weights, no document counts yet."""
    return [np.zeros(s, np.float32) for s in head_shapes(n_class, n_features)]


def count_matrix(texts: Sequence[str], features: Sequence[str]) -> Any:
    """Sparse (n_texts, n_features) word counts over `features` (scikit-learn's analyzer)."""
    from sklearn.feature_extraction.text import CountVectorizer

    vec = CountVectorizer(vocabulary=list(features), token_pattern=TOKEN_PATTERN, lowercase=True)
    return vec.transform(list(texts)).astype(np.float32)


def idf_of(share: np.ndarray, rows: float) -> np.ndarray:
    """scikit-learn's smooth idf from document shares over `rows` texts (shares and rows
    held to their range first: DP noise may push them out of it)."""
    rows = max(float(rows), 1.0)
    share = np.clip(share, 0.0, 1.0)
    return (np.log((1.0 + rows) / (1.0 + share * rows)) + 1.0).astype(np.float32)


def tfidf(counts: Any, idf: np.ndarray) -> Any:
    """Sublinear tf times idf, each row scaled to unit L2 norm (the head's features)."""
    from sklearn.preprocessing import normalize

    x = counts.tocsr(copy=True)
    x.data = 1.0 + np.log(x.data)
    return normalize(x.multiply(idf).tocsr(), norm="l2")


def fit_local(
    counts: Any, y: Sequence[int], n_class: int, glob: Sequence[np.ndarray], seed: int
) -> list[np.ndarray]:
    """This node's head arrays: LR on its rows under the global idf (its own before any)."""
    y = np.asarray(y)
    n = counts.shape[0]
    share = np.asarray((counts > 0).mean(axis=0), dtype=np.float32).ravel()
    g_share, g_inv = glob[2], float(glob[3][0])
    idf = idf_of(g_share, 1.0 / g_inv) if g_inv > 0 else idf_of(share, n)
    x = tfidf(counts, idf)
    coef, intercept = glob[0].copy(), glob[1].copy()  # a label without rows here: unchanged
    if n_class == 2:  # one model, two rows: -w for the first label, w for the second
        fitted = _fit_one(x, y == 1, seed)
        if fitted is not None:
            w, b = fitted
            coef[:] = np.vstack([-w, w])
            intercept[:] = [-b, b]
    else:
        for k in range(n_class):
            fitted = _fit_one(x, y == k, seed)
            if fitted is not None:
                coef[k], intercept[k] = fitted
    return [
        coef.astype(np.float32),
        intercept.astype(np.float32),
        share,
        np.array([1.0 / max(n, 1)], np.float32),
    ]


def _fit_one(x: Any, pos: np.ndarray, seed: int) -> tuple[np.ndarray, float] | None:
    """One-vs-rest LR weights and intercept, C by CV (None: too few rows of a side)."""
    from sklearn.linear_model import LogisticRegressionCV

    folds = int(min(5, pos.sum(), (~pos).sum()))
    if folds < 2:
        return None
    clf = LogisticRegressionCV(
        Cs=list(CS), cv=folds, max_iter=1000, random_state=seed, scoring="accuracy"
    )
    with warnings.catch_warnings():  # scikit-learn's notice of its attributes' future shape
        warnings.simplefilter("ignore", FutureWarning)
        clf.fit(x, pos.astype(int))
    return clf.coef_[0].astype(np.float32), float(clf.intercept_[0])


def head_of_arrays(
    features: Sequence[str], arrays: Sequence[np.ndarray], nodes: int, weight: float
) -> TfidfHead | None:
    """The global head as an ordinary TfidfHead (words no node holds left out); None before
    any node has sent one."""
    coef, intercept, share, inv = arrays
    if float(inv[0]) <= 0:
        return None
    per_node = 1.0 / float(inv[0])  # the nodes' idf reads shares over this many rows
    # the mean of 1/n_i weighted by n_i is nodes / total rows
    doc_freq = np.rint(np.clip(share, 0.0, 1.0) * nodes * per_node).astype(np.int32)
    keep = np.flatnonzero(doc_freq >= 1)
    intercept = np.where(np.abs(intercept) > 0, intercept, MISSING_LABEL_INTERCEPT)
    return TfidfHead(
        [features[i] for i in keep],
        idf_of(share, per_node)[keep],
        coef[:, keep].astype(np.float32),
        intercept.astype(np.float32),
        ngram_range=(1, 1),
        weight=weight,
        doc_freq=doc_freq[keep],
    )


__all__ = [
    "KEYS",
    "count_matrix",
    "fit_local",
    "head_features",
    "head_of_arrays",
    "head_shapes",
    "idf_of",
    "tfidf",
    "zero_arrays",
]
