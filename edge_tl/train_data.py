"""What a training run decides before it trains: labels, the validation split, the task
vocabulary and the compute dtype (train.py runs the stages)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .errors import DataError
from .train_config import TrainConfig


def pick_dtype(cfg: TrainConfig, device: str, runtime_dtype: str | None = None) -> str:
    """The training dtype: a --dtype flag, else what device.choose_runtime picked."""
    import torch

    if cfg.dtype != "auto":
        if cfg.dtype == "bf16" and device == "cpu" and not _cpu_bf16():
            return "fp32"
        return cfg.dtype
    if runtime_dtype is not None:
        return runtime_dtype
    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if device == "cpu" and _cpu_bf16() else "fp32"


def _cpu_bf16() -> bool:
    try:
        from .device import detect

        return bool(detect().cpu_bf16)
    except (ImportError, AttributeError, OSError):
        return False


def build_vocab_for(docs: Sequence[Sequence[str]], cfg: TrainConfig) -> list[str]:
    """The task vocabulary under fastai's rules and cfg's min_freq / max_vocab."""
    from .fastcpu import build_vocab

    return list(build_vocab(docs, cfg.min_freq, cfg.max_vocab))


def check_labels(labels: Sequence[str | None], valid_pct: float) -> list[str]:
    """Label names (sorted) if the labelled rows can train a classifier, else DataError."""
    present = [x for x in labels if x is not None]
    if not present:
        raise DataError(
            "the dataset has no labelled rows",
            "import a dataset with a label column (unlabelled rows only help the LM: --lm-data)",
        )
    names = sorted(set(present))
    if len(names) < 2:
        raise DataError(f"the dataset has only one class ({names[0]!r})",
                        "a classifier needs rows of at least two labels")  # fmt: skip
    counts = {n: present.count(n) for n in names}
    need = max(2, math.ceil(1 / valid_pct))
    few = [n for n in names if counts[n] < need]
    if few:
        raise DataError(
            f"too few rows for the validation split: label {few[0]!r} has {counts[few[0]]} "
            f"(need at least {need} per label for a {valid_pct:.0%} split)",
            "add labelled rows, or raise valid_pct in the train config",
        )
    return names


def stratified_split(y: Sequence[int], valid_pct: float, seed: int) -> tuple[list[int], list[int]]:
    """Train and validation row indices, stratified by class, fixed by seed."""
    import random as _random

    rng = _random.Random(seed)
    train, valid = [], []
    for c in sorted(set(y)):
        rows = [i for i, v in enumerate(y) if v == c]
        rng.shuffle(rows)
        n = max(1, round(len(rows) * valid_pct))
        valid += rows[:n]
        train += rows[n:]
    return sorted(train), sorted(valid)


def classifier_dtype(cfg: TrainConfig, run: Any, pretrained: bool) -> str:
    """The classifier's training dtype: fp32 for a random-init encoder under autocast."""
    # Measured on IMDb (bench/probes/clas_recipe.py --scratch): with bf16 autocast a random-init
    # AWD-LSTM classifier stayed at chance (0.50 dev at 1k and 2.5k, 10 epochs) and did not fit
    # its own training rows; in fp32 the same run reached 0.80. On an H200 (CUDA bf16, session
    # 8, bench/results/compare-semi-gpu) scratch stayed at chance at 500, 1k and 5k too. A
    # pretrained encoder trains the same in both (0.774 vs 0.777 at 500), so it keeps autocast.
    if cfg.dtype == "auto" and not pretrained and run.dtype != "fp32":
        return "fp32"
    return run.dtype


__all__ = ["build_vocab_for", "check_labels", "classifier_dtype", "pick_dtype",
           "stratified_split"]  # fmt: skip
