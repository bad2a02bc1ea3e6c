"""The `train` arm of a comparison: what `edge-tl train` ships, and the mixing levers around it.

A `train` unit trains the way `edge-tl train` does (its own validation split, the TF-IDF head on
every labelled row, the mix chosen by train's rule: stacked or at a share) and scores on the
test rows the network alone, the head alone and their mix: what an export predicts. The same
network then answers, at the cost of a few seconds, what other choices would have given: the
chosen share unstacked, the fixed share 0.5, the share chosen without train's minimum of
held-out rows, a stacked logistic regression on the two models' log-odds on any number of
held-out rows, an NB-LR head, and every share of the test sweep (a diagnosis, never a choice).
The test rows are also scored cut to their first two sentences: a lever that helps long reviews
and hurts short texts is not kept. Nothing per row is written to disk (test rows may be
private).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edge_tl.metrics import metrics_from_predictions
from edge_tl.store.models import TrainedModel
from edge_tl.tfidf_head import TfidfHead, head_proba
from edge_tl.train.baseline import TfidfConfig, train_tfidf
from edge_tl.train.config import TrainConfig
from edge_tl.train.head import (
    WEIGHT_GRID,
    choose_weight,
    fit_stack,
    head_of,
    mix_log_losses,
    out_of_fold_proba,
    weight_of_losses,
)

ARM = "train"
# Other heads scored in the same unit: NB-LR, and word 1-3-grams (the export format allows 3).
HEAD_VARIANTS = {"nb_head": TfidfConfig(nb=True), "trigram_head": TfidfConfig(ngram_max=3)}
SENTENCE = re.compile(r"(?<=[.!?])\s+")


def first_sentences(text: str, n: int = 2) -> str:
    """The first `n` sentences of a text, `<br />` tags dropped (the short-text check)."""
    return " ".join(SENTENCE.split(text.replace("<br />", " ").strip())[:n])


def _acc(p: Any, y: Any) -> float:
    return float((np.asarray(p).argmax(1) == np.asarray(y)).mean())


def _mix(w: float, head: Any, neural: Any) -> Any:
    return w * np.asarray(head) + (1 - w) * np.asarray(neural)


def stacker(neural_v: Any, head_v: Any, y_v: Sequence[int], seed: int) -> Callable | None:
    """Stacking as `train` fits it (train.head.fit_stack) on any number of held-out rows: a
    function (neural, head) -> mixed probabilities, or None when the rows miss a label."""
    stack = fit_stack(neural_v, head_v, y_v, seed)
    return None if stack is None else stack.proba


def _share(head: TfidfHead) -> TfidfHead:
    """The same head mixed at its chosen share, unstacked."""
    return head.with_weight(head.weight)


def shipped_metrics(
    m: TrainedModel,
    cfg: TrainConfig,
    neural_test: Any,
    test_texts: Sequence[str],
    test_y: Sequence[int],
    names: Sequence[str],
    network_of: Callable[[list[str]], Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The unit's shipped metrics (its mix on the test rows) and what it records beside them:
    network, head, share, levers, short texts. `network_of(texts)`: the network's probabilities."""
    head, held = m.tfidf_head, m.held_out
    if head is None or held is None:
        raise ValueError("a `train` unit needs the TF-IDF head (tfidf_head on)")
    y = np.asarray(test_y)
    rules = _held_out_rules(held, cfg.seed)
    head_test = head_proba(head, test_texts)
    w = head.weight
    r = metrics_from_predictions(
        list(test_y), head.mix(neural_test, head_test).argmax(1).tolist(), list(names)
    )
    extra: dict[str, Any] = {
        "network_accuracy": _acc(neural_test, y),
        "head_accuracy": _acc(head_test, y),
        "tfidf_weight": w,
        "tfidf_mix": "share" if head.stack is None else "stacked",
        "tfidf_weight_chosen_by": m.metrics.get("tfidf_weight_chosen_by"),
        "tfidf_c": head.c,
        "valid_rows": len(held["y"]),
        "levers": {
            "share": _acc(_share(head).mix(neural_test, head_test), y),
            **_levers(held, cfg, rules, neural_test, head_test, test_texts, y, names),
        },
        "test_sweep": {
            f"{g:.2f}": _acc(_mix(float(g), head_test, neural_test), y) for g in WEIGHT_GRID
        },
    }
    short = [first_sentences(t) for t in test_texts]
    neural_s, head_s = network_of(short), head_proba(head, short)
    w_any, st = rules
    extra["short"] = {
        "network_accuracy": _acc(neural_s, y),
        "head_accuracy": _acc(head_s, y),
        "accuracy": _acc(head.mix(neural_s, head_s), y),
        "share": _acc(_share(head).mix(neural_s, head_s), y),
        "fixed_0.5": _acc(_mix(0.5, head_s, neural_s), y),
        "weight_any_rows": None if w_any is None else _acc(_mix(w_any, head_s, neural_s), y),
        "stacked": None if st is None else _acc(st(neural_s, head_s), y),
    }
    return r, extra


