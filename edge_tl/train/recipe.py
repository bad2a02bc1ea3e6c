"""The ULMFiT recipe on fastai's Learner: LM fine-tuning, then a classifier with gradual
unfreezing, discriminative learning rates and one-cycle schedules; resumable, encrypted."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from fastai.text.learner import match_embeds
from fastai.text.models.awdlstm import awd_lstm_clas_split, awd_lstm_lm_split
from fastai.torch_core import set_seed

from edge_tl.awd_lstm import build_classifier, build_lm
from edge_tl.config import CLAS_DROPOUTS, LM_DROPOUTS, ModelConfig
from edge_tl.errors import ConfigError
from edge_tl.metrics import argmax, metrics_from_predictions
from edge_tl.store.checkpoints import capture_rng
from edge_tl.store.models import TrainedModel
from edge_tl.tfidf_head import TfidfHead, head_proba
from edge_tl.train import engine as fastcpu
from edge_tl.train.baseline import TfidfConfig, train_tfidf
from edge_tl.train.config import TrainConfig, config_dict
from edge_tl.train.evaluate import predict_proba_ids
from edge_tl.train.fit import (
    fit_stage,
    learner,
    new_best,
    split_best,
    train_head_on_features,
)
from edge_tl.train.head import (
    choose_weight,
    fit_stack,
    head_mix_metrics,
    head_of,
    out_of_fold_proba,
)
from edge_tl.train.prepare import build_vocab_for, check_labels, stratified_split
from edge_tl.train.settings import Run, classifier_dtype


@dataclass
class LMResult:
    """A fine-tuned language model: its vocab, shape, encoder weights and measured speed."""

    vocab: list[str]
    model_cfg: ModelConfig
    encoder_state: dict[str, Any]  # AWD_LSTM state (keys without the "0." prefix)
    base: str | None = None
    base_sha256: str | None = None
    tokens: int = 0
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        """Training tokens per second of wall time (validation included)."""
        return self.tokens / self.seconds if self.seconds else 0.0


# ---------------------------------------------------------------- runtime


# ---------------------------------------------------------------- language model


def finetune_lm(
    texts: Sequence[str],
    base: Any,
    cfg: TrainConfig,
    *,
    run: Run | None = None,
    docs: list[list[str]] | None = None,
    vocab: list[str] | None = None,
) -> LMResult:
    """Fine-tune `base` (a bundle.Base, or None for a from-scratch LM) on `texts`."""

    run = run or Run()
    docs = docs if docs is not None else fastcpu.tokenize(texts, cfg.workers)
    if vocab is None:
        vocab = list(build_vocab_for(docs, cfg))
    shape = _shape(base, cfg)
    mcfg = dataclasses.replace(shape, vocab_size=len(vocab))
    set_seed(cfg.seed)
    model = build_lm(mcfg, LM_DROPOUTS, cfg.lm_drop_mult)
    if base is not None:
        wgts = match_embeds(dict(base.state_dict), list(base.vocab), vocab)
        model.load_state_dict(wgts)
    start = run.resume if run.resume is not None and run.resume.position.phase == "lm" else None
    if start is not None:
        model.load_state_dict(start.model_state)
    ids = fastcpu.numericalize(docs, vocab)
    g = torch.Generator().manual_seed(cfg.seed)
    perm = torch.randperm(len(ids), generator=g).tolist()
    n_valid = max(1, int(len(ids) * cfg.lm_valid_pct)) if len(ids) > 1 else 0
    valid = [ids[i] for i in perm[:n_valid]] or ids[:1]
    train = [ids[i] for i in perm[n_valid:]] or ids
    bs = max(1, min(run.lm_bs, sum(len(t) for t in train) // (cfg.bptt + 1)))
    dls = fastcpu.dls(
        fastcpu.lm_loader(train, bs, cfg.bptt, True, run.device),
        fastcpu.lm_loader(valid, bs, cfg.bptt, False, run.device),
        run.device,
    )
    learn = learner(dls, model, run, True, cfg, awd_lstm_lm_split)
    learn._ckpt_minutes, learn._vocab, learn._labels = cfg.checkpoint_minutes, vocab, []
    n_tokens = len(dls.train) * bs * cfg.bptt
    t0 = time.perf_counter()
    stages = [(cfg.lm_frozen_epochs, cfg.lm_lr, -1), (cfg.lm_epochs, cfg.lm_lr_unfrozen, None)]
    done = 0
    for k, (n_epoch, lr, freeze) in enumerate(stages):
        if n_epoch == 0 or (start is not None and start.position.stage > k):
            continue
        learn.freeze_to(freeze) if freeze is not None else learn.unfreeze()
        if start is not None and start.opt_state is not None and start.position.stage == k:
            learn.opt.load_state_dict(start.opt_state)
        # No backward through the frozen LSTMs: their input is cut from the graph, so the tied
        # embedding learns through the decoder alone in this stage.
        cut = (
            model[0].encoder_dp.register_forward_hook(lambda _m, _i, out: out.detach())
            if freeze is not None and base is not None and not cfg.lm_frozen_through_rnn
            else None
        )
        try:
            fit_stage(learn, run, "lm", k, n_epoch, lr, start)
        finally:
            if cut is not None:
                cut.remove()
        done += n_epoch - (start.position.epoch if start and start.position.stage == k else 0)
        start = None if start is not None and start.position.stage <= k else start
    seconds = time.perf_counter() - t0
    vals = learn.recorder.__dict__.get("values")  # absent when no epoch ran
    loss = float(vals[-1][1]) if vals else float("nan")
    encoder = {
        k[2:]: v.detach().clone() for k, v in model.state_dict().items() if k.startswith("0.")
    }
    return LMResult(
        vocab=vocab,
        model_cfg=mcfg,
        encoder_state=encoder,
        base=getattr(base, "name", None),
        base_sha256=_base_sha(base),
        tokens=n_tokens * done,
        seconds=seconds,
        metrics={
            "lm_valid_loss": loss,
            "lm_perplexity": math.exp(min(loss, 50.0)),
            "lm_epochs_run": done,
        },
    )


def _shape(base: Any, cfg: TrainConfig) -> ModelConfig:
    if base is not None:
        return base.model_cfg
    if cfg.arch is not None:
        return cfg.arch
    raise ConfigError(
        "a from-scratch run needs a model shape",
        "pass a base (its shape is used) or set `arch` in the train config",
    )


def _base_sha(base: Any) -> str | None:
    """The sha256 of the base's bundle file, as `base info` shows it (None if unknown)."""
    if getattr(base, "sha256", None):
        return base.sha256
    m = getattr(base, "manifest", None) or {}
    return m.get("sha256") or m.get("weights_sha256") if isinstance(m, dict) else None


