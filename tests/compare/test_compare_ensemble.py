"""The transfer + TF-IDF series of `compare`: mean of probabilities, known answers, and the
report rows it feeds."""

from __future__ import annotations

import pytest
from tinydata import keyword_texts

from edge_tl.compare import report
from edge_tl.compare.ensemble import ensemble_metrics, mean_of_probs
from edge_tl.train.baseline import tfidf_accuracy


def test_mean_of_probs_known_answer():
    a = [[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.5, 0.5]]
    b = [[0.2, 0.8], [0.45, 0.55], [0.9, 0.1], [0.5, 0.5]]
    # means: (0.55, 0.45) (0.425, 0.575) (0.6, 0.4) (0.5, 0.5) -> tie goes to the first class
    assert mean_of_probs(a, b) == [0, 1, 0, 0]
    assert mean_of_probs([[0.1, 0.2, 0.7]], [[0.6, 0.3, 0.1]]) == [2]  # 0.35, 0.25, 0.40
    with pytest.raises(ValueError):
        mean_of_probs(a, b[:2])


def test_uninformative_neural_model_leaves_tfidf_as_it_is():
    tr, trl = keyword_texts(80, 0, noise=0.3)
    te, tel = keyword_texts(60, 1, noise=0.3)
    names = ["neg", "pos"]
    gold = [names.index(x) for x in tel]
    alone = tfidf_accuracy(tr, trl, te, tel, seed=3)
    uniform = [[0.5, 0.5]] * len(te)
    got = ensemble_metrics(uniform, tr, trl, te, gold, names, seed=3)
    assert got["accuracy"] == pytest.approx(alone["accuracy"])
    assert got["tfidf_c"] == alone["c"]
    # a neural model that is sure and right carries the mean to every row
    sure = [[1.0, 0.0] if g == 0 else [0.0, 1.0] for g in gold]
    assert ensemble_metrics(sure, tr, trl, te, gold, names, seed=3)["accuracy"] == 1.0
    # columns follow `names`, not TF-IDF's own label order
    flipped = ensemble_metrics(
        [[p[1], p[0]] for p in sure], tr, trl, te, [1 - g for g in gold], ["pos", "neg"], seed=3
    )
    assert flipped["accuracy"] == 1.0


def test_report_shows_the_ensemble_series():
    runs = {}
    for seed, (acc, ens) in enumerate([(0.80, 0.85), (0.82, 0.87)]):
        runs[f"transfer/semi/500/{seed}"] = {
            "arm": "transfer",
            "protocol": "semi",
            "size": 500,
            "seed": seed,
            "accuracy": acc,
            "metrics": {"ensemble": {"accuracy": ens}},
        }
    runs["tfidf/none/500/0"] = {
        "arm": "tfidf",
        "protocol": "none",
        "size": 500,
        "seed": 0,
        "accuracy": 0.83,
    }
    cells = report.aggregate(runs)
    assert cells["transfer+tfidf/semi"][500].mean == pytest.approx(0.86)
    md = report.markdown_table({"runs": runs})
    assert "transfer (semi) + TF-IDF, mean of probabilities" in md.splitlines()[2]
    assert "| 500 | 0.810 ± 0.014 (2) | 0.830 ± 0.000 (1) | 0.860 ± 0.014 (2) |" in md