def forward_only_metrics(
    fwd: TrainedModel,
    test_texts: Sequence[str],
    test_y: Sequence[int],
    network_of: Callable[[list[str]], Any],
) -> dict[str, Any]:
    """What the forward network alone, with its own mix, gives on the test rows and on their
    first two sentences: the yardstick of forward + backward, on the same forward network."""
    head, y = fwd.tfidf_head, np.asarray(test_y)
    out: dict[str, Any] = {"tfidf_mix": "share" if head.stack is None else "stacked"}
    for key, texts in (
        ("full", list(test_texts)),
        ("short", [first_sentences(t) for t in test_texts]),
    ):
        neural, head_p = network_of(texts), head_proba(head, texts)
        out[key] = {
            "network_accuracy": _acc(neural, y),
            "accuracy": _acc(head.mix(neural, head_p), y),
        }
    return out


def _held_out_rules(held: dict[str, Any], seed: int) -> tuple[float | None, Callable | None]:
    """The share by log loss on any number of held-out rows, and the stacker fitted there
    (None, None when the network trained on those rows: they choose nothing)."""
    if held.get("in_sample"):
        return None, None
    nv, hv, yv = held["neural"], held["head"], held["y"]
    st = stacker(nv, hv, yv, seed) if held["cross_fitted"] else None
    return weight_of_losses(mix_log_losses(nv, hv, yv)), st


def _levers(
    held: dict[str, Any],
    cfg: TrainConfig,
    rules: tuple[float | None, Callable | None],
    neural_test: Any,
    head_test: Any,
    test_texts: Sequence[str],
    y: Any,
    names: Sequence[str],
) -> dict[str, Any]:
    """Test accuracy of the other mixing choices on the same network and held-out rows."""
    out: dict[str, Any] = {"fixed_0.5": _acc(_mix(0.5, head_test, neural_test), y)}
    for key, tcfg in HEAD_VARIANTS.items():
        out[key] = _other_head(held, cfg, tcfg, held["neural"], neural_test, test_texts, y, names)
    w_any, st = rules
    out["weight_any_rows"] = (
        None
        if w_any is None
        else {"weight": w_any, "accuracy": _acc(_mix(w_any, head_test, neural_test), y)}
    )
    out["stacked"] = None if st is None else _acc(st(neural_test, head_test), y)
    return out


def _other_head(
    held: dict[str, Any],
    cfg: TrainConfig,
    tcfg: TfidfConfig,
    nv: Any,
    neural_test: Any,
    test_texts: Sequence[str],
    y: Any,
    names: Sequence[str],
) -> dict[str, Any]:
    """Another head fitted on the same rows, its share chosen by train's rule on its own
    cross-fitted held-out probabilities: its test accuracy alone and mixed."""
    yv = held["y"]
    fit = train_tfidf(held["texts"], held["labels"], cfg.seed, tcfg)
    test = head_proba(head_of(fit, names), test_texts)
    oof = out_of_fold_proba(fit, held["texts"], held["labels"], names, cfg.seed)
    w = cfg.tfidf_weight
    if oof is not None:
        w = choose_weight(nv, oof[len(oof) - len(yv) :], yv, cfg.tfidf_weight_min_rows, w)[0]
    mixed = _acc(_mix(w, test, neural_test), y)
    return {"head_accuracy": _acc(test, y), "weight": w, "accuracy": mixed}


__all__ = [
    "ARM",
    "HEAD_VARIANTS",
    "first_sentences",
    "forward_only_metrics",
    "shipped_metrics",
    "stacker",
]