# ---------------------------------------------------------------- classifier


@dataclass
class _Rows:
    """The classifier's training and validation rows: texts, tokens and label ids."""

    texts: list[str]
    docs: list[list[str]]
    y: list[int]
    v_texts: list[str]
    v_docs: list[list[str]]
    v_y: list[int]
    in_sample: bool = False  # the validation rows are also the last training rows


def train_classifier(
    texts: Sequence[str],
    labels: Sequence[str],
    lm: LMResult | None,
    cfg: TrainConfig,
    *,
    valid: tuple[Sequence[str], Sequence[str]] | None = None,
    scratch: bool = False,
    label_names: Sequence[str] | None = None,
    run: Run | None = None,
    name: str = "model",
    docs: list[list[str]] | None = None,
) -> TrainedModel:
    """Gradual unfreezing (cfg.stages), one-cycle, discriminative lrs; returns the model."""
    run = run or Run()
    names = list(label_names) if label_names else check_labels(labels, cfg.valid_pct)
    rows = _split_rows(texts, labels, valid, names, cfg, docs)
    resume = run.resume if run.resume is not None and run.resume.position.phase == "clas" else None
    # ULMFiT's small lrs for lower layers and later stages protect pretrained features; on a
    # random-init encoder (no base; an LM trained only on this data) they keep the embeddings
    # and first layers at ~1e-5 and the classifier stays at chance. So does CPU bf16 autocast.
    pretrained = lm is not None and lm.base is not None
    dtype = classifier_dtype(cfg, run, pretrained)
    if dtype != run.dtype:
        run.log(
            f"classifier in {dtype}: {run.dtype} autocast keeps a random-init encoder at "
            "chance (pass --dtype to force it)"
        )
        run = dataclasses.replace(run, dtype=dtype)
    model, vocab, mcfg = _new_classifier(lm, resume, rows.docs, len(names), cfg)
    ids, v_ids = fastcpu.numericalize(rows.docs, vocab), fastcpu.numericalize(rows.v_docs, vocab)
    dls = fastcpu.dls(
        fastcpu.clas_loader(ids, rows.y, run.bs, cfg.bptt, True, run.device),
        fastcpu.clas_loader(v_ids, rows.v_y, run.bs, cfg.bptt, False, run.device),
        run.device,
    )
    learn = learner(dls, model, run, False, cfg, awd_lstm_clas_split)
    learn._ckpt_minutes, learn._vocab, learn._labels = cfg.checkpoint_minutes, vocab, names
    # the best epoch so far, carried over from the checkpoint on resume
    learn._best = (
        None
        if not cfg.best_epoch
        else (split_best(resume.model_state)[1] if resume is not None else new_best())
    )
    t_all = time.perf_counter()
    timings = _fit_stages(learn, model, ids, rows, v_ids, mcfg, cfg, run, resume, pretrained)
    seconds = time.perf_counter() - t_all
    best = _keep_best(model, learn._best)
    head, metrics, held_out = _validation_metrics(model, rows, v_ids, names, cfg, run)
    if best is not None:
        metrics["best_epoch"] = best
    tokens = sum(len(t) for t in ids) * sum(cfg.stages[resume.position.stage if resume else 0 :])
    metrics.update(
        clas_seconds=seconds,
        clas_tokens=tokens,
        clas_tokens_per_s=tokens / seconds if seconds else 0.0,
        stages=timings,
        train_rows=len(ids),
        valid_rows=len(v_ids),
        dtype=run.dtype,
        device=run.device,
    )
    if lm is not None:
        metrics.update(lm.metrics, lm_tokens_per_s=lm.tokens_per_s, lm_seconds=lm.seconds)
    state = {
        k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).clone()
        for k, v in model.state_dict().items()
    }
    return TrainedModel(
        name=name,
        model_cfg=mcfg,
        vocab=list(vocab),
        labels=names,
        state_dict=state,
        lin_ftrs=list(cfg.lin_ftrs),
        train_config=config_dict(cfg),
        metrics=metrics,
        base=None if lm is None else lm.base,
        base_sha256=None if lm is None else lm.base_sha256,
        tfidf_head=head,
        held_out=held_out,
    )


