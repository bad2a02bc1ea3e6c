"""The TF-IDF + logistic regression baseline: learns a signal, picks C by CV, rejects bad input."""

from __future__ import annotations

import pytest
from tinydata import keyword_texts

from edge_tl.errors import DataError
from edge_tl.train.baseline import TfidfConfig, tfidf_accuracy, train_tfidf

POS = ["good", "great", "superb"]
NEG = ["bad", "awful", "dull"]
FILLER = ["the", "movie", "plot", "actor", "scene", "film", "story"]


def _data(n: int, seed: int, noise: float = 0.0) -> tuple[list[str], list[str]]:
    return keyword_texts(n, seed, noise, POS, NEG, FILLER)


def test_learns_the_signal_and_reports_metrics():
    x, y = _data(60, 0)
    tx, ty = _data(40, 1)
    r = tfidf_accuracy(x, y, tx, ty, seed=0)
    assert r["accuracy"] == 1.0 and r["n"] == 40 and r["labels"] == ["neg", "pos"]
    assert r["c"] in TfidfConfig().cs and r["cv_folds"] == 5 and r["cv_accuracy"] > 0.9
    assert r["n_features"] > len(FILLER) + 6  # unigrams and bigrams
    assert r["confusion_matrix"] == [[20, 0], [0, 20]]


def test_c_is_chosen_by_cross_validation_and_is_deterministic():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    x, y = _data(80, 2, noise=0.3)
    cfg = TfidfConfig(cs=(1e-3, 0.1, 10.0, 1e4))
    a, b = train_tfidf(x, y, 3, cfg), train_tfidf(x, y, 3, cfg)
    xv = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit_transform(x)
    cv = StratifiedKFold(5, shuffle=True, random_state=3)
    scores = [
        cross_val_score(LogisticRegression(C=c, solver="liblinear"), xv, y, cv=cv).mean()
        for c in cfg.cs
    ]
    assert len(set(scores)) > 1  # the grid matters on this data
    assert a.c == cfg.cs[scores.index(max(scores))] and a.cv_accuracy == pytest.approx(max(scores))
    assert (b.c, b.cv_accuracy) == (a.c, a.cv_accuracy)
    assert a.predict(x[:10]) == b.predict(x[:10])


def test_bigrams_matter():
    # Same words in both classes; only their order (a bigram) tells them apart.
    texts = ["not good but bad"] * 10 + ["not bad but good"] * 10
    labels = ["neg"] * 10 + ["pos"] * 10
    r = tfidf_accuracy(texts, labels, texts, labels)
    assert r["accuracy"] == 1.0
    r1 = tfidf_accuracy(texts, labels, texts, labels, cfg=TfidfConfig(ngram_max=1))
    assert r1["accuracy"] == 0.5


def test_too_few_rows_for_cv_still_fits():
    m = train_tfidf(["good film", "bad film", "great film"], ["pos", "neg", "pos"])
    assert m.folds == 0 and m.c == TfidfConfig().cs[len(TfidfConfig().cs) // 2]
    assert m.predict(["good"]) == ["pos"]


def test_bad_input():
    with pytest.raises(DataError, match="fewer than two labels"):
        train_tfidf(["a b", "c d"], ["pos", "pos"])
    with pytest.raises(DataError, match="2 texts but 1 labels"):
        train_tfidf(["a b", "c d"], ["pos"])
    with pytest.raises(DataError, match="test label 'meh' never occurs"):
        tfidf_accuracy(["good", "bad"] * 3, ["pos", "neg"] * 3, ["x"], ["meh"])
