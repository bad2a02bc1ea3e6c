"""The ULMFiT recipe on fastai's Learner: LM fine-tuning, then a classifier with gradual
unfreezing, discriminative learning rates and one-cycle schedules; resumable, encrypted."""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import CLAS_DROPOUTS, LM_DROPOUTS, ModelConfig
from .errors import ConfigError
from .models import TrainedModel

# Re-exported: edge_tl.train.NAME stays where callers and tests find these.
from .train_config import TrainConfig, config_dict, resolve_config
from .train_data import (
    build_vocab_for,
    check_labels,
    classifier_dtype,
    pick_dtype,
    stratified_split,
)
from .train_vault import train_from_vault


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


@dataclass
class Run:
    """Per-run plumbing: device, dtype, sizes, progress, checkpoint hooks and resume state."""

    device: str = "cpu"
    dtype: str = "fp32"
    bs: int = 64
    lm_bs: int = 64
    progress: bool = True
    save: Callable[..., None] | None = None  # save(phase, stage, epoch, batch, learn, extra)
    resume: Any = None  # a checkpoint.Checkpoint to continue from
    log: Callable[[str], None] = field(default=lambda s: print(s, file=sys.stderr))
    extra: dict[str, Any] = field(default_factory=dict)


def _learner(dls, model, run: Run, lm: bool, cfg: TrainConfig, splitter):
    """A fastai TextLearner with our callbacks, writing nothing (path under runs/)."""
    from fastai.losses import CrossEntropyLossFlat
    from fastai.metrics import accuracy
    from fastai.optimizer import Adam
    from fastai.text.learner import TextLearner

    from .fastcpu import Autocast  # also patches fit_one_cycle in
    from .home import subdir

    cbs = []
    if run.dtype in ("bf16", "fp16") and run.device == "cpu":
        cbs.append(Autocast("cpu", _torch_dtype(run.dtype)))
    elif run.dtype in ("bf16", "fp16"):
        from fastai.callback.fp16 import MixedPrecision

        cbs.append(MixedPrecision(amp_mode=run.dtype))
    learn = TextLearner(
        dls, model, loss_func=CrossEntropyLossFlat(), opt_func=Adam, splitter=splitter,
        metrics=[accuracy], path=subdir("runs"), model_dir=".", wd=cfg.wd, cbs=cbs,
    )  # fmt: skip
    if not run.progress:
        from fastai.callback.progress import ProgressCallback

        learn.remove_cb(ProgressCallback)
    if not run.progress:
        learn.logger = lambda *a, **k: None  # no epoch table when quiet
    return learn


def _torch_dtype(name: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}[name]


def _fit_stage(learn, run: Run, phase: str, stage: int, n_epoch: int, lr, start: Any) -> None:
    """fit_one_cycle for one stage, checkpointing each epoch and every N minutes; resumable."""
    from .checkpoint import capture_rng, restore_rng
    from .fastcpu import EveryEpochAndMinutes, SkipBatches

    epoch0 = batch0 = 0
    rng_start = rng_now = None
    if start is not None and (start.position.phase, start.position.stage) == (phase, stage):
        epoch0, batch0 = start.position.epoch, start.position.batch
        rng_start, rng_now = start.rng_epoch_start, start.rng_now
    if epoch0 >= n_epoch:
        return
    dl = learn.dls.train
    state: dict[str, Any] = {}

    def on_epoch_start(epoch: int) -> None:
        if rng_start and epoch == epoch0:
            restore_rng(rng_start)
            if "dl" in rng_start:
                dl.rng.setstate(_tuplify(rng_start["dl"]))
        state["rng"] = {**capture_rng(), "dl": dl.rng.getstate()}

    def save(epoch: int, batch: int, finished: bool) -> None:
        if run.save is None:
            return
        if finished:
            nxt = (stage, epoch + 1) if epoch + 1 < n_epoch else (stage + 1, 0)
            rng = {**capture_rng(), "dl": dl.rng.getstate()}
            run.save(phase, nxt[0], nxt[1], 0, learn, rng, rng)
        else:
            run.save(phase, stage, epoch, batch, learn, state["rng"], capture_rng())

    cbs = [EveryEpochAndMinutes(save, _minutes(learn), on_epoch_start)]
    if batch0 > 0:
        cbs.append(SkipBatches(batch0, on_done=lambda: rng_now and restore_rng(rng_now)))
    learn.fit_one_cycle(n_epoch, lr, moms=(0.8, 0.7, 0.8), cbs=cbs, start_epoch=epoch0)