def _split_rows(
    texts: Sequence[str],
    labels: Sequence[str],
    valid: tuple[Sequence[str], Sequence[str]] | None,
    names: list[str],
    cfg: TrainConfig,
    docs: list[list[str]] | None,
) -> _Rows:
    """Training and validation rows: the given validation set, or a stratified split."""
    c2i = {n: i for i, n in enumerate(names)}
    docs = docs if docs is not None else fastcpu.tokenize(texts, cfg.workers)
    y = [c2i[x] for x in labels]
    if valid is not None:
        v_docs = fastcpu.tokenize(valid[0], cfg.workers)
        return _Rows(list(texts), docs, y, list(valid[0]), v_docs, [c2i[x] for x in valid[1]])
    tr, va = stratified_split(y, cfg.valid_share(len(y)), cfg.seed)
    in_sample = cfg.train_on_unused_valid and cfg.valid_is_unused(len(va))
    if in_sample:  # nothing is chosen on them: the network learns from them too (at the end)
        tr = tr + va
    return _Rows(
        [texts[i] for i in tr],
        [docs[i] for i in tr],
        [y[i] for i in tr],
        [texts[i] for i in va],
        [docs[i] for i in va],
        [y[i] for i in va],
        in_sample,
    )


def _new_classifier(
    lm: LMResult | None, resume: Any, docs: list[list[str]], n_class: int, cfg: TrainConfig
) -> tuple[Any, list[str], ModelConfig]:
    """The classifier with the LM's encoder (or the checkpoint's weights); vocab and shape."""
    if resume is not None:
        vocab = list(resume.vocab)
        shape = lm.model_cfg if lm is not None else _shape(None, cfg)
        mcfg = dataclasses.replace(shape, vocab_size=len(vocab))
    elif lm is not None:
        vocab, mcfg = lm.vocab, lm.model_cfg
    else:
        vocab = build_vocab_for(docs, cfg)
        mcfg = dataclasses.replace(_shape(None, cfg), vocab_size=len(vocab))
    set_seed(cfg.seed)
    model = build_classifier(
        mcfg, n_class, CLAS_DROPOUTS, cfg.clas_drop_mult, cfg.bptt, cfg.max_len, list(cfg.lin_ftrs)
    )
    if lm is not None and resume is None:
        model[0].module.load_state_dict(lm.encoder_state)
    if resume is not None:
        model.load_state_dict(split_best(resume.model_state)[0])
    return model, vocab, mcfg


def _keep_best(model: Any, best: dict[str, Any] | None) -> dict[str, Any] | None:
    """Put the best epoch's weights back into `model`; where it was (None if none was kept)."""
    if best is None or best["state"] is None:
        return None
    model.load_state_dict(best["state"])
    return {"stage": best["stage"], "epoch": best["epoch"], "valid_loss": best["loss"]}


