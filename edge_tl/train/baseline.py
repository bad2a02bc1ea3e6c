"""The non-neural baseline: TF-IDF (word 1-2-grams, sublinear tf) + logistic regression, C by CV.

Seconds on a CPU; the `compare` table shows what a neural arm must beat at each training size.
With `nb`, the features are scaled by naive-Bayes log-count ratios first (NB-LR, Wang & Manning
2012); the ratio folds into the linear weights, so the fitted model has the same form.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.multiclass import OneVsRestClassifier

from edge_tl.errors import DataError
from edge_tl.metrics import metrics_from_predictions

DEFAULT_CS = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
# NB-scaled features are larger (|r| up to ~5): the grid sits one step lower than plain TF-IDF's.
NB_CS = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)


@dataclass(frozen=True)
class TfidfConfig:
    """TF-IDF + logistic regression settings (the issue's: word 1-2-grams, sublinear tf, 5-fold)."""

    ngram_max: int = 2
    sublinear_tf: bool = True
    min_df: int = 1
    cs: tuple[float, ...] = DEFAULT_CS  # candidate inverse regularisation strengths
    folds: int = 5
    max_iter: int = 1000
    nb: bool = False  # scale features by NB log-count ratios (NB-LR); cs then means NB_CS
    nb_alpha: float = 1.0  # the ratios' additive smoothing (Wang & Manning's alpha)


def nb_ratio(x: Any, pos: Any, alpha: float = 1.0) -> Any:
    """NB log-count ratio r (F,) of rows `pos` against the rest, from binarized features:
    log((p / |p|_1) / (q / |q|_1)), p = alpha + texts of `pos` holding each feature."""
    present = (x > 0).astype(np.float64)  # sparse: which texts hold each feature
    p = alpha + np.asarray(present[pos].sum(0)).ravel()
    q = alpha + np.asarray(present[~pos].sum(0)).ravel()
    return np.log((p / p.sum()) / (q / q.sum())).astype(np.float32)


class NBLogisticRegression(ClassifierMixin, BaseEstimator):
    """Logistic regression on NB-scaled features, one-vs-rest past two labels; `coef_` holds
    the folded weights w * r, so `x @ coef_.T + intercept_` needs no ratio at prediction."""

    def __init__(
        self, C: float = 1.0, alpha: float = 1.0, max_iter: int = 1000, random_state: int = 0
    ) -> None:
        self.C, self.alpha, self.max_iter, self.random_state = C, alpha, max_iter, random_state

    def fit(self, x: Any, y: Any) -> NBLogisticRegression:
        """One NB ratio and one LR per one-vs-rest row (a single row for two labels)."""
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        targets = self.classes_[1:] if len(self.classes_) == 2 else self.classes_
        coef, intercept = [], []
        for k in targets:
            r = nb_ratio(x, y == k, self.alpha)
            lr = LogisticRegression(
                C=self.C, solver="liblinear", max_iter=self.max_iter, random_state=self.random_state
            ).fit(x.multiply(r).tocsr(), (y == k).astype(int))
            # w . (r * x) = (w * r) . x: the ratio becomes part of the weights
            coef.append(lr.coef_[0] * r)
            intercept.append(lr.intercept_[0])
        self.coef_, self.intercept_ = np.vstack(coef), np.asarray(intercept)
        return self

    def decision_function(self, x: Any) -> Any:
        """Scores (n,) for two labels, else (n, K)."""
        z = np.asarray(x @ self.coef_.T) + self.intercept_
        return z[:, 0] if len(self.classes_) == 2 else z

    def predict_proba(self, x: Any) -> Any:
        """Probabilities (n, K): sigmoid per row, normalised as one-vs-rest does."""
        s = 1 / (1 + np.exp(-np.asarray(x @ self.coef_.T) - self.intercept_))
        if len(self.classes_) == 2:
            return np.hstack([1 - s, s])
        return s / s.sum(1, keepdims=True)

    def predict(self, x: Any) -> Any:
        """Class of every row."""
        return self.classes_[self.predict_proba(x).argmax(1)]


@dataclass
class TfidfModel:
    """A fitted vectorizer and classifier, with the C that cross-validation picked."""

    vectorizer: Any
    classifier: Any
    labels: list[str]
    c: float
    cv_accuracy: float
    folds: int
    seconds: float
    doc_freq: Any = None  # int32 (F,): training texts each feature occurs in

    def predict(self, texts: Sequence[str]) -> list[str]:
        """Predicted label of every text."""
        pred = self.classifier.predict(self.vectorizer.transform(list(texts)))
        return [self.labels[int(i)] for i in pred]

    def linear_parts(self) -> tuple[Any, Any]:
        """(coef, intercept) as one-vs-rest rows: (1, F) and (1,) for two labels, else (K, F)."""

        # NBLogisticRegression's coef_ already holds the ratio-scaled weights
        if hasattr(self.classifier, "estimators_"):  # OneVsRestClassifier
            est = self.classifier.estimators_
            return (np.vstack([e.coef_ for e in est]), np.concatenate([e.intercept_ for e in est]))
        return self.classifier.coef_, self.classifier.intercept_

    def predict_proba(self, texts: Sequence[str]) -> list[list[float]]:
        """Probability of each label (in `labels` order) for every text."""
        return self.classifier.predict_proba(self.vectorizer.transform(list(texts))).tolist()


def train_tfidf(
    texts: Sequence[str], labels: Sequence[str], seed: int = 0, cfg: TfidfConfig | None = None
) -> TfidfModel:
    """Fit TF-IDF + logistic regression on labelled texts, choosing C by stratified k-fold CV."""

    cfg = cfg or TfidfConfig()
    if len(texts) != len(labels):
        raise DataError(f"{len(texts)} texts but {len(labels)} labels")
    names = sorted(set(labels))
    if len(names) < 2:
        raise DataError(
            "TF-IDF baseline: the training rows hold fewer than two labels",
            "give it rows of at least two labels",
        )
    y = np.array([names.index(x) for x in labels])
    smallest = int(np.bincount(y).min())
    t0 = time.perf_counter()
    # The vocabulary and idf come from the training texts only (no labels), so fitting them
    # once before the CV split leaks nothing the folds could select on.
    vec = TfidfVectorizer(
        ngram_range=(1, cfg.ngram_max),
        sublinear_tf=cfg.sublinear_tf,
        min_df=cfg.min_df,
        dtype=np.float32,
    )
    x = vec.fit_transform(list(texts))
    folds = min(cfg.folds, smallest)

    def clf(c: float) -> Any:
        if cfg.nb:
            return NBLogisticRegression(c, cfg.nb_alpha, cfg.max_iter, seed)
        # liblinear shuffles its coordinates: fix the order so a rerun gives the same model
        lr = LogisticRegression(C=c, solver="liblinear", max_iter=cfg.max_iter, random_state=seed)
        # liblinear is binary only (scikit-learn >= 1.8): one-vs-rest for more labels, which
        # is what it did by itself before
        return lr if len(names) == 2 else OneVsRestClassifier(lr)

    cs = NB_CS if cfg.nb and cfg.cs == DEFAULT_CS else cfg.cs
    if folds >= 2 and len(cs) > 1:
        # NB ratios use labels: each fold computes its own inside clf(c).fit, so none leak
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        scores = [
            float(cross_val_score(clf(c), x, y, cv=cv, scoring="accuracy").mean()) for c in cs
        ]
        best = int(np.argmax(scores))  # first (smallest C) of equal scores: the simpler model
        c, cv_acc = cs[best], scores[best]
    else:
        c, cv_acc, folds = cs[len(cs) // 2], float("nan"), 0
    model = clf(c).fit(x, y)
    # CSR column indices name each (text, feature) pair once: their counts are document counts
    doc_freq = np.bincount(x.indices, minlength=x.shape[1]).astype(np.int32)
    seconds = time.perf_counter() - t0
    return TfidfModel(vec, model, names, float(c), cv_acc, folds, seconds, doc_freq)


def tfidf_accuracy(
    train_texts: Sequence[str],
    train_labels: Sequence[str],
    test_texts: Sequence[str],
    test_labels: Sequence[str],
    seed: int = 0,
    cfg: TfidfConfig | None = None,
) -> dict[str, Any]:
    """Train on one split, evaluate on another: accuracy, C, CV score, feature count, timings."""

    m = train_tfidf(train_texts, train_labels, seed, cfg)
    t0 = time.perf_counter()
    pred = m.predict(test_texts)
    seconds = time.perf_counter() - t0
    unknown = sorted(set(test_labels) - set(m.labels))
    if unknown:
        raise DataError(
            f"test label {unknown[0]!r} never occurs in the training rows",
            "use test data with the training data's labels",
        )
    c2i = {n: i for i, n in enumerate(m.labels)}
    out = metrics_from_predictions([c2i[x] for x in test_labels], [c2i[x] for x in pred], m.labels)
    out.update(
        c=m.c,
        cv_accuracy=m.cv_accuracy,
        cv_folds=m.folds,
        n_features=len(m.vectorizer.vocabulary_),
        fit_seconds=m.seconds,
        predict_seconds=seconds,
    )
    return out


__all__ = [
    "NB_CS",
    "NBLogisticRegression",
    "TfidfConfig",
    "TfidfModel",
    "nb_ratio",
    "train_tfidf",
    "tfidf_accuracy",
]