def _minutes(learn) -> float:
    return getattr(learn, "_ckpt_minutes", 10.0)


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(o) for o in x) if isinstance(x, list) else x


# ---------------------------------------------------------------- language model


def finetune_lm(
    texts: Sequence[str], base: Any, cfg: TrainConfig, *, run: Run | None = None,
    docs: list[list[str]] | None = None, vocab: list[str] | None = None,
) -> LMResult:
    """Fine-tune `base` (a bundle.Base, or None for a from-scratch LM) on `texts`."""
    import torch
    from fastai.text.learner import match_embeds
    from fastai.text.models.awdlstm import awd_lstm_lm_split
    from fastai.torch_core import set_seed

    from . import fastcpu
    from .model import build_lm

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
    dls = fastcpu.dls(fastcpu.lm_loader(train, bs, cfg.bptt, True, run.device),
                      fastcpu.lm_loader(valid, bs, cfg.bptt, False, run.device), run.device)
    learn = _learner(dls, model, run, True, cfg, awd_lstm_lm_split)
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
        cut = (model[0].encoder_dp.register_forward_hook(lambda _m, _i, out: out.detach())
               if freeze is not None and base is not None and not cfg.lm_frozen_through_rnn
               else None)  # fmt: skip
        try:
            _fit_stage(learn, run, "lm", k, n_epoch, lr, start)
        finally:
            if cut is not None:
                cut.remove()
        done += n_epoch - (start.position.epoch if start and start.position.stage == k else 0)
        start = None if start is not None and start.position.stage <= k else start
    seconds = time.perf_counter() - t0
    vals = learn.recorder.__dict__.get("values")  # absent when no epoch ran
    loss = float(vals[-1][1]) if vals else float("nan")
    encoder = {k[2:]: v.detach().clone() for k, v in model.state_dict().items()
               if k.startswith("0.")}  # fmt: skip
    return LMResult(
        vocab=vocab, model_cfg=mcfg, encoder_state=encoder,
        base=getattr(base, "name", None), base_sha256=_base_sha(base),
        tokens=n_tokens * done, seconds=seconds,
        metrics={"lm_valid_loss": loss, "lm_perplexity": math.exp(min(loss, 50.0)),
                 "lm_epochs_run": done},
    )  # fmt: skip


def _shape(base: Any, cfg: TrainConfig) -> ModelConfig:
    if base is not None:
        return base.model_cfg
    if cfg.arch is not None:
        return cfg.arch
    raise ConfigError("a from-scratch run needs a model shape", "pass a base (its shape is "
                      "used) or set `arch` in the train config")  # fmt: skip


def _base_sha(base: Any) -> str | None:
    m = getattr(base, "manifest", None) or {}
    return m.get("sha256") or m.get("weights_sha256") if isinstance(m, dict) else None


# ---------------------------------------------------------------- classifier


