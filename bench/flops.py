"""Matmul work of an AWD-LSTM recipe and this CPU's matmul peak, for bench/bench_train.py.

FLOPs are counted by the model-FLOPs convention: the work the recipe defines (forward 2 FLOPs
per weight per token, backward 2 for input gradients and 2 for weight gradients of the layers
being trained), the same count for both arms whatever shortcuts an engine takes. Embedding
lookups, dropout, activations and the pooled classifier head are left out (under 1 %)."""

from __future__ import annotations

import time
from typing import Any


def lstm_macs(cfg: Any) -> list[int]:
    """Multiply-adds per token of each LSTM layer (4 gates over input and hidden)."""
    sizes = [cfg.emb_sz] + [cfg.n_hid] * (cfg.n_layers - 1) + [cfg.emb_sz]
    return [4 * out * (inp + out) for inp, out in zip(sizes[:-1], sizes[1:], strict=True)]


def lm_flops_per_token(cfg: Any, vocab: int, frozen: bool) -> float:
    """One LM training token: all layers, or (frozen) decoder weights + gradient to the input."""
    lstm, dec = sum(lstm_macs(cfg)), cfg.emb_sz * vocab
    if frozen:  # the tied embedding still learns through the frozen LSTMs (fastai's recipe)
        return 2 * (lstm + dec) + 2 * lstm + 4 * dec
    return 6 * (lstm + dec)


def clas_flops_per_token(cfg: Any, stage: int) -> float:
    """One classifier training token in stage k: the last k LSTM layers train (k >= 3: every
    layer and the embedding, so input gradients flow all the way down)."""
    layers = lstm_macs(cfg)
    if stage >= 3:
        return 6 * sum(layers)
    trained = layers[len(layers) - stage :]
    lowest = len(layers) - len(trained)
    # input gradients flow down to the lowest trained layer, weight gradients for each one
    return 2 * sum(layers) + 2 * sum(layers[lowest + 1 :]) + 2 * sum(trained)


def phase_gflop(tc: Any, phase: str, vocab: int, tokens: int, epochs: int) -> float:
    """Nominal GFLOP of a phase that trained `tokens` over `epochs` under recipe `tc`."""
    per_epoch = tokens / max(epochs, 1)
    if phase == "lm":
        work = tc.lm_frozen_epochs * lm_flops_per_token(tc.arch, vocab, True)
        work += tc.lm_epochs * lm_flops_per_token(tc.arch, vocab, False)
    else:
        work = sum(n * clas_flops_per_token(tc.arch, k) for k, n in enumerate(tc.stages))
    return per_epoch * work / 1e9


def peak_gflops(threads: int, n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Best GFLOP/s of an n x n matmul in fp32 and bf16 with `threads` threads."""
    import torch

    torch.set_num_threads(threads)
    out: dict[str, float] = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b  # warm-up: oneDNN picks and caches its kernel
        best = min(_timed(lambda a=a, b=b: a @ b) for _ in range(repeats))
        out[name] = 2 * n**3 / best / 1e9
    return out


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
