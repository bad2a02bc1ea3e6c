"""The accuracy levers: the NB-LR head, the mix weight chosen on held-out rows, the best epoch
and the validation split's size."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression
from tinydata import keyword_texts

from edge_tl.store.checkpoints import Checkpoint, Position, load_checkpoint, save_checkpoint
from edge_tl.store.keys import init_identity
from edge_tl.tfidf_head import head_proba
from edge_tl.train.baseline import NBLogisticRegression, TfidfConfig, nb_ratio, train_tfidf
from edge_tl.train.config import TrainConfig
from edge_tl.train.fit import KeepBest, _with_best, new_best, split_best
from edge_tl.train.head import choose_weight, head_of, out_of_fold_proba


def test_nb_ratio_known_answer() -> None:
    """Feature 0 in both positive rows, feature 1 in the negative one, feature 2 everywhere."""
    x = sp.csr_matrix(np.array([[1.0, 0, 2], [3, 0, 1], [0, 1, 1]]))
    r = nb_ratio(x, np.array([True, True, False]), alpha=1.0)
    p, q = np.array([3.0, 1, 3]), np.array([1.0, 2, 2])
    np.testing.assert_allclose(r, np.log((p / p.sum()) / (q / q.sum())), rtol=1e-6)


@pytest.mark.parametrize("n_class", [2, 3])
def test_nb_ratio_is_folded_into_the_weights(n_class: int) -> None:
    """w . (r * x) = (w * r) . x: the folded model scores as an LR fitted on scaled features."""
    texts, labels = keyword_texts(80, 3, noise=0.2)
    if n_class == 3:
        labels = [lab if i % 3 else "meh" for i, lab in enumerate(labels)]
    m = train_tfidf(texts, labels, 0, TfidfConfig(nb=True, cs=(3.0,)))
    x = m.vectorizer.transform(texts)
    y = np.array([m.labels.index(v) for v in labels])
    k = n_class - 1  # the last label's one-vs-rest row (the only one for two labels)
    r = nb_ratio(x, y == k)
    lr = LogisticRegression(C=3.0, solver="liblinear", random_state=0).fit(x.multiply(r), y == k)
    want = lr.decision_function(x.multiply(r))
    got = m.classifier.decision_function(x)
    np.testing.assert_allclose(got if n_class == 2 else got[:, k], want, atol=1e-5)


@pytest.mark.parametrize("n_class", [2, 3])
def test_nb_head_matches_sklearn_and_keeps_the_head_format(n_class: int) -> None:
    """The exported head's reference (pure Python) gives NB-LR's probabilities, and restricting
    it for the private export leaves the rest of the weights as they were."""
    texts, labels = keyword_texts(80, 1, noise=0.2)
    if n_class == 3:
        labels = [lab if i % 3 else "meh" for i, lab in enumerate(labels)]
    m = train_tfidf(texts, labels, 0, TfidfConfig(nb=True))
    assert isinstance(m.classifier, NBLogisticRegression)
    names = sorted(set(labels), reverse=True)
    head = head_of(m, names)
    test, _ = keyword_texts(30, seed=9, noise=0.3)
    want = np.array(m.predict_proba(test))[:, [m.labels.index(n) for n in names]]
    np.testing.assert_allclose(head_proba(head, test), want, atol=2e-6)
    small = head.restricted({f for f in head.features if " " not in f}, min_docs=3)
    assert 0 < len(small.features) < len(head.features)
    cols = [head.features.index(f) for f in small.features]
    np.testing.assert_array_equal(small.coef, head.coef[:, cols])


def test_out_of_fold_probabilities_never_see_their_own_row() -> None:
    """Each text holds one word of its own and a random label: a model fitted on the row
    remembers it, a cross-fitted one cannot (about chance)."""
    rng = np.random.default_rng(0)
    labels = [("neg", "pos")[int(v)] for v in rng.integers(0, 2, 200)]
    texts = [f"word{i}x filler" for i in range(200)]
    m = train_tfidf(texts, labels, 0, TfidfConfig(cs=(1000.0,)))
    names = ["neg", "pos"]
    gold = np.array([names.index(v) for v in labels])
    inside = np.asarray(m.predict_proba(texts)).argmax(1)
    oof = out_of_fold_proba(m, texts, labels, names, seed=0)
    assert oof.shape == (200, 2) and np.allclose(oof.sum(1), 1, atol=1e-5)
    assert (inside == gold).mean() == 1.0
    assert (oof.argmax(1) == gold).mean() < 0.65


def test_choose_weight_follows_the_better_part() -> None:
    y = np.array([0, 1] * 100)
    sure = np.eye(2)[y] * 0.9 + 0.05  # right and confident
    coin = np.full((200, 2), 0.5)
    assert choose_weight(coin, sure, y, 100, 0.5) == (1.0, "log loss on 200 held-out rows")
    assert choose_weight(sure, coin, y, 100, 0.5)[0] == 0.0
    wrong = np.eye(2)[1 - y] * 0.6 + 0.2  # mostly wrong, not sure: a little of it hurts
    w, _ = choose_weight(sure, wrong, y, 100, 0.5)
    assert w == 0.0
    w, how = choose_weight(coin, sure, y[:40], 100, 0.3)
    assert (w, how) == (0.3, "fallback: 40 held-out rows < 100")


@pytest.mark.parametrize(
    ("n", "share"),
    [(40, 0.2), (500, 0.2), (1000, 0.2), (1500, 200 / 1500), (2000, 0.1), (25000, 0.1)],
)
def test_validation_share(n: int, share: float) -> None:
    """At least valid_min_rows, never more than a fifth, never under valid_pct."""
    assert TrainConfig().valid_share(n) == pytest.approx(0.1)  # the default: valid_pct alone
    assert TrainConfig(valid_min_rows=200).valid_share(n) == pytest.approx(share)
    assert TrainConfig(valid_pct=0.3).valid_share(n) == pytest.approx(0.3)


def _fake_learner(model: torch.nn.Module) -> SimpleNamespace:
    return SimpleNamespace(model=model, opt=None, _vocab=["a"], _labels=["neg", "pos"])


def test_keep_best_copies_the_lowest_validation_loss_epoch() -> None:
    model = torch.nn.Linear(2, 2)
    learn = _fake_learner(model)
    best = new_best()
    cb = KeepBest(best, stage=3)
    cb.learn = learn
    states = []
    for epoch, loss in enumerate([0.6, 0.4, 0.5, float("nan")]):
        with torch.no_grad():
            model.weight.fill_(epoch)
        states.append(model.weight.clone())
        learn.epoch, learn.final_record = epoch, [0.1, loss, 0.9]
        cb.after_epoch()
    assert (best["loss"], best["stage"], best["epoch"]) == (0.4, 3, 1)
    assert torch.equal(best["state"]["weight"], states[1])
    assert not torch.equal(model.weight, states[1])  # a copy, not the live weights


def test_best_epoch_survives_a_checkpoint(edge_tl_home) -> None:
    """A resumed run can still go back to an epoch from before the interruption."""
    init_identity(None)
    model = torch.nn.Linear(2, 2)
    learn = _fake_learner(model)
    learn._best = {**new_best(), "loss": 0.25, "stage": 3, "epoch": 4}
    learn._best["state"] = {k: torch.full_like(v, 7.0) for k, v in model.state_dict().items()}
    saved = _with_best(learn)
    save_checkpoint(
        Checkpoint(
            "m",
            None,
            None,
            [],
            None,
            {},
            Position("clas", 3, 6, 0),
            ["a"],
            ["neg", "pos"],
            saved.model.state_dict(),
        )
    )
    plain, best = split_best(load_checkpoint("m").model_state)
    assert set(plain) == {"weight", "bias"} and torch.equal(plain["weight"], model.weight)
    assert (best["loss"], best["stage"], best["epoch"]) == (0.25, 3, 4)
    assert all(torch.equal(v, torch.full_like(v, 7.0)) for v in best["state"].values())
    assert split_best(model.state_dict())[1] == new_best()  # no best kept: nothing to split


def test_out_of_fold_needs_two_rows_of_every_label() -> None:
    texts, labels = keyword_texts(30, 0)
    labels[0] = "meh"  # one row only: no split holds it on both sides
    m = train_tfidf(texts, labels, 0, TfidfConfig(cs=(10.0,)))
    assert out_of_fold_proba(m, texts, labels, ["meh", "neg", "pos"]) is None
    labels[1] = "meh"
    assert out_of_fold_proba(m, texts, labels, ["meh", "neg", "pos"]).shape == (30, 3)


@pytest.mark.parametrize(
    ("settings", "n_valid", "unused"),
    [
        ({}, 50, True),  # the share falls back under 100 rows
        ({}, 100, False),  # 100 rows choose the share
        ({"best_epoch": True}, 50, False),  # they choose the epoch
        ({"tfidf_weight_auto": False}, 500, True),
        ({"tfidf_head": False}, 500, True),
        ({"tfidf_head": False, "best_epoch": True}, 500, False),
    ],
)
def test_valid_is_unused(settings: dict, n_valid: int, unused: bool) -> None:
    assert TrainConfig(**settings).valid_is_unused(n_valid) is unused


@pytest.mark.parametrize(("min_rows", "in_sample"), [(100, True), (10, False)])
def test_unused_validation_rows_train_the_network_too(min_rows: int, in_sample: bool) -> None:
    from edge_tl.train.recipe import _split_rows

    texts, labels = keyword_texts(200, 3, noise=0.2)
    cfg = TrainConfig(tfidf_weight_min_rows=min_rows)
    docs = [t.split() for t in texts]
    rows = _split_rows(texts, labels, None, sorted(set(labels)), cfg, docs)
    assert len(rows.v_texts) == 20 and rows.in_sample is in_sample
    if in_sample:  # every row trains, the validation rows last (the head counts each once)
        assert sorted(rows.texts) == sorted(texts)
        assert rows.texts[-20:] == rows.v_texts
    else:
        assert len(rows.texts) == 180 and not set(rows.texts) & set(rows.v_texts)
    off = _split_rows(
        texts, labels, None, sorted(set(labels)), TrainConfig(train_on_unused_valid=False), docs
    )
    assert len(off.texts) == 180 and not off.in_sample
