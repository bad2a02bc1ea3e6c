"""Training from the vault, for the CLI: plan the runtime, estimate, train, store the model."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from .config import ModelConfig, from_dict
from .errors import ConfigError, ModelError
from .models import TrainedModel
from .train_config import TrainConfig, config_dict

# Sustained fp32-equivalent FLOP/s per thread of fastai's loop on this class of CPU, calibrated
# on measured runs here (2 threads, bf16; bench/results/compare-semi-flat10, README demo): LM
# fine-tuning 57-72, all-layer classifier 66 GFLOP/s per thread by the cost model below.
GFLOPS_PER_THREAD_FP32 = 65e9


def flops_per_token(cfg: ModelConfig, lm: bool, train_layers: int | None = None) -> float:
    """Training FLOPs per token: forward 2 per multiply-add, backward 4, but the backward pass
    stops below the lowest trainable LSTM layer (`train_layers` from the top; None: all)."""
    rnn = [4 * n_out * (n_in + n_out) for n_in, n_out in cfg.lstm_layers()]  # MACs, bottom first
    k = len(rnn) if train_layers is None else max(0, min(train_layers, len(rnn)))
    f = 2.0 * sum(rnn) + 4.0 * sum(rnn[len(rnn) - k:])
    if lm:
        f += 6.0 * cfg.vocab_size * cfg.emb_sz  # the tied decoder is a real matmul, always trained
    return f


def estimate_seconds(cfg: ModelConfig, tokens: float, lm: bool, dtype: str, threads: int,
                     train_layers: int | None = None) -> float:  # fmt: skip
    """Rough CPU wall time for `tokens` training tokens (cost model above, calibrated here)."""
    speed = GFLOPS_PER_THREAD_FP32 * max(threads, 1) * (1.4 if dtype == "bf16" else 1.0)
    return flops_per_token(cfg, lm, train_layers) * tokens / speed


def estimate_training(cfg: ModelConfig, tc: TrainConfig, lm_tokens: float, clas_tokens: float,
                      dtype: str, threads: int) -> float:  # fmt: skip
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


def train_from_vault(
    data_name: str | None, base_name: str | None, out_name: str, cfg: TrainConfig | None = None,
    resume: bool = False, *, lm_data: Sequence[str] = (), profile: Any = None,
    progress: bool = True, echo: Callable[[str], None] = print,
) -> TrainedModel:
    """Train `out_name` on vault dataset `data_name` (LM fine-tuning + classifier) and store it."""
    import torch

    from . import fastcpu
    from . import train as _train  # at call time: tests patch finetune_lm / train_classifier
    from .checkpoint import (
        Checkpoint,
        Position,
        load_checkpoint,
        remove_checkpoint,
        save_checkpoint,
    )
    from .data import open_dataset
    from .models import check_name, model_path, save_model

    check_name(out_name)
    ck = None
    if resume:
        ck = load_checkpoint(out_name)
        # Checkpoints from before lm_frozen_through_rnn existed ran fastai's way: finish so.
        saved = {"lm_frozen_through_rnn": True, **ck.train_config}
        cfg = from_dict(TrainConfig, saved, f"checkpoint {out_name}: train_config")
        data_name, base_name, lm_data = ck.data, ck.base, ck.lm_data
        p = ck.position
        echo(f"resuming {out_name}: {p.phase} stage {p.stage + 1}, epoch {p.epoch + 1}, "
             f"batch {p.batch}")
    elif model_path(out_name).exists():
        from .errors import StoreError

        raise StoreError(f"model {out_name!r} already exists", "choose another --out name, or "
                         f"remove it with `edge-tl models rm {out_name}`")
    cfg = cfg or TrainConfig()
    if data_name is None:
        raise ConfigError("no dataset given", "pass --data NAME")
    ds = open_dataset(data_name)
    if ck is not None and ck.dataset_fingerprint != ds.fingerprint:
        raise ModelError(f"dataset {data_name!r} changed since the run started",
                         "start over without --resume (the checkpoint is for other data)")
    texts, labels = ds.labelled()
    names = _train.check_labels(ds.labels, cfg.valid_pct)
    lm_texts = list(ds.texts)
    for extra in lm_data:
        lm_texts += open_dataset(extra).texts
    base, shape = None, cfg.arch
    want_lm = not cfg.scratch or cfg.scratch_lm
    if not cfg.scratch:
        from .bases import load_base

        base = load_base(base_name or "default")
        base_name, shape = base.name, base.model_cfg
    elif shape is None:
        from .bases import base_info

        shape = base_info(base_name or "default").model_cfg
        cfg = dataclasses.replace(cfg, arch=shape)
    if shape is None:
        raise ConfigError("no model shape for --scratch", "set `arch` in the train config")
    hw, prof, run = make_runtime(cfg, profile, shape, progress)
    run.log = echo
    run.resume = ck
    fp = ds.fingerprint

    def save(phase, stage, epoch, batch, learn, rng_start, rng_now) -> None:
        save_checkpoint(Checkpoint(
            name=out_name, data=data_name, base=base_name, lm_data=list(lm_data),
            dataset_fingerprint=fp, train_config=config_dict(cfg),
            position=Position(phase, stage, epoch, batch), vocab=list(learn._vocab),
            labels=names, model_state=learn.model.state_dict(),
            opt_state=learn.opt.state_dict() if learn.opt is not None else None,
            rng_epoch_start=rng_start or {}, rng_now=rng_now or {}, extra=run.extra,
        ))  # fmt: skip

    run.save = save
    echo(f"tokenizing {len(lm_texts) if want_lm else len(texts)} texts in memory ...")
    docs_all = fastcpu.tokenize(lm_texts if want_lm else texts, cfg.workers)
    n_lab = len(texts)
    # lm_texts starts with ds.texts, so a labelled row's docs sit at its index in the dataset.
    lab_idx = [i for i, lab in enumerate(ds.labels) if lab is not None]
    lab_docs = [docs_all[i] for i in lab_idx] if want_lm else docs_all
    lm_epoch = sum(len(d) for d in docs_all) if want_lm else 0
    lm_tokens = lm_epoch * (cfg.lm_frozen_epochs + cfg.lm_epochs)
    clas_epoch = sum(min(len(d), cfg.max_len) for d in lab_docs) * (1 - cfg.valid_pct)
    clas_tokens = clas_epoch * sum(cfg.stages[1:])
    threads = torch.get_num_threads()
    est = estimate_training(shape, cfg, lm_epoch, clas_epoch, run.dtype, threads)
    echo(f"plan: profile {getattr(prof, 'name', '-')}, device {run.device}, dtype {run.dtype}, "
         f"{threads} threads; LM batch {run.lm_bs} x bptt {cfg.bptt}, classifier batch "
         f"{run.bs} (max {cfg.max_len} tokens); {n_lab} labelled rows, {len(names)} labels; "
         f"~{lm_tokens:,} LM + ~{int(clas_tokens):,} classifier tokens; "
         + (f"estimated time ~{est / 60:.1f} min" if run.device == "cpu" else
            f"no time estimate on {run.device} (the cost model is calibrated on CPUs)"))
    lm = None
    if ck is not None and ck.position.phase == "clas":
        lm = _train.LMResult(vocab=list(ck.vocab), model_cfg=dataclasses.replace(
            shape, vocab_size=len(ck.vocab)), encoder_state={},
            base=None if cfg.scratch else base_name,
            base_sha256=ck.extra.get("base_sha256"))  # fmt: skip
        lm.metrics = {k: v for k, v in ck.extra.items() if k.startswith("lm_")}
    elif want_lm:
        echo("language-model fine-tuning" if base else "language-model training (scratch)")
        lm = _train.finetune_lm(lm_texts, base, cfg, run=run, docs=docs_all,
                                vocab=list(ck.vocab) if ck is not None else None)
        run.extra.update(lm.metrics, lm_tokens_per_s=lm.tokens_per_s, lm_seconds=lm.seconds,
                         base_sha256=lm.base_sha256)  # fmt: skip
        run.resume = None
        ppl = lm.metrics["lm_perplexity"]
        echo(f"LM done: {lm.tokens_per_s:,.0f} tokens/s, perplexity {ppl:.1f}")
    echo("classifier: stages " + ", ".join(str(e) for e in cfg.stages) + " epochs")
    m = _train.train_classifier(texts, labels, lm, cfg, label_names=names, run=run,
                                name=out_name, docs=lab_docs, scratch=cfg.scratch)  # fmt: skip
    m.metrics.update({k: v for k, v in run.extra.items() if k.startswith("lm_")})
    m.base = None if cfg.scratch else base_name
    m.base_sha256 = None if cfg.scratch else (run.extra.get("base_sha256") or m.base_sha256)
    m.dataset_fingerprint = ds.fingerprint
    save_model(m)
    remove_checkpoint(out_name)
    return m


def make_runtime(cfg: TrainConfig, profile: Any, shape: ModelConfig, progress: bool,
                 log: Callable[[str], None] | None = None):
    """Hardware, profile and a Run with device, dtype, threads and planned batch sizes."""
    import torch

    from . import train as _train  # Run and pick_dtype live there; it imports this module

    hw = prof = None
    device, threads, lm_bs, bs, rt_dtype = "cpu", 0, 64, 64, None
    try:
        from .device import choose_runtime, detect
        from .planner import plan
        from .profiles import auto_select, load_profile

        hw = detect()
        prof = load_profile(profile) if isinstance(profile, str) else profile or auto_select(hw)
        rt = choose_runtime(hw, prof)
        device, threads, rt_dtype = rt.device, rt.threads, rt.dtype
        lm_bs = plan(hw, prof, shape, "lm_train").batch_size
        bs = plan(hw, prof, shape, "clas_train").batch_size
    except ImportError:
        pass  # foundation modules absent: CPU, fastai's batch size
    from .fastcpu import auto_threads

    if cfg.threads:
        threads = cfg.threads
    elif device == "cpu":
        threads = auto_threads(threads or torch.get_num_threads())
    if threads:
        torch.set_num_threads(threads)
    run = _train.Run(device=device, dtype=_train.pick_dtype(cfg, device, rt_dtype),
                     progress=progress, bs=cfg.bs or min(bs, 64),
                     lm_bs=cfg.lm_bs or min(lm_bs, 64))  # fmt: skip
    if log is not None:
        run.log = log
    return hw, prof, run


__all__ = ["GFLOPS_PER_THREAD_FP32", "estimate_seconds", "estimate_training", "flops_per_token",
           "train_from_vault", "make_runtime"]  # fmt: skip
