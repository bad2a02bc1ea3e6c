"""`edge-tl train`'s CPU time estimate: FLOPs per token by what each stage trains."""

from __future__ import annotations

import dataclasses

import pytest

from edge_tl.config import ModelConfig
from edge_tl.train.config import ULMFIT_RECIPE, TrainConfig
from edge_tl.train.runner import GFLOPS_PER_THREAD_FP32, estimate_training, flops_per_token

# Two LSTM layers: 4*8*(4+8) = 384 and 4*4*(8+4) = 192 multiply-adds per token (the last layer
# outputs emb_sz); the tied decoder 100*4 = 400.
SMALL = ModelConfig(vocab_size=100, emb_sz=4, n_hid=8, n_layers=2)


def test_flops_per_token_known_answers() -> None:
    assert flops_per_token(SMALL, lm=False) == 6 * 576  # forward 2, backward 4, every layer
    assert flops_per_token(SMALL, lm=False, train_layers=0) == 2 * 576  # forward only
    assert flops_per_token(SMALL, lm=False, train_layers=1) == 2 * 576 + 4 * 192  # top layer
    assert flops_per_token(SMALL, lm=False, train_layers=5) == 6 * 576
    assert flops_per_token(SMALL, lm=True) == 6 * 576 + 6 * 400
    assert flops_per_token(SMALL, lm=True, train_layers=0) == 2 * 576 + 6 * 400


def _clas_only(**kw: object) -> TrainConfig:
    return dataclasses.replace(TrainConfig(), lm_frozen_epochs=0, lm_epochs=0, **kw)


def test_all_layer_epochs_cost_more_than_gradual_unfreezing() -> None:
    """flat10 trains every layer for 10 epochs; fastai's 1,1,1,2 trains fewer layers early."""
    one = estimate_training(SMALL, _clas_only(stages=(0, 0, 0, 1)), 0, 1e6, "fp32", 1)
    assert one == pytest.approx(6 * 576 * 1e6 / GFLOPS_PER_THREAD_FP32)
    flat = estimate_training(SMALL, _clas_only(), 0, 1e6, "fp32", 1)
    assert flat == pytest.approx(10 * one)
    ulm = estimate_training(
        SMALL, _clas_only(stages=tuple(ULMFIT_RECIPE["stages"])), 0, 1e6, "fp32", 1
    )
    head = 2 * 576 * 1e6 / GFLOPS_PER_THREAD_FP32  # the cached features' forward pass
    top1 = (2 * 576 + 4 * 192) * 1e6 / GFLOPS_PER_THREAD_FP32
    assert ulm == pytest.approx(head + top1 + one + 2 * one)
    assert ulm < 4 * one  # the old model counted four full epochs


def test_frozen_lm_epoch_skips_the_lstm_backward_unless_asked() -> None:
    lm_only = dataclasses.replace(TrainConfig(), stages=(0, 0, 0, 0))
    fast = estimate_training(SMALL, lm_only, 1e6, 0, "fp32", 1)
    exact = estimate_training(
        SMALL, dataclasses.replace(lm_only, lm_frozen_through_rnn=True), 1e6, 0, "fp32", 1
    )
    assert exact == pytest.approx(2 * flops_per_token(SMALL, True) * 1e6 / GFLOPS_PER_THREAD_FP32)
    assert fast < exact


def test_threads_and_bf16_speed_it_up() -> None:
    tc = TrainConfig()
    base = estimate_training(SMALL, tc, 1e6, 1e6, "fp32", 1)
    assert estimate_training(SMALL, tc, 1e6, 1e6, "fp32", 2) == pytest.approx(base / 2)
    assert estimate_training(SMALL, tc, 1e6, 1e6, "bf16", 1) < base
