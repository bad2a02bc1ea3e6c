"""What a training run decides before it trains: labels, the validation split, the task
vocabulary and the compute dtype (train.py runs the stages)."""

from __future__ import annotations

import math
import random as _random
from collections.abc import Sequence
from typing import Any

from edge_tl.errors import DataError
from edge_tl.train.config import TrainConfig
from edge_tl.train.engine import build_vocab


def build_vocab_for(docs: Sequence[Sequence[str]], cfg: TrainConfig) -> list[str]:
    """The task vocabulary under fastai's rules and cfg's min_freq / max_vocab."""

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
        raise DataError(
            f"the dataset has only one class ({names[0]!r})",
            "a classifier needs rows of at least two labels",
        )
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

    rng = _random.Random(seed)
    train, valid = [], []
    for c in sorted(set(y)):
        rows = [i for i, v in enumerate(y) if v == c]
        rng.shuffle(rows)
        n = max(1, round(len(rows) * valid_pct))
        valid += rows[:n]
        train += rows[n:]
    return sorted(train), sorted(valid)


__all__ = ["build_vocab_for", "check_labels", "stratified_split"]


def reverse_docs(docs: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Every text's tokens (or ids) in reverse order: what a backward network reads."""
    return [list(reversed(d)) for d in docs]
