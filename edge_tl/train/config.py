"""The typed run configuration: every training knob, resolved defaults -> profile -> overrides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_tl.config import ModelConfig, to_dict
from edge_tl.errors import ConfigError

DTYPES = ("auto", "bf16", "fp32", "fp16")
DISCRIMINATIVE = ("auto", "on", "off")
# fastai's ULMFiT classifier recipe (gradual unfreezing, discriminative lrs), the default before
# flat10: pass these settings to train a strong base (e.g. WT103) the paper's way.
ULMFIT_RECIPE: dict[str, Any] = {"stages": (1, 1, 1, 2), "lr": 2e-2, "discriminative": "auto"}
# The TF-IDF head's settings: compare trains the network alone and keeps them out of its setup.
HEAD_KEYS = (
    "tfidf_head",
    "tfidf_weight",
    "tfidf_nb",
    "tfidf_weight_auto",
    "tfidf_weight_min_rows",
    "tfidf_stack",
)
# The validation split never takes more than this share of the labelled rows.
VALID_MAX_PCT = 0.2


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a run; resolved once: defaults -> device profile -> config file -> flags."""

    seed: int = 42
    # Labelled rows held out: they report accuracy and, when asked, pick the classifier's best
    # epoch and the head's weight; at least `valid_min_rows` of them (at most VALID_MAX_PCT of
    # all rows). 0 by default: on the demo sample 200 rows and the best epoch took the network
    # from 0.790 to 0.744 and the shipped mix from 0.810 to 0.792 (2026-12-07, docs/benchmarks.md).
    valid_pct: float = 0.1
    valid_min_rows: int = 0
    # language-model stage (fastai's ULMFiT recipe: 1 frozen epoch, then unfrozen epochs)
    lm_frozen_epochs: int = 1
    lm_epochs: int = 1
    lm_lr: float = 2e-2
    lm_lr_unfrozen: float = 2e-3
    lm_drop_mult: float = 0.3
    # Frozen LM stage from a pretrained base: fastai also backpropagates through the frozen
    # LSTMs, only to reach the tied embedding, which the decoder path already trains; skipping
    # it makes that stage ~1.9x faster here at equal accuracy (bench/results/train.json).
    # True = fastai's exact recipe. A random-init LM (no base) always backpropagates: its
    # input embedding must learn through the LSTMs (tests/test_train_learns.py).
    lm_frozen_through_rnn: bool = False
    lm_valid_pct: float = 0.1
    scratch: bool = False  # random init, same architecture (the control arm)
    scratch_lm: bool = False  # with scratch, also train a from-scratch LM first
    # classifier stages: head; last two groups; last three; all (freeze_to(-1), -2, -3, none).
    # Default `flat10`: every layer from the first epoch, 10 epochs at one flat lr. On the
    # shipped base it beat ULMFiT's gradual unfreezing (stages 1,1,1,2, lr 2e-2, discriminative
    # auto) by 3-9 points at 500-2.5k IMDb labels (README, bench/results/compare-semi-flat10).
    # A strong base (WT103) may prefer fastai's recipe: pass those three settings.
    stages: tuple[int, ...] = (0, 0, 0, 10)
    lr: float = 1e-2  # discriminative: stage k gets lr * stage_lr_mults[k], layers a slice
    stage_lr_mults: tuple[float, ...] = (1.0, 0.5, 0.25, 0.05)
    lr_div: float = 2.6
    # on: layer groups get slice(lr / lr_div**4, lr) and stages decayed lrs (fastai's ULMFiT);
    # auto: on only for an encoder from a pretrained base; off: every layer and stage at `lr`.
    discriminative: str = "off"
    clas_drop_mult: float = 0.5
    wd: float = 0.01
    lin_ftrs: tuple[int, ...] = (50,)
    # Keep the weights of the classifier epoch with the lowest validation loss (in memory, and
    # in checkpoints), not the last epoch's. Off: it did not help the network where measured
    # (demo 0.790 -> 0.790 on 1 thread, IMDb 500 labels 0.751 -> 0.720; docs/benchmarks.md).
    best_epoch: bool = False
    # Also fit TF-IDF + LR on the training rows and average its probabilities with the
    # network's (docs/onnx-format.md v2): on IMDb that beat the network alone at every size
    # from 500 to 20k labels (+0.7 to +2.4 points, bench/results/compare-semi-gpu).
    tfidf_head: bool = True
    # NB-LR head: features scaled by naive-Bayes log-count ratios (folded into the weights, so
    # the exported head keeps its format). Off: on IMDb it was level with plain TF-IDF + LR from
    # 500 to 20k labels (-0.1 to +0.4 points) and 0.2-0.8 points worse on two-sentence texts
    # (bench/results/levers/head.json).
    tfidf_nb: bool = False
    # The head's share of the mix: 0 = the network alone, 1 = TF-IDF alone. With
    # tfidf_weight_auto it is chosen by log loss on the validation rows (the head's probabilities
    # there cross-fitted, the network's held out), and tfidf_weight is the fallback when fewer
    # than tfidf_weight_min_rows rows can say; `export --tfidf-weight` still overrides it.
    # On: on the demo sample (100 validation rows, last epoch) it chose 0.7 and scored 0.828
    # against 0.810 at the fixed 0.5, and at 500 IMDb labels (100 validation rows) 0.828
    # against 0.809; with fewer than tfidf_weight_min_rows validation rows (under 1,000 labels
    # at 10 %) the weight stays 0.5 (docs/benchmarks.md, "Accuracy levers").
    tfidf_weight: float = 0.5
    tfidf_weight_auto: bool = True
    tfidf_weight_min_rows: int = 100
    # With tfidf_weight_auto and as many validation rows, the mix is stacked instead: a logistic
    # regression on both parts' log-odds fitted on those rows (docs/onnx-format.md v3); the
    # chosen share stays the fallback. On: on the same IMDb networks +0.3 / +1.0 / +0.4 points
    # at 1k / 2.5k / 5k labels (3 seeds), two-sentence texts +0.4 / +1.9 / +0.7; -0.3 / -0.1 at
    # 10k / 20k (one seed each); demo 0.832 against the share's 0.828. The default private
    # export mixes at the share (docs/benchmarks.md, "Accuracy levers").
    tfidf_stack: bool = True
    # When the validation rows can choose nothing (best_epoch off, and too few of them for the
    # head's share: under 1,000 labels), the network also trains on them; its validation
    # metrics are then in-sample (`valid_in_sample`). On: at 500 IMDb labels +0.8 points for
    # what `train` ships, 3 seeds (docs/benchmarks.md, "Accuracy levers").
    train_on_unused_valid: bool = True
    # ULMFiT's forward + backward: the name of a base pretrained on reversed text beside the
    # forward one (the shipped pair: default and default-bwd). `train` then also fine-tunes it
    # on the reversed texts and trains a backward classifier; the network's probabilities are
    # the mean of both directions, mixed with the head as before. Empty: forward only. Off by
    # default: it doubles the network's training time (docs/benchmarks.md, "Accuracy levers").
    backward_base: str = ""
    # sizes (0 = from the memory planner / device profile)
    bs: int = 0
    lm_bs: int = 0
    bptt: int = 72
    max_len: int = 1440
    min_freq: int = 3
    max_vocab: int = 60000
    # speed
    dtype: str = "auto"  # auto: bf16 autocast on a CPU with native bf16 / CUDA, else fp32
    cache_head_features: bool = True
    threads: int = 0
    workers: int = 0  # tokenizer processes (0 = in this process)
    # architecture for --scratch when no base gives one
    arch: ModelConfig | None = None
    checkpoint_minutes: float = 10.0

    def __post_init__(self) -> None:
        # (ok, key, value, allowed): an error names the key, its value and what it may be.
        checks = [
            (0.0 < self.valid_pct < 1.0, "valid_pct", self.valid_pct, "a share between 0 and 1"),
            (
                0.0 < self.lm_valid_pct < 1.0,
                "lm_valid_pct",
                self.lm_valid_pct,
                "a share between 0 and 1",
            ),
            (
                len(self.stages) >= 1 and all(e >= 0 for e in self.stages),
                "stages",
                list(self.stages),
                "one or more epoch counts >= 0",
            ),
            (self.lm_epochs >= 0, "lm_epochs", self.lm_epochs, ">= 0"),
            (self.lm_frozen_epochs >= 0, "lm_frozen_epochs", self.lm_frozen_epochs, ">= 0"),
            (self.lr > 0, "lr", self.lr, "> 0"),
            (self.lm_lr > 0, "lm_lr", self.lm_lr, "> 0"),
            (self.lm_lr_unfrozen > 0, "lm_lr_unfrozen", self.lm_lr_unfrozen, "> 0"),
            (self.bs >= 0, "bs", self.bs, ">= 0 (0 = planner)"),
            (self.lm_bs >= 0, "lm_bs", self.lm_bs, ">= 0 (0 = planner)"),
            (self.bptt >= 8, "bptt", self.bptt, ">= 8"),
            # fastai's SentenceEncoder keeps the last max_len tokens in bptt-long chunks; below
            # 2 x bptt that window can hold only padding for a short document, and the pooling
            # (masked_concat_pool) fails with an IndexError after the LM stage.
            (
                self.max_len >= 2 * self.bptt,
                "max_len",
                self.max_len,
                f">= 2 x bptt ({2 * self.bptt} with bptt {self.bptt})",
            ),
            (self.dtype in DTYPES, "dtype", self.dtype, " | ".join(DTYPES)),
            (
                self.discriminative in DISCRIMINATIVE,
                "discriminative",
                self.discriminative,
                " | ".join(DISCRIMINATIVE),
            ),
            (self.checkpoint_minutes >= 0, "checkpoint_minutes", self.checkpoint_minutes, ">= 0"),
            (
                0.0 <= self.tfidf_weight <= 1.0,
                "tfidf_weight",
                self.tfidf_weight,
                "a share between 0 and 1",
            ),
            (self.valid_min_rows >= 0, "valid_min_rows", self.valid_min_rows, ">= 0"),
            (
                self.tfidf_weight_min_rows >= 1,
                "tfidf_weight_min_rows",
                self.tfidf_weight_min_rows,
                ">= 1",
            ),
            (self.min_freq >= 1, "min_freq", self.min_freq, ">= 1"),
            (self.max_vocab >= 16, "max_vocab", self.max_vocab, ">= 16"),
            (self.threads >= 0, "threads", self.threads, ">= 0 (0 = from the idle cores)"),
        ]
        for ok, key, value, want in checks:
            if not ok:
                raise ConfigError(
                    f"train config: {key} must be {want}",
                    f"got {value!r}; change the flag or the config file that sets it",
                )

    def valid_is_unused(self, n_valid: int) -> bool:
        """True when `n_valid` validation rows choose nothing: no best epoch, and the head's
        share (if chosen at all) falls back for want of rows."""
        chooses_weight = self.tfidf_head and self.tfidf_weight_auto
        return not self.best_epoch and (not chooses_weight or n_valid < self.tfidf_weight_min_rows)

    def valid_share(self, n_rows: int) -> float:
        """The share of `n_rows` labelled rows the validation split takes."""
        want = max(self.valid_pct, self.valid_min_rows / max(n_rows, 1))
        return min(want, max(self.valid_pct, VALID_MAX_PCT))

    def stage_lr(self, k: int, pretrained: bool = True) -> float:
        """Peak learning rate of classifier stage k (flat `lr` when not discriminative)."""
        if not self.use_discriminative(pretrained):
            return self.lr
        mults = self.stage_lr_mults
        return self.lr * (mults[k] if k < len(mults) else mults[-1])

    def use_discriminative(self, pretrained: bool) -> bool:
        """Whether layer groups get slice(lr / lr_div**4, lr) and stages decayed lrs."""
        return self.discriminative == "on" or (self.discriminative == "auto" and pretrained)


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    """JSON-ready TrainConfig (tuples as lists) that from_dict loads back exactly."""
    d = to_dict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


__all__ = [
    "DTYPES",
    "DISCRIMINATIVE",
    "HEAD_KEYS",
    "ULMFIT_RECIPE",
    "VALID_MAX_PCT",
    "TrainConfig",
    "config_dict",
]
