"""Pretrain an AWD-LSTM base language model on plain-text corpora, resumably, on CPU or CUDA."""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edge_tl.awd_lstm import build_lm
from edge_tl.bases.corpus import read_corpus, take_words
from edge_tl.bases.layout import FASTAI_RULES
from edge_tl.bases.tokens import (
    build_vocab,
    numericalize,
    tokenize,
    unigram_log_probs,
    unigram_perplexity,
)
from edge_tl.config import ModelConfig, from_dict, to_dict
from edge_tl.errors import ConfigError, DataError
from edge_tl.store.files import atomic_writer

# Named sizes. "small" is the shipped default: chosen so a 2-core CPU fine-tunes it in minutes.
SIZES: dict[str, ModelConfig] = {
    "tiny": ModelConfig(vocab_size=2000, emb_sz=32, n_hid=64, n_layers=2),
    "small": ModelConfig(vocab_size=12000, emb_sz=200, n_hid=512, n_layers=3),
    "medium": ModelConfig(vocab_size=30000, emb_sz=300, n_hid=800, n_layers=3),
    "wt103": ModelConfig(vocab_size=60000, emb_sz=400, n_hid=1152, n_layers=3),
}

TOKENIZER_SPEC = {
    "tokenizer": "fastai.text.core.SpacyTokenizer",
    "lang": "en",
    "rules": list(FASTAI_RULES),
    "bos": "xxbos",
}


@dataclass(frozen=True)
class PretrainConfig:
    """Everything a pretraining run depends on; stored in every checkpoint."""

    size: str = "small"
    max_tokens: int = 8_000_000  # training tokens to see (sets the LR schedule length)
    max_corpus_words: int = 6_000_000  # words read from the corpus before tokenizing
    valid_tokens: int = 200_000
    batch_size: int = 128
    bptt: int = 70
    lr: float = 2e-3
    weight_decay: float = 0.01
    clip: float = 0.25
    drop_mult: float = 0.1
    alpha: float = 2.0  # activation regularisation (fastai's RNNRegularizer default)
    beta: float = 1.0  # temporal activation regularisation
    min_freq: int = 3
    bf16: bool = True
    threads: int = 0
    checkpoint_minutes: float = 10.0
    time_budget_minutes: float = 0.0  # > 0: the schedule ends at this much training time
    seed: int = 42
    backward: bool = False  # train on reversed token streams (ULMFiT's backward model)


@dataclass
class PretrainResult:
    """Outcome of a finished run: the weights, the vocab and how they were made."""

    model_cfg: ModelConfig
    vocab: list[str]
    state_dict: dict[str, Any]
    stats: dict[str, Any]


# ---------------------------------------------------------------- training


def _batches(stream, bs: int, bptt: int, start_step: int = 0):
    """fastai LMDataLoader layout: bs parallel contiguous streams, bptt-long windows."""

    n = (len(stream) - 1) // bs
    data = torch.from_numpy(stream[: n * bs + 1].astype("int64"))
    x_all = data[: n * bs].view(bs, n)  # (bs, n)
    y_all = data[1 : n * bs + 1].view(bs, n)
    n_steps = n // bptt
    for i in range(start_step, n_steps):
        yield i, x_all[:, i * bptt : (i + 1) * bptt], y_all[:, i * bptt : (i + 1) * bptt]


