"""fastai's Learner as the recipe drives it: one learner, one stage fit with checkpoints and
resume, the head trained on cached encoder features, and validation metrics."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import torch
from fastai.callback.core import Callback
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy
from fastai.optimizer import Adam
from fastai.text.learner import TextLearner

from edge_tl.metrics import metrics_from_predictions
from edge_tl.store.checkpoints import capture_rng, restore_rng
from edge_tl.store.home import subdir
from edge_tl.train import engine as fastcpu
from edge_tl.train.config import TrainConfig
from edge_tl.train.engine import (
    Autocast,
    EveryEpochAndMinutes,
    SkipBatches,
    copy_opt_state,
    feature_loader,
    pooled_features,
)
from edge_tl.train.evaluate import predict_ids
from edge_tl.train.settings import Run


def learner(dls, model, run: Run, lm: bool, cfg: TrainConfig, splitter):
    """A fastai TextLearner with our callbacks, writing nothing (path under runs/)."""

    cbs = []
    if run.dtype in ("bf16", "fp16") and run.device == "cpu":
        cbs.append(Autocast("cpu", _torch_dtype(run.dtype)))
    elif run.dtype in ("bf16", "fp16"):
        from fastai.callback.fp16 import MixedPrecision

        cbs.append(MixedPrecision(amp_mode=run.dtype))
    learn = TextLearner(
        dls,
        model,
        loss_func=CrossEntropyLossFlat(),
        opt_func=Adam,
        splitter=splitter,
        metrics=[accuracy],
        path=subdir("runs"),
        model_dir=".",
        wd=cfg.wd,
        cbs=cbs,
    )
    _progress(learn, run)
    return learn


def _progress(learn, run: Run) -> None:
    """Bars and fastai's epoch table on a terminal; one plain line per epoch into a log (bars
    write carriage returns); nothing when progress is off (--quiet)."""
    if run.bars():
        return
    from fastai.callback.progress import ProgressCallback

    learn.remove_cb(ProgressCallback)
    learn.logger = _epoch_lines(learn, run.log) if run.progress else (lambda *a, **k: None)


def _epoch_lines(learn, log):
    """A fastai logger for logs: `epoch 1/3: train_loss 0.6931, valid_loss 0.6900, ...`."""

    def write(row) -> None:
        names = [str(n) for n in getattr(learn.recorder, "metric_names", [])][1:]
        vals = list(row)
        cells = [
            f"{n} {v:.4f}" if isinstance(v, float) else f"{n} {v}"
            for n, v in zip(names, vals[1:], strict=False)
        ]
        epoch = vals[0] + 1 if vals and isinstance(vals[0], int) else "?"
        log(f"epoch {epoch}/{getattr(learn, 'n_epoch', '?')}: " + ", ".join(cells))

    return write


def _torch_dtype(name: str):

    return {"bf16": torch.bfloat16, "fp16": torch.float16}[name]


def fit_stage(learn, run: Run, phase: str, stage: int, n_epoch: int, lr, start: Any) -> None:
    """fit_one_cycle for one stage, checkpointing each epoch and every N minutes; resumable."""

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
        saved = _with_best(learn)
        if finished:
            nxt = (stage, epoch + 1) if epoch + 1 < n_epoch else (stage + 1, 0)
            rng = {**capture_rng(), "dl": dl.rng.getstate()}
            run.save(phase, nxt[0], nxt[1], 0, saved, rng, rng)
        else:
            now = {**capture_rng(), **({"hidden": _lm_hidden(learn)} if phase == "lm" else {})}
            run.save(phase, stage, epoch, batch, saved, state["rng"], now)

    def resume_here() -> None:
        if rng_now:
            restore_rng(rng_now)
            if rng_now.get("hidden") is not None:
                _set_lm_hidden(learn, rng_now["hidden"])

    cbs = [EveryEpochAndMinutes(save, _minutes(learn), on_epoch_start)]
    best = getattr(learn, "_best", None)
    if best is not None:
        cbs.append(KeepBest(best, stage))
    if batch0 > 0:
        cbs.append(SkipBatches(batch0, on_done=resume_here))
    learn.fit_one_cycle(n_epoch, lr, moms=(0.8, 0.7, 0.8), cbs=cbs, start_epoch=epoch0)


# ---------------------------------------------------------------- the best epoch

BEST_PREFIX = "best."  # checkpoint model_state keys of the best epoch's weights
BEST_META = "best_epoch"  # float64 [valid loss, stage, epoch] of that epoch


class KeepBest(Callback):
    """After each epoch, copy the weights if its validation loss is the lowest so far."""

    order = 60  # after the Recorder has logged the epoch, before its checkpoint is written

    def __init__(self, best: dict[str, Any], stage: int) -> None:
        self.best, self.stage = best, stage

    def after_epoch(self) -> None:
        record = getattr(self.learn, "final_record", None)
        loss = float(record[1]) if record is not None and len(record) > 1 else math.nan
        if math.isnan(loss) or loss >= self.best["loss"]:
            return
        self.best.update(loss=loss, stage=self.stage, epoch=int(self.epoch))
        self.best["state"] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}


def new_best() -> dict[str, Any]:
    """An empty record of the best epoch (KeepBest fills it)."""
    return {"loss": math.inf, "stage": None, "epoch": None, "state": None}


def _with_best(learn) -> Any:
    """What a checkpoint saves of `learn`: its weights plus the best epoch's, if one is kept
    (a resumed run must still be able to go back to an epoch before the interruption)."""
    best = getattr(learn, "_best", None)
    if best is None or best["state"] is None:
        return learn
    state = dict(learn.model.state_dict())
    state.update({BEST_PREFIX + k: v for k, v in best["state"].items()})
    meta = [best["loss"], best["stage"], best["epoch"]]
    state[BEST_META] = torch.tensor(meta, dtype=torch.float64)
    return SimpleNamespace(
        model=SimpleNamespace(state_dict=lambda: state),
        opt=learn.opt,
        _vocab=learn._vocab,
        _labels=getattr(learn, "_labels", None),
    )


def split_best(model_state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A checkpoint's model_state without the best epoch's entries, and that record."""
    best = new_best()
    plain = {k: v for k, v in model_state.items() if not k.startswith(BEST_PREFIX)}
    meta = plain.pop(BEST_META, None)
    if meta is not None:
        loss, stage, epoch = (float(x) for x in meta.tolist())
        n = len(BEST_PREFIX)
        saved = {k[n:]: v for k, v in model_state.items() if k.startswith(BEST_PREFIX)}
        best.update(loss=loss, stage=int(stage), epoch=int(epoch), state=saved)
    return plain, best