def train_classifier(
    texts: Sequence[str], labels: Sequence[str], lm: LMResult | None, cfg: TrainConfig, *,
    valid: tuple[Sequence[str], Sequence[str]] | None = None, scratch: bool = False,
    label_names: Sequence[str] | None = None, run: Run | None = None, name: str = "model",
    docs: list[list[str]] | None = None,
) -> TrainedModel:
    """Gradual unfreezing (cfg.stages), one-cycle, discriminative lrs; returns the model."""
    import torch
    from fastai.text.models.awdlstm import awd_lstm_clas_split
    from fastai.torch_core import set_seed

    from . import fastcpu
    from .model import build_classifier

    run = run or Run()
    names = list(label_names) if label_names else check_labels(labels, cfg.valid_pct)
    c2i = {n: i for i, n in enumerate(names)}
    docs = docs if docs is not None else fastcpu.tokenize(texts, cfg.workers)
    y = [c2i[x] for x in labels]
    if valid is None:
        tr, va = stratified_split(y, cfg.valid_pct, cfg.seed)
        v_docs, v_y = [docs[i] for i in va], [y[i] for i in va]
        docs, y = [docs[i] for i in tr], [y[i] for i in tr]
        tr_texts, v_texts = [texts[i] for i in tr], [texts[i] for i in va]
    else:
        v_docs, v_y = fastcpu.tokenize(valid[0], cfg.workers), [c2i[x] for x in valid[1]]
        tr_texts, v_texts = list(texts), list(valid[0])
    resume = run.resume if run.resume is not None and run.resume.position.phase == "clas" else None
    # ULMFiT's small lrs for lower layers and later stages protect pretrained features; on a
    # random-init encoder (no base; an LM trained only on this data) they keep the embeddings
    # and first layers at ~1e-5 and the classifier stays at chance. So does CPU bf16 autocast.
    pretrained = lm is not None and lm.base is not None
    dtype = classifier_dtype(cfg, run, pretrained)
    if dtype != run.dtype:
        run.log(f"classifier in {dtype}: {run.dtype} autocast keeps a random-init encoder at "
                "chance (pass --dtype to force it)")  # fmt: skip
        run = dataclasses.replace(run, dtype=dtype)
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
    model = build_classifier(mcfg, len(names), CLAS_DROPOUTS, cfg.clas_drop_mult, cfg.bptt,
                             cfg.max_len, list(cfg.lin_ftrs))  # fmt: skip
    if lm is not None and resume is None:
        model[0].module.load_state_dict(lm.encoder_state)
    if resume is not None:
        model.load_state_dict(resume.model_state)
    ids, v_ids = fastcpu.numericalize(docs, vocab), fastcpu.numericalize(v_docs, vocab)
    dls = fastcpu.dls(fastcpu.clas_loader(ids, y, run.bs, cfg.bptt, True, run.device),
                      fastcpu.clas_loader(v_ids, v_y, run.bs, cfg.bptt, False, run.device),
                      run.device)  # fmt: skip
    learn = _learner(dls, model, run, False, cfg, awd_lstm_clas_split)
    learn._ckpt_minutes, learn._vocab, learn._labels = cfg.checkpoint_minutes, vocab, names
    tokens_per_epoch = sum(len(t) for t in ids)
    timings: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    first = resume.position.stage if resume is not None else 0
    for k, n_epoch in enumerate(cfg.stages):
        if k < first or n_epoch == 0:
            continue
        t0 = time.perf_counter()
        lr = cfg.stage_lr(k, pretrained)
        if k == 0 and cfg.cache_head_features and resume is None:
            _train_head_on_features(learn, model, ids, y, v_ids, v_y, n_epoch, lr, cfg, run)
        else:
            if k < 3 and k + 1 < mcfg.n_layers + 2:  # groups: embedding, each RNN, head
                learn.freeze_to(-(k + 1))
            else:
                learn.unfreeze()
            if resume is not None and resume.opt_state is not None and k == first:
                learn.opt.load_state_dict(resume.opt_state)
            disc = k > 0 and cfg.use_discriminative(pretrained)
            lr_arg = slice(lr / cfg.lr_div**4, lr) if disc else lr
            _fit_stage(learn, run, "clas", k, n_epoch, lr_arg, resume if k == first else None)
        timings.append({"stage": k, "epochs": n_epoch, "seconds": time.perf_counter() - t0})
        if k == 0 and cfg.cache_head_features and run.save is not None:
            run.save("clas", 1, 0, 0, learn, None, None)
    seconds = time.perf_counter() - t_all
    head = None
    if cfg.tfidf_head:  # fitted on the same training rows; the valid rows only report
        from .evaluate import predict_proba_ids
        from .tfidf_head import fit_head, mixed_metrics

        t0 = time.perf_counter()
        head = fit_head(tr_texts, [names[i] for i in y], names, cfg.seed, cfg.tfidf_weight)
        neural = predict_proba_ids(model, v_ids, run.bs, cfg.bptt, run.dtype, run.device)
        metrics = mixed_metrics(head, neural, v_texts, v_y, names)
        metrics["tfidf_seconds"] = time.perf_counter() - t0
    else:
        metrics = evaluate_ids(model, v_ids, v_y, names, run, cfg)
    epochs = sum(cfg.stages[first:])
    metrics.update(clas_seconds=seconds, clas_tokens=tokens_per_epoch * epochs,
                   clas_tokens_per_s=tokens_per_epoch * epochs / seconds if seconds else 0.0,
                   stages=timings, train_rows=len(ids), valid_rows=len(v_ids),
                   dtype=run.dtype, device=run.device)  # fmt: skip
    if lm is not None:
        metrics.update(lm.metrics, lm_tokens_per_s=lm.tokens_per_s, lm_seconds=lm.seconds)
    state = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).clone()
             for k, v in model.state_dict().items()}  # fmt: skip
    return TrainedModel(
        name=name, model_cfg=mcfg, vocab=list(vocab), labels=names, state_dict=state,
        lin_ftrs=list(cfg.lin_ftrs), train_config=config_dict(cfg), metrics=metrics,
        base=None if lm is None else lm.base,
        base_sha256=None if lm is None else lm.base_sha256, tfidf_head=head,
    )  # fmt: skip


