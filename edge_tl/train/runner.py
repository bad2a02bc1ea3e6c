"""Training from the vault, for the CLI: plan the runtime, estimate, train, store the model."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from edge_tl.bases.store import base_info, load_base
from edge_tl.config import ModelConfig, from_dict
from edge_tl.errors import ConfigError, ModelError, StoreError
from edge_tl.store.checkpoints import (
    Checkpoint,
    Position,
    checkpoint_path,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
)
from edge_tl.store.datasets import Dataset, open_dataset
from edge_tl.store.models import TrainedModel, check_name, model_path, save_model
from edge_tl.train import directions, recipe  # called as recipe.NAME: tests patch its stages
from edge_tl.train import engine as fastcpu
from edge_tl.train.config import TrainConfig, config_dict
from edge_tl.train.prepare import check_labels
from edge_tl.train.recipe import LMResult
from edge_tl.train.settings import Run, resolve_runtime

# Sustained fp32-equivalent FLOP/s per thread of fastai's loop on this class of CPU, calibrated
# on measured runs here (2 threads, bf16; bench/results/compare-semi-flat10, README demo): LM
# fine-tuning 57-72, all-layer classifier 66 GFLOP/s per thread by the cost model below.
GFLOPS_PER_THREAD_FP32 = 65e9


def flops_per_token(cfg: ModelConfig, lm: bool, train_layers: int | None = None) -> float:
    """Training FLOPs per token: forward 2 per multiply-add, backward 4, but the backward pass
    stops below the lowest trainable LSTM layer (`train_layers` from the top; None: all)."""
    rnn = [4 * n_out * (n_in + n_out) for n_in, n_out in cfg.lstm_layers()]  # MACs, bottom first
    k = len(rnn) if train_layers is None else max(0, min(train_layers, len(rnn)))
    f = 2.0 * sum(rnn) + 4.0 * sum(rnn[len(rnn) - k :])
    if lm:
        f += 6.0 * cfg.vocab_size * cfg.emb_sz  # the tied decoder is a real matmul, always trained
    return f


def estimate_seconds(
    cfg: ModelConfig,
    tokens: float,
    lm: bool,
    dtype: str,
    threads: int,
    train_layers: int | None = None,
) -> float:
    """Rough CPU wall time for `tokens` training tokens (cost model above, calibrated here)."""
    speed = GFLOPS_PER_THREAD_FP32 * max(threads, 1) * (1.4 if dtype == "bf16" else 1.0)
    return flops_per_token(cfg, lm, train_layers) * tokens / speed


def estimate_training(
    cfg: ModelConfig,
    tc: TrainConfig,
    lm_tokens: float,
    clas_tokens: float,
    dtype: str,
    threads: int,
) -> float:
    """CPU wall time of LM fine-tuning over `lm_tokens` (one epoch) and the classifier stages
    over `clas_tokens` (one epoch): stage k trains the top k LSTM layers, the last one all."""
    # the frozen LM epoch backpropagates through the LSTMs only in fastai's exact recipe
    frozen_layers = None if tc.lm_frozen_through_rnn else 0
    s = tc.lm_frozen_epochs * estimate_seconds(cfg, lm_tokens, True, dtype, threads, frozen_layers)
    s += tc.lm_epochs * estimate_seconds(cfg, lm_tokens, True, dtype, threads)
    last = len(tc.stages) - 1
    if tc.stages[0]:  # head only: a forward pass per epoch, or one with cached features
        passes = 1 if tc.cache_head_features else tc.stages[0]
        s += passes * estimate_seconds(cfg, clas_tokens, False, dtype, threads, 0)
    for k, epochs in enumerate(tc.stages[1:], start=1):
        layers = None if k == last else k
        s += epochs * estimate_seconds(cfg, clas_tokens, False, dtype, threads, layers)
    return s


@dataclass
class _Inputs:
    """What a run trains on, resolved from the flags or from its checkpoint."""

    out_name: str
    data_name: str
    base_name: str | None
    lm_data: list[str]
    cfg: TrainConfig
    ds: Dataset
    names: list[str]
    lm_texts: list[str]
    base: Any
    shape: ModelConfig
    ck: Checkpoint | None


def train_from_vault(
    data_name: str | None,
    base_name: str | None,
    out_name: str,
    cfg: TrainConfig | None = None,
    resume: bool = False,
    *,
    lm_data: Sequence[str] = (),
    profile: Any = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    restart: bool = False,
) -> TrainedModel:
    """Train `out_name` on vault dataset `data_name` (LM fine-tuning + classifier) and store it.

    A checkpoint left by an interrupted run of `out_name` is continued with resume=True, or
    dropped with restart=True; without either the run refuses to start (never overwrites it)."""
    job = _resolve_inputs(
        data_name, base_name, out_name, cfg, resume, list(lm_data), echo, restart=restart
    )
    _hw, prof, run = resolve_runtime(job.cfg, profile, job.shape, progress)
    run.log, run.resume, run.save = echo, job.ck, _checkpointer(job, run)
    want_lm = not job.cfg.scratch or job.cfg.scratch_lm
    texts, labels = job.ds.labelled()
    echo(f"tokenizing {len(job.lm_texts) if want_lm else len(texts)} texts in memory ...")
    docs_all = fastcpu.tokenize(job.lm_texts if want_lm else texts, job.cfg.workers)
    # lm_texts starts with ds.texts, so a labelled row's docs sit at its index in the dataset.
    lab_idx = [i for i, lab in enumerate(job.ds.labels) if lab is not None]
    lab_docs = [docs_all[i] for i in lab_idx] if want_lm else docs_all
    echo(_plan_line(job, run, prof, docs_all if want_lm else [], lab_docs))
    lm = _language_model(job, run, docs_all, want_lm, echo)
    bwd = _backward(job, run, lm, docs_all, lab_docs, texts, labels, echo)
    echo("classifier: stages " + ", ".join(str(e) for e in job.cfg.stages) + " epochs")
    m = recipe.train_classifier(
        texts,
        labels,
        lm,
        job.cfg,
        label_names=job.names,
        run=run,
        name=out_name,
        docs=lab_docs,
        scratch=job.cfg.scratch,
    )
    if bwd is not None:
        m = directions.combine(m, bwd, job.cfg)
        echo(
            f"forward + backward: networks {m.metrics['forward_network_accuracy']:.3f} and "
            f"{m.metrics['backward_network_accuracy']:.3f}, their mean "
            f"{m.metrics['neural_accuracy']:.3f} on the validation rows"
        )
    return _store(m, job, run)


def _backward(
    job: _Inputs,
    run: Run,
    lm: LMResult | None,
    docs_all: list,
    lab_docs: list,
    texts: list[str],
    labels: list[str],
    echo: Callable[[str], None],
) -> TrainedModel | None:
    """The backward network (backward_base set): its base fine-tuned on the reversed texts,
    then its classifier; not checkpointed (a resumed run trains it again)."""
    if not job.cfg.backward_base or lm is None:
        return None
    base = load_base(job.cfg.backward_base)
    directions.check_backward_base(base, job.base)
    echo(f"backward network: fine-tuning {base.name} on the reversed texts")
    lm_b = directions.finetune_backward_lm(job.lm_texts, base, lm, job.cfg, run, docs_all)
    echo(f"backward LM done: perplexity {lm_b.metrics['lm_perplexity']:.1f}; its classifier")
    return directions.train_backward_classifier(
        texts, labels, lm_b, job.cfg, label_names=job.names, run=run, docs=lab_docs
    )


def _resolve_inputs(
    data_name: str | None,
    base_name: str | None,
    out_name: str,
    cfg: TrainConfig | None,
    resume: bool,
    lm_data: list[str],
    echo: Callable[[str], None],
    restart: bool = False,
) -> _Inputs:
    """Start or resume: the settings, the dataset, the base and the model shape."""
    check_name(out_name)
    ck = None
    if resume and restart:
        raise ConfigError("--resume and --restart exclude each other", "pass one of them")
    if resume:
        ck = load_checkpoint(out_name)
        # Checkpoints from before lm_frozen_through_rnn existed ran fastai's way: finish so.
        saved = {"lm_frozen_through_rnn": True, **ck.train_config}
        cfg = from_dict(TrainConfig, saved, f"checkpoint {out_name}: train_config")
        data_name, base_name, lm_data = ck.data, ck.base, list(ck.lm_data)
        p = ck.position
        echo(
            f"resuming {out_name}: {p.phase} stage {p.stage + 1}, epoch {p.epoch + 1}, "
            f"batch {p.batch}"
        )
    drop_checkpoint = not resume and _check_fresh_start(out_name, restart)
    cfg = cfg or TrainConfig()
    if data_name is None:
        raise ConfigError("no dataset given", "pass --data NAME")
    ds = open_dataset(data_name)
    if ck is not None and ck.dataset_fingerprint != ds.fingerprint:
        raise ModelError(
            f"dataset {data_name!r} changed since the run started",
            f"start over with `edge-tl train --data {data_name} --out {out_name} --restart` "
            "(the checkpoint is for other data)",
        )
    names = check_labels(ds.labels, cfg.valid_pct)
    lm_texts = list(ds.texts)
    for extra in lm_data:
        lm_texts += open_dataset(extra).texts
    base, shape = None, cfg.arch
    if cfg.backward_base and cfg.scratch:
        raise ConfigError(
            "backward_base needs a pretrained forward base; --scratch has none",
            "drop backward_base, or train from a base",
        )
    if not cfg.scratch:
        base = load_base(base_name or "default")
        base_name, shape = base.name, base.model_cfg
    elif shape is None:
        shape = base_info(base_name or "default").model_cfg
        cfg = dataclasses.replace(cfg, arch=shape)
    if shape is None:
        raise ConfigError("no model shape for --scratch", "set `arch` in the train config")
    if drop_checkpoint:  # only once the new run's inputs are known to be good
        remove_checkpoint(out_name)
        echo(f"dropped the checkpoint of the interrupted run of {out_name!r} (--restart)")
    return _Inputs(
        out_name, data_name, base_name, lm_data, cfg, ds, names, lm_texts, base, shape, ck
    )


def _check_fresh_start(out_name: str, restart: bool) -> bool:
    """A new run: its model must not exist; an interrupted run's checkpoint is never silently
    overwritten (continue it with --resume, or drop it with --restart). True: drop it."""
    if model_path(out_name).exists():
        raise StoreError(
            f"model {out_name!r} already exists",
            f"choose another --out name, or remove it with `edge-tl models rm {out_name}`",
        )
    if not checkpoint_path(out_name).exists():
        return False
    if not restart:
        raise StoreError(
            f"an interrupted run of model {out_name!r} left a checkpoint "
            f"(runs/{out_name}.ckpt); starting again would overwrite it",
            f"continue it with `edge-tl train --resume {out_name}`, or start over with "
            "--restart (drops the checkpoint)",
        )
    return True


def _checkpointer(job: _Inputs, run: Run) -> Callable[..., None]:
    """The run's save hook: an encrypted checkpoint with everything a resume needs."""

    def save(phase, stage, epoch, batch, learn, rng_start, rng_now) -> None:
        save_checkpoint(
            Checkpoint(
                name=job.out_name,
                data=job.data_name,
                base=job.base_name,
                lm_data=list(job.lm_data),
                dataset_fingerprint=job.ds.fingerprint,
                train_config=config_dict(job.cfg),
                position=Position(phase, stage, epoch, batch),
                vocab=list(learn._vocab),
                labels=job.names,
                model_state=learn.model.state_dict(),
                opt_state=learn.opt.state_dict() if learn.opt is not None else None,
                rng_epoch_start=rng_start or {},
                rng_now=rng_now or {},
                extra=run.extra,
            )
        )

    return save