def _lm_hidden(learn) -> list[tuple[Any, Any]]:
    """The LM encoder's LSTM state (h, c) per layer: an epoch carries it from batch to batch."""
    return [(h.detach().cpu().clone(), c.detach().cpu().clone()) for h, c in learn.model[0].hidden]


def _set_lm_hidden(learn, hidden: list[tuple[Any, Any]]) -> None:
    """Put a checkpoint's LSTM state back, so a resumed epoch goes on from where it stopped."""
    enc = learn.model[0]
    dev = next(enc.parameters()).device
    enc.hidden = [(h.to(dev), c.to(dev)) for h, c in hidden]
    enc.bs = hidden[0][0].shape[1]


def _minutes(learn) -> float:
    return getattr(learn, "_ckpt_minutes", 10.0)


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(o) for o in x) if isinstance(x, list) else x


def train_head_on_features(learn, model, ids, y, v_ids, v_y, n_epoch, lr, cfg, run) -> None:
    """Stage 1 (head only): the frozen encoder runs once per doc, the head trains on its
    pooled outputs; no graph, no backward and no chunked re-encoding per epoch."""

    enc, head = model[0], model[1]
    learn.freeze_to(-1)
    feats = pooled_features(enc, ids, run.bs, cfg.bptt, run.dtype, True, run.device)
    v_feats = pooled_features(enc, v_ids, run.bs, cfg.bptt, run.dtype, False, run.device)

    hl = Learner(
        fastcpu.dls(
            feature_loader(feats, y, run.bs, True, run.device),
            feature_loader(v_feats, v_y, run.bs, False, run.device),
            run.device,
        ),
        head.layers,
        loss_func=CrossEntropyLossFlat(),
        opt_func=Adam,
        metrics=[accuracy],
        path=learn.path,
        model_dir=".",
        wd=cfg.wd,
        moms=(0.8, 0.7, 0.8),
    )
    _progress(hl, run)
    hl.fit_one_cycle(n_epoch, lr)
    copy_opt_state(hl.opt, learn.opt, list(head.layers.parameters()))


def evaluate_ids(model, ids, y, names, run: Run, cfg: TrainConfig) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1 and confusion matrix of `model` on id tensors."""

    pred = predict_ids(model, ids, run.bs, cfg.bptt, run.dtype, run.device)
    return metrics_from_predictions(y, pred, names)


__all__ = [
    "KeepBest",
    "evaluate_ids",
    "fit_stage",
    "learner",
    "new_best",
    "split_best",
    "train_head_on_features",
]