def _train_head_on_features(learn, model, ids, y, v_ids, v_y, n_epoch, lr, cfg, run) -> None:
    """Stage 1 (head only): the frozen encoder runs once per doc, the head trains on its
    pooled outputs; no graph, no backward and no chunked re-encoding per epoch."""
    from fastai.losses import CrossEntropyLossFlat
    from fastai.metrics import accuracy
    from fastai.optimizer import Adam

    from . import fastcpu
    from .fastcpu import copy_opt_state, feature_loader, pooled_features

    enc, head = model[0], model[1]
    learn.freeze_to(-1)
    feats = pooled_features(enc, ids, run.bs, cfg.bptt, run.dtype, True, run.device)
    v_feats = pooled_features(enc, v_ids, run.bs, cfg.bptt, run.dtype, False, run.device)
    from fastai.learner import Learner

    hl = Learner(
        fastcpu.dls(feature_loader(feats, y, run.bs, True, run.device),
                    feature_loader(v_feats, v_y, run.bs, False, run.device), run.device),
        head.layers, loss_func=CrossEntropyLossFlat(), opt_func=Adam, metrics=[accuracy],
        path=learn.path, model_dir=".", wd=cfg.wd, moms=(0.8, 0.7, 0.8),
    )  # fmt: skip
    if not run.progress:
        from fastai.callback.progress import ProgressCallback

        hl.remove_cb(ProgressCallback)
    if not run.progress:
        hl.logger = lambda *a, **k: None
    hl.fit_one_cycle(n_epoch, lr)
    copy_opt_state(hl.opt, learn.opt, list(head.layers.parameters()))


def evaluate_ids(model, ids, y, names, run: Run, cfg: TrainConfig) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1 and confusion matrix of `model` on id tensors."""
    from .evaluate import metrics_from_predictions, predict_ids

    pred = predict_ids(model, ids, run.bs, cfg.bptt, run.dtype, run.device)
    return metrics_from_predictions(y, pred, names)


__all__ = [
    "train_from_vault",
    "TrainConfig",
    "LMResult",
    "Run",
    "resolve_config",
    "finetune_lm",
    "train_classifier",
    "check_labels",
    "stratified_split",
    "build_vocab_for",
    "classifier_dtype",
    "pick_dtype",
]