def _plan_line(job: _Inputs, run: Run, prof: Any, lm_docs: list, lab_docs: list) -> str:
    """One line: device, dtype, threads, batch sizes, rows, tokens and the time estimate."""
    cfg = job.cfg
    lm_epoch = sum(len(d) for d in lm_docs)
    lm_tokens = lm_epoch * (cfg.lm_frozen_epochs + cfg.lm_epochs)
    clas_epoch = sum(min(len(d), cfg.max_len) for d in lab_docs) * (1 - cfg.valid_pct)
    clas_tokens = clas_epoch * sum(cfg.stages[1:])
    threads = torch.get_num_threads()
    est = estimate_training(job.shape, cfg, lm_epoch, clas_epoch, run.dtype, threads)
    if cfg.backward_base:  # the backward network trains the same tokens again
        est *= 2
    when = (
        f"estimated time ~{est / 60:.1f} min"
        if run.device == "cpu"
        else f"no time estimate on {run.device} (the cost model is calibrated on CPUs)"
    )
    return (
        f"plan: profile {getattr(prof, 'name', '-')}, device {run.device}, dtype {run.dtype}, "
        f"{threads} threads ({run.threads_why or 'set by the caller'}); LM batch {run.lm_bs} "
        f"x bptt {cfg.bptt}, classifier batch "
        f"{run.bs} (max {cfg.max_len} tokens); {len(lab_docs)} labelled rows, "
        f"{len(job.names)} labels; ~{lm_tokens:,} LM + ~{int(clas_tokens):,} classifier "
        f"tokens; {when}"
    )