def _fit_stages(
    learn: Any,
    model: Any,
    ids: list,
    rows: _Rows,
    v_ids: list,
    mcfg: ModelConfig,
    cfg: TrainConfig,
    run: Run,
    resume: Any,
    pretrained: bool,
) -> list[dict[str, Any]]:
    """Each classifier stage in turn (from the checkpoint's on resume); their timings."""
    timings: list[dict[str, Any]] = []
    first = resume.position.stage if resume is not None else 0
    for k, n_epoch in enumerate(cfg.stages):
        if k < first or n_epoch == 0:
            continue
        t0 = time.perf_counter()
        lr = cfg.stage_lr(k, pretrained)
        if k == 0 and cfg.cache_head_features and resume is None:
            train_head_on_features(
                learn, model, ids, rows.y, v_ids, rows.v_y, n_epoch, lr, cfg, run
            )
        else:
            if k < 3 and k + 1 < mcfg.n_layers + 2:  # groups: embedding, each RNN, head
                learn.freeze_to(-(k + 1))
            else:
                learn.unfreeze()
            if resume is not None and resume.opt_state is not None and k == first:
                learn.opt.load_state_dict(resume.opt_state)
            disc = k > 0 and cfg.use_discriminative(pretrained)
            lr_arg = slice(lr / cfg.lr_div**4, lr) if disc else lr
            fit_stage(learn, run, "clas", k, n_epoch, lr_arg, resume if k == first else None)
        timings.append({"stage": k, "epochs": n_epoch, "seconds": time.perf_counter() - t0})
        if k == 0 and cfg.cache_head_features and run.save is not None:
            # with the RNG state, so the resumed next stage draws the same batches and masks
            rng = {**capture_rng(), "dl": learn.dls.train.rng.getstate()}
            run.save("clas", 1, 0, 0, learn, rng, rng)
    return timings


def _validation_metrics(
    model: Any, rows: _Rows, v_ids: list, names: list[str], cfg: TrainConfig, run: Run
) -> tuple[TfidfHead | None, dict[str, Any], dict[str, Any] | None]:
    """The TF-IDF head, the metrics on the validation rows and those rows' probabilities. The
    head is fitted on every labelled row (the network holds the validation rows out; the head
    needs no early stopping), so its validation probabilities are cross-fitted: each from a fit
    on the other folds."""
    if not cfg.tfidf_head:
        neural = predict_proba_ids(model, v_ids, run.bs, cfg.bptt, run.dtype, run.device)
        pred = [argmax(p) for p in neural]
        # the network's held-out probabilities: a backward network is averaged on them
        held = {"neural": neural, "y": list(rows.v_y), "in_sample": rows.in_sample}
        return None, metrics_from_predictions(rows.v_y, pred, names), held
    t0 = time.perf_counter()
    # every labelled row once, the validation rows last
    texts = rows.texts if rows.in_sample else rows.texts + rows.v_texts
    labels = [names[i] for i in (rows.y if rows.in_sample else rows.y + rows.v_y)]
    m = train_tfidf(texts, labels, cfg.seed, TfidfConfig(nb=cfg.tfidf_nb))
    oof = out_of_fold_proba(m, texts, labels, names, cfg.seed)
    neural = predict_proba_ids(model, v_ids, run.bs, cfg.bptt, run.dtype, run.device)
    head, how = head_of(m, names, cfg.tfidf_weight), "fixed"
    if oof is None:  # a label too rare to cross-fit: the head's own (in-sample) probabilities
        held_out = head_proba(head, rows.v_texts)
        how = "fallback: a label has fewer than 2 rows" if cfg.tfidf_weight_auto else how
    else:
        held_out = oof[len(texts) - len(rows.v_texts) :]
    how = choose_mix(head, neural, held_out, rows.v_y, cfg, oof is not None) or how
    metrics = head_mix_metrics(head, neural, held_out, rows.v_y, names)
    metrics.update(
        tfidf_c=head.c,
        tfidf_features=len(head.features),
        tfidf_weight_chosen_by=how,
        tfidf_seconds=time.perf_counter() - t0,
    )
    if rows.in_sample:
        metrics["valid_in_sample"] = True
    held = {"neural": neural, "head": held_out, "y": list(rows.v_y), "texts": texts}
    held.update(labels=labels, cross_fitted=oof is not None, in_sample=rows.in_sample)
    return head, metrics, held


def choose_mix(
    head: TfidfHead, neural: Any, held_out: Any, v_y: Sequence[int], cfg: TrainConfig, ok: bool
) -> str | None:
    """Set the head's share (and stack) from the validation rows by train's rule; how it was
    chosen, or None when it keeps its configured share. `ok`: the head's probabilities there
    are cross-fitted."""
    if not (cfg.tfidf_weight_auto and ok):
        return None
    min_rows = cfg.tfidf_weight_min_rows
    head.weight, how = choose_weight(neural, held_out, v_y, min_rows, cfg.tfidf_weight)
    head.stack = None
    if cfg.tfidf_stack and len(v_y) >= cfg.tfidf_weight_min_rows:
        head.stack = fit_stack(neural, held_out, v_y, cfg.seed)
    return how


__all__ = [
    "LMResult",
    "choose_mix",
    "finetune_lm",
    "train_classifier",
]