def evaluate_perplexity(model, stream, bs: int = 32, bptt: int = 70, bf16: bool = False) -> float:
    """Held-out perplexity of a fastai LM on a token-id stream."""

    dev = next(model.parameters()).device
    model.eval()
    model.reset()
    total, count = 0.0, 0
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
        for _, x, y in _batches(stream, bs, bptt):
            x, y = x.to(dev), y.to(dev)
            logits = model(x)[0].float()  # (bs, bptt, vocab)
            total += F.cross_entropy(
                logits.view(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"
            ).item()
            count += y.numel()
    model.train()
    if count == 0:
        raise DataError("the validation corpus is too small to measure perplexity")
    return math.exp(total / count)


def _save_ckpt(path: Path, payload: dict[str, Any]) -> None:

    buf = io.BytesIO()
    torch.save(payload, buf)
    with atomic_writer(path, 0o600) as f:
        f.write(buf.getvalue())


def _lr_at(progress: float, peak: float) -> float:
    # Slanted triangular over progress in [0, 1]: 5 % linear warm-up, then linear decay to 1 %.
    warm = 0.05
    if progress < warm:
        return peak * max(progress, 1e-3) / warm
    frac = min(1.0, (progress - warm) / (1 - warm))
    return peak * (1 - frac * (1 - 1 / 100))


def prepare(
    corpus: list[Path],
    valid: list[Path],
    cfg: PretrainConfig,
    workdir: Path,
    log: Callable[[str], None] = print,
) -> tuple[Any, Any, list[str]]:
    """Tokenize and numericalize the corpus once; cached (public text only) in `workdir`."""

    cache = workdir / "tokens.npz"
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        vocab = json.loads((workdir / "vocab.json").read_text())
        return z["train"], z["valid"], vocab
    t0 = time.time()
    texts = take_words(read_corpus(corpus), cfg.max_corpus_words)
    log(f"read {len(texts):,} paragraphs; tokenizing ...")
    toks = tokenize(texts, n_workers=2)
    max_vocab = SIZES[cfg.size].vocab_size
    vocab = build_vocab(toks, max_vocab=max_vocab, min_freq=cfg.min_freq)
    vocab = vocab[:max_vocab]
    train = numericalize(toks, vocab)
    vtexts = take_words(read_corpus(valid), int(cfg.valid_tokens * 0.9)) if valid else []
    n_tail = min(cfg.valid_tokens, len(train) // 10)  # without --valid: hold out the tail
    vstream = numericalize(tokenize(vtexts), vocab) if vtexts else train[len(train) - n_tail :]
    if not vtexts:
        train = train[: len(train) - n_tail]
    log(
        f"tokenized in {time.time() - t0:.0f}s: {len(train):,} train and {len(vstream):,} "
        f"valid tokens, vocab {len(vocab):,}"
    )
    with atomic_writer(cache) as f:
        np.savez(f, train=train, valid=vstream)
    (workdir / "vocab.json").write_text(json.dumps(vocab))
    return train, vstream, vocab


def pick_device(want: str = "auto") -> str:
    """'cuda' or 'cpu' for a pretraining run: auto takes CUDA when torch sees a GPU."""

    if want not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"unknown device {want!r}", "choose auto, cpu or cuda")
    has_cuda = torch.cuda.is_available()
    if want == "cuda" and not has_cuda:
        raise ConfigError(
            "--device cuda, but torch sees no CUDA device here",
            "use --device cpu (or auto), or install a CUDA build of torch",
        )
    return "cuda" if want == "cuda" or (want == "auto" and has_cuda) else "cpu"


def pretrain(
    corpus: list[Path],
    workdir: Path,
    cfg: PretrainConfig,
    *,
    valid: list[Path] | None = None,
    max_minutes: float | None = None,
    log: Callable[[str], None] = print,
    device: str = "cpu",
) -> PretrainResult | None:
    """Train (or resume) a base LM in `workdir` on `device` (a runtime choice: a run may move
    between machines); returns None if stopped by `max_minutes`."""
    cfg = _stored_config(workdir, cfg, log)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    train, vstream, vocab = prepare(corpus, valid or [], cfg, workdir, log)
    if cfg.backward:
        # Reversing the whole stream reverses every text and their order: fastai's backwards
        # language model (it flips each text) sees the same windows, up to the text order.
        train, vstream = train[::-1].copy(), vstream[::-1].copy()
    run = _start(train, vocab, cfg, workdir, torch.device(device), log)
    if not _train_steps(run, train, cfg, max_minutes, log):
        return None
    run.checkpoint()
    stats = _held_out_stats(run, train, vstream, cfg, log)
    (workdir / "stats.json").write_text(json.dumps(stats, indent=1))
    sd = {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()}
    return PretrainResult(model_cfg=run.model_cfg, vocab=vocab, state_dict=sd, stats=stats)


def _stored_config(
    workdir: Path, cfg: PretrainConfig, log: Callable[[str], None]
) -> PretrainConfig:
    """The run's configuration: the one stored in `workdir` when resuming, else `cfg` (stored)."""
    if cfg.size not in SIZES:
        raise ConfigError(f"unknown size {cfg.size!r}", f"choose one of {', '.join(SIZES)}")
    workdir.mkdir(parents=True, exist_ok=True)
    cfg_path = workdir / "config.json"
    if cfg_path.exists():
        saved = from_dict(PretrainConfig, json.loads(cfg_path.read_text()), str(cfg_path))
        if saved != cfg:
            log(f"resuming with the configuration stored in {cfg_path}")
        return saved
    cfg_path.write_text(json.dumps(to_dict(cfg), indent=1))
    return cfg


@dataclass
class _Run:
    """A pretraining run in progress: model, optimizer, position and timing."""

    model: Any
    model_cfg: ModelConfig
    opt: Any
    dev: Any
    prior: Any
    ckpt_path: Path
    total_steps: int
    steps_per_epoch: int
    budget_minutes: float
    step: int = 0
    elapsed: float = 0.0  # seconds trained before this process
    history: list = field(default_factory=list)
    start: float = field(default_factory=time.time)

    def progress(self) -> float:
        """Share of the run done: by steps, or by time where a time budget is set."""
        p = self.step / self.total_steps
        if self.budget_minutes > 0:
            p = max(p, (self.elapsed + time.time() - self.start) / 60 / self.budget_minutes)
        return p

    def checkpoint(self) -> None:
        """Save model, optimizer, position and RNG state (atomic)."""
        _save_ckpt(
            self.ckpt_path,
            {
                "model": self.model.state_dict(),
                "opt": self.opt.state_dict(),
                "step": self.step,
                "elapsed": self.elapsed + time.time() - self.start,
                "history": json.dumps(self.history),
                "rng": torch.get_rng_state(),
            },
        )


def _start(
    train: Any,
    vocab: list[str],
    cfg: PretrainConfig,
    workdir: Path,
    dev: Any,
    log: Callable[[str], None],
) -> _Run:
    """A new model (decoder bias at the unigram prior) and optimizer, or the checkpoint's."""
    model_cfg = replace(SIZES[cfg.size], vocab_size=len(vocab))
    torch.manual_seed(cfg.seed)
    model = build_lm(model_cfg, drop_mult=cfg.drop_mult)
    # Start the decoder bias at the log unigram prior. Without it (and without AR/TAR below),
    # Adam's first steps push the last LSTM layer to a saturated constant that encodes the
    # unigram distribution through the tied decoder; gradients then vanish and the loss sits
    # at the unigram entropy for good (the first shipped base, perplexity 411, did exactly that).
    prior = unigram_log_probs(train, len(vocab))
    model[1].decoder.bias.data = torch.from_numpy(prior).float()
    model.to(dev)
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay
    )
    steps_per_epoch = (len(train) - 1) // cfg.batch_size // cfg.bptt
    if steps_per_epoch < 1:
        raise DataError(
            f"the corpus has {len(train):,} tokens, fewer than one batch "
            f"({cfg.batch_size} x {cfg.bptt})",
            "add more text or use a smaller batch size",
        )
    total_steps = max(1, cfg.max_tokens // (cfg.batch_size * cfg.bptt))
    run = _Run(
        model,
        model_cfg,
        opt,
        dev,
        prior,
        workdir / "checkpoint.pt",
        total_steps,
        steps_per_epoch,
        cfg.time_budget_minutes,
    )
    if run.ckpt_path.exists():
        ck = torch.load(run.ckpt_path, weights_only=True, map_location="cpu")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        run.step, run.elapsed, run.history = ck["step"], ck["elapsed"], json.loads(ck["history"])
        torch.set_rng_state(ck["rng"])
        log(f"resumed at step {run.step:,}/{total_steps:,} ({run.elapsed / 60:.1f} min trained)")
    run.start = time.time()
    return run


def _train_steps(
    run: _Run,
    train: Any,
    cfg: PretrainConfig,
    max_minutes: float | None,
    log: Callable[[str], None],
) -> bool:
    """Train until the run is done (True) or `max_minutes` stop it, checkpointed (False)."""
    model, opt, dev = run.model, run.opt, run.dev
    last_ckpt, win_t, win_tok = time.time(), time.time(), 0
    model.train()
    while run.progress() < 1:
        epoch, in_epoch = divmod(run.step, run.steps_per_epoch)
        model.reset()
        for _, x, y in _batches(train, cfg.batch_size, cfg.bptt, start_step=in_epoch):
            for g in opt.param_groups:
                g["lr"] = _lr_at(run.progress(), cfg.lr)
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            loss = _step(model, opt, x, y, cfg, dev)
            run.step += 1
            win_tok += x.numel()
            if run.step % 50 == 0:
                rate, loss_v = win_tok / (time.time() - win_t), loss.item()
                run.history.append(
                    {
                        "step": run.step,
                        "loss": round(loss_v, 4),
                        "tok_s": round(rate),
                        "epoch": epoch,
                    }
                )
                log(
                    f"step {run.step:,} ({run.progress():.0%}) epoch {epoch} loss {loss_v:.3f} "
                    f"{rate:,.0f} tok/s"
                )
                win_t, win_tok = time.time(), 0
            now = time.time()
            if now - last_ckpt > cfg.checkpoint_minutes * 60:
                run.checkpoint()
                last_ckpt = now
            if max_minutes is not None and now - run.start > max_minutes * 60:
                run.checkpoint()
                log(f"stopped after {max_minutes} min at step {run.step:,}; rerun to resume")
                return False
            if run.progress() >= 1:
                break
    return True


def _step(model: Any, opt: Any, x: Any, y: Any, cfg: PretrainConfig, dev: Any) -> Any:
    """One optimizer step on batch (x, y): cross-entropy plus fastai's AR/TAR; the loss tensor
    (read with .item() only when logged: on a GPU each read waits for the device)."""
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.bf16):
        logits, raw, dropped = model(x)  # logits: (bs, bptt, vocab)
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1))
        # fastai's RNNRegularizer (AR on dropped, TAR on raw last-layer outputs).
        reg = cfg.alpha * dropped.float().pow(2).mean()
        reg = reg + cfg.beta * (raw[:, 1:] - raw[:, :-1]).float().pow(2).mean()
    opt.zero_grad(set_to_none=True)
    (loss + reg).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
    opt.step()
    return loss.detach()