def _language_model(
    job: _Inputs, run: Run, docs_all: list, want_lm: bool, echo: Callable[[str], None]
) -> LMResult | None:
    """The LM stage: fine-tune (or train from scratch), or take its result from the checkpoint."""
    ck, cfg = job.ck, job.cfg
    if ck is not None and ck.position.phase == "clas":
        lm = LMResult(
            vocab=list(ck.vocab),
            model_cfg=dataclasses.replace(job.shape, vocab_size=len(ck.vocab)),
            encoder_state={},
            base=None if cfg.scratch else job.base_name,
            base_sha256=ck.extra.get("base_sha256"),
        )
        lm.metrics = {k: v for k, v in ck.extra.items() if k.startswith("lm_")}
        return lm
    if not want_lm:
        return None
    echo("language-model fine-tuning" if job.base else "language-model training (scratch)")
    lm = recipe.finetune_lm(
        job.lm_texts,
        job.base,
        cfg,
        run=run,
        docs=docs_all,
        vocab=list(ck.vocab) if ck is not None else None,
    )
    run.extra.update(
        lm.metrics,
        lm_tokens_per_s=lm.tokens_per_s,
        lm_seconds=lm.seconds,
        base_sha256=lm.base_sha256,
    )
    run.resume = None
    echo(f"LM done: {lm.tokens_per_s:,.0f} tokens/s, perplexity {lm.metrics['lm_perplexity']:.1f}")
    return lm


def _store(m: TrainedModel, job: _Inputs, run: Run) -> TrainedModel:
    """Record where the model came from, store it encrypted, drop the checkpoint."""
    scratch = job.cfg.scratch
    m.metrics.update({k: v for k, v in run.extra.items() if k.startswith("lm_")})
    m.base = None if scratch else job.base_name
    m.base_sha256 = None if scratch else (run.extra.get("base_sha256") or m.base_sha256)
    m.dataset_fingerprint = job.ds.fingerprint
    save_model(m)
    remove_checkpoint(job.out_name)
    return m


__all__ = [
    "GFLOPS_PER_THREAD_FP32",
    "estimate_seconds",
    "estimate_training",
    "flops_per_token",
    "train_from_vault",
]
