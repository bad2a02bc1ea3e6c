"""Forward + backward (ULMFiT): a second network trained on reversed text from a backward base;
the model's network probabilities are the mean of both directions, then mixed with the head."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge_tl.errors import ConfigError, ModelError
from edge_tl.metrics import metrics_from_predictions
from edge_tl.store.models import Backward, TrainedModel
from edge_tl.train import recipe
from edge_tl.train.config import TrainConfig
from edge_tl.train.head import head_mix_metrics
from edge_tl.train.prepare import reverse_docs, stratified_split
from edge_tl.train.settings import Run


def check_backward_base(base: Any, forward: Any) -> None:
    """A backward base must share the forward base's shape and vocabulary."""
    if base.model_cfg != forward.model_cfg or list(base.vocab) != list(forward.vocab):
        raise ConfigError(
            f"backward base {base.name!r} has another shape or vocabulary than {forward.name!r}",
            "pass the backward base pretrained beside it (the shipped pair: default and "
            "default-bwd)",
        )


def finetune_backward_lm(
    texts: Sequence[str], base: Any, lm: recipe.LMResult, cfg: TrainConfig, run: Run, docs: list
) -> recipe.LMResult:
    """The backward base fine-tuned on the same texts reversed, with the forward LM's vocab."""
    return recipe.finetune_lm(
        texts, base, cfg, run=_quiet(run), docs=reverse_docs(docs), vocab=list(lm.vocab)
    )


def train_backward_classifier(
    texts: Sequence[str],
    labels: Sequence[str],
    lm: recipe.LMResult,
    cfg: TrainConfig,
    *,
    label_names: Sequence[str],
    run: Run,
    docs: list,
) -> TrainedModel:
    """The backward network on the same rows and validation split (same seed), reversed; no
    head (the forward model's serves both). Its validation rows are held out exactly when the
    forward network's are: without a head they would otherwise choose nothing, and the
    backward network would train on the rows that choose the mix."""
    y = [list(label_names).index(x) for x in labels]
    _, valid = stratified_split(y, cfg.valid_share(len(y)), cfg.seed)
    in_sample = cfg.train_on_unused_valid and cfg.valid_is_unused(len(valid))
    bcfg = dataclasses.replace(cfg, tfidf_head=False, train_on_unused_valid=in_sample)
    return recipe.train_classifier(
        texts,
        labels,
        lm,
        bcfg,
        label_names=label_names,
        run=_quiet(run),
        docs=reverse_docs(docs),
    )


def _quiet(run: Run) -> Run:
    # The backward pass is not checkpointed: a resumed run trains it again.
    return dataclasses.replace(run, save=None, resume=None)


def combine(fwd: TrainedModel, bwd: TrainedModel, cfg: TrainConfig) -> TrainedModel:
    """`fwd` with `bwd` as its backward network; its validation metrics, the head's share and
    stack chosen again on the mean of both networks' held-out probabilities."""
    if fwd.vocab != bwd.vocab or fwd.model_cfg != bwd.model_cfg or fwd.labels != bwd.labels:
        raise ModelError(
            "the backward network has another vocabulary, shape or labels than the forward one",
            "train both from the same data and the same base pair",
        )
    hf, hb = fwd.held_out, bwd.held_out
    if (
        hf is None
        or hb is None
        or list(hf["y"]) != list(hb["y"])
        or bool(hf.get("in_sample")) != bool(hb.get("in_sample"))
    ):
        raise ModelError(
            "the two directions were validated on different rows",
            "train both with the same seed and validation settings",
        )
    nf, nb = np.asarray(hf["neural"], np.float64), np.asarray(hb["neural"], np.float64)
    neural, y = (nf + nb) / 2, list(hf["y"])
    names = fwd.labels
    m = dataclasses.replace(fwd, backward=Backward(bwd.state_dict, bwd.base, bwd.base_sha256))
    metrics = dict(fwd.metrics)
    metrics.update(
        forward_network_accuracy=_acc(nf, y),
        backward_network_accuracy=_acc(nb, y),
        backward_clas_seconds=bwd.metrics.get("clas_seconds"),
        backward_lm_seconds=bwd.metrics.get("lm_seconds"),
        backward_lm_perplexity=bwd.metrics.get("lm_perplexity"),
    )
    # a copy: the forward model keeps its own mix (compare scores it beside the pair's)
    head = None if fwd.tfidf_head is None else dataclasses.replace(fwd.tfidf_head)
    m.tfidf_head = head
    if head is None:
        metrics.update(metrics_from_predictions(y, neural.argmax(1).tolist(), names))
    else:
        how = recipe.choose_mix(head, neural, hf["head"], y, cfg, hf["cross_fitted"])
        metrics.update(head_mix_metrics(head, neural, hf["head"], y, names))
        if how is not None:
            metrics["tfidf_weight_chosen_by"] = how
    metrics["neural_accuracy"] = _acc(neural, y)
    m.metrics = metrics
    m.held_out = {**hf, "neural": neural.tolist()}
    return m


def _acc(p: Any, y: Sequence[int]) -> float:
    return float((np.asarray(p).argmax(1) == np.asarray(y)).mean())


__all__ = [
    "check_backward_base",
    "combine",
    "finetune_backward_lm",
    "train_backward_classifier",
]