def _held_out_stats(
    run: _Run, train: Any, vstream: Any, cfg: PretrainConfig, log: Callable[[str], None]
) -> dict[str, Any]:
    """Held-out perplexity (and the unigram prior's) and the run's statistics."""
    tokens_per_step = cfg.batch_size * cfg.bptt
    eval_bs = max(1, min(32, (len(vstream) - 1) // (cfg.bptt * 4)))
    ppl = evaluate_perplexity(run.model, vstream, bs=eval_bs, bptt=cfg.bptt, bf16=False)
    train_minutes = (run.elapsed + time.time() - run.start) / 60
    unigram_ppl = unigram_perplexity(run.prior, vstream)
    log(
        f"done: {run.step:,} steps, {run.step * tokens_per_step:,} tokens, "
        f"{train_minutes:.1f} min, held-out perplexity {ppl:.1f} (unigram {unigram_ppl:.1f})"
    )
    return {
        "steps": run.step,
        "tokens_seen": run.step * tokens_per_step,
        "train_tokens_available": int(len(train)),
        "valid_tokens": int(len(vstream)),
        "valid_perplexity": round(ppl, 2),
        "unigram_perplexity": round(unigram_ppl, 2),
        "train_minutes": round(train_minutes, 1),
        "config": to_dict(cfg),
        "history": run.history[-20:],
    }
