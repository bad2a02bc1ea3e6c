"""Memory planner: parameter counts vs real fastai models, known-answer arithmetic, monotonicity,
batch-size search and plans on faked machines."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_tl.awd_lstm import build_classifier, build_lm
from edge_tl.config import ModelConfig
from edge_tl.errors import ConfigError, DeviceError
from edge_tl.hardware.device import CudaDevice, Hardware
from edge_tl.hardware.planner import (
    CALIBRATED,
    Coefficients,
    estimate_memory,
    max_batch_size,
    memory_budget,
    min_batch,
    n_params,
    plan,
)
from edge_tl.hardware.profiles import load_profile

GiB = 2**30
TINY = ModelConfig(vocab_size=10, emb_sz=4, n_hid=6, n_layers=2)
SIMPLE = Coefficients(
    runtime=1000, lstm_floats_per_unit=10, logit_copies=3, emb_copies=2, weight_drop_copies=2
)


def _count(model) -> int:  # type: ignore[no-untyped-def]
    return sum(p.numel() for p in model.parameters())  # parameters() dedups the tied weight


@pytest.mark.parametrize(
    "cfg",
    [
        TINY,
        ModelConfig(vocab_size=300, emb_sz=16, n_hid=24, n_layers=3),
        ModelConfig(vocab_size=50, emb_sz=8, n_hid=8, n_layers=1),
    ],
)
def test_param_counts_match_real_fastai_models(cfg):
    assert n_params(cfg, "lm_train") == _count(build_lm(cfg))
    assert n_params(cfg, "clas_train") == _count(build_classifier(cfg, n_class=2))
    assert n_params(cfg, "clas_train", n_class=5) == _count(build_classifier(cfg, n_class=5))


def test_known_answer_lm_train():
    # By hand for vocab 10, emb 4, hidden 6, 2 layers (layer 0: 4->6, layer 1: 6->4):
    # params 10*4 + (4*6*(4+6) + 8*6) + (4*4*(6+4) + 8*4) + 10 (decoder bias) = 530
    # weight_hh elements 4*6*6 + 4*4*4 = 208
    fixed = 1000 + (530 + 208) * 4 + 530 * 4 + 2 * 530 * 4 + 2 * 1 * 208 * 4 + 2 * 10 * 4 * 4
    assert fixed == 12296
    # per token: (10 floats * (6+4) units + 2 * (4+4+6) dropout values) * 4 bytes
    #          + 2 * 4 * 4 (output dropout, AR/TAR) + 3 * 10 * 4 (logits)
    per_token = (10 * 10 + 2 * 14) * 4 + 2 * 4 * 4 + 3 * 10 * 4
    est = estimate_memory(TINY, 5, "fp32", "lm_train", 3, SIMPLE)
    assert (est.fixed, est.per_sample) == (fixed, 5 * per_token)
    assert est.total == 12296 + 3 * 5 * 664 == 22256
    assert sum(est.breakdown.values()) == est.total
    assert est.breakdown["optimizer"] == 2 * est.breakdown["gradients"] == 4240


def test_known_answer_clas_train_counts_chunks():
    # Classifier params: 530 - 10 (no decoder) + head: BN(12) 24 + 12*50 + BN(50) 100 + 50*2
    params = 520 + 24 + 600 + 100 + 100
    assert n_params(TINY, "clas_train") == params == 1344
    est = estimate_memory(TINY, 150, "fp32", "clas_train", 2, SIMPLE)
    # 150 tokens = 3 chunks of 72 -> three dropped weight_hh copies kept for backward
    assert est.breakdown["weight_dropout"] == 2 * 3 * 208 * 4
    per_token = (10 * 10 + 2 * 14) * 4 + 4 * 4  # + concatenated encoder output (emb)
    assert est.per_sample == 150 * per_token
    # beyond fastai's max_len (1440) earlier chunks are freed: memory stops growing
    long = estimate_memory(TINY, 5000, "fp32", "clas_train", 2, SIMPLE)
    at_max = estimate_memory(TINY, 1440, "fp32", "clas_train", 2, SIMPLE)
    assert long.total == at_max.total


def test_inference_has_no_gradients_or_optimizer():
    est = estimate_memory(TINY, 100, "fp32", "inference", 4, SIMPLE)
    assert "gradients" not in est.breakdown and "optimizer" not in est.breakdown
    assert est.breakdown["weights"] == (1344 + 208) * 4


def test_bad_arguments():
    with pytest.raises(ConfigError, match="unknown planning mode 'train'"):
        estimate_memory(TINY, 5, "fp32", "train")
    with pytest.raises(ConfigError, match="unknown dtype 'int8'"):
        estimate_memory(TINY, 5, "int8", "lm_train")
    with pytest.raises(ConfigError, match="must be >= 1"):
        estimate_memory(TINY, 0, "fp32", "lm_train")


cfgs = st.builds(
    ModelConfig,
    vocab_size=st.integers(10, 80000),
    emb_sz=st.integers(4, 800),
    n_hid=st.integers(4, 2000),
    n_layers=st.integers(1, 4),
)
modes = st.sampled_from(["lm_train", "clas_train", "inference"])


@settings(max_examples=200, deadline=None)
@given(cfgs, st.integers(1, 3000), modes, st.integers(1, 256))
def test_monotone_in_every_size(cfg, seq, mode, bs):
    base = estimate_memory(cfg, seq, "fp32", mode, bs).total
    assert estimate_memory(cfg, seq, "fp32", mode, bs + 1).total > base
    assert estimate_memory(cfg, seq + 1, "fp32", mode, bs).total >= base
    for key in ("vocab_size", "emb_sz", "n_hid", "n_layers"):
        if key == "n_layers" and cfg.n_hid < cfg.emb_sz:
            continue  # a narrow extra layer can replace a wide emb->emb one: fewer weights
        bigger = dataclasses.replace(cfg, **{key: getattr(cfg, key) + 1})
        grown = estimate_memory(bigger, seq, "fp32", mode, bs).total
        # a 1-layer AWD-LSTM maps emb -> emb, so its hidden size is unused
        assert grown > base if (key, cfg.n_layers) != ("n_hid", 1) else grown == base, key
    assert estimate_memory(cfg, seq, "bf16", mode, bs).total <= base
    if mode != "inference":
        assert base > estimate_memory(cfg, seq, "fp32", "inference", bs).total


@settings(max_examples=200, deadline=None)
@given(cfgs, st.integers(1, 2000), modes, st.integers(1, 64 * GiB), st.integers(1, 512))
def test_max_batch_size_is_the_largest_that_fits(cfg, seq, mode, budget, cap):
    try:
        bs = max_batch_size(cfg, seq, "fp32", mode, budget, cap)
    except DeviceError:
        assert estimate_memory(cfg, seq, "fp32", mode, min_batch(mode)).total > budget
        return
    least = 2 if mode == "clas_train" else 1
    assert least <= bs <= max(cap, least)
    assert estimate_memory(cfg, seq, "fp32", mode, bs).total <= budget
    if bs < cap:
        assert estimate_memory(cfg, seq, "fp32", mode, bs + 1).total > budget


def test_classifier_needs_two_samples():
    two = estimate_memory(TINY, 72, "fp32", "clas_train", 2).total
    with pytest.raises(DeviceError, match="^the model does not fit: 2 samples of clas_train"):
        max_batch_size(TINY, 72, "fp32", "clas_train", two - 1)
    assert max_batch_size(TINY, 72, "fp32", "clas_train", two, cap=1) == 2


def test_max_batch_size_error_says_by_how_much():
    need = estimate_memory(ModelConfig(), 70, "fp32", "lm_train", 1).total
    budget = need - GiB // 2
    with pytest.raises(DeviceError) as e:
        max_batch_size(ModelConfig(), 70, "fp32", "lm_train", budget)
    assert str(e.value) == (
        f"the model does not fit: one sample of lm_train needs about {need / GiB:.2f} GiB but "
        f"the budget is {budget / GiB:.2f} GiB (0.50 GiB short). use a device profile with a "
        "larger memory budget, a shorter sequence length, or a smaller base model"
    )


def test_wt103_lm_figures_stay_plausible():
    # Guard against a mis-edited constant: full WT103 LM at bptt 70, batch 16, fp32 is
    # 44.3M params * 16 bytes (weights, grads, Adam) plus ~1 MiB of activations per token.
    est = estimate_memory(ModelConfig(), 70, "fp32", "lm_train", 16)
    assert 2.0 * GiB < est.total < 3.5 * GiB
    assert CALIBRATED.runtime > 300 * 2**20


def _hw(ram_gib: float, cuda=(), board=None, release=None) -> Hardware:
    return Hardware(
        "x86_64",
        "cpu",
        2,
        2,
        ("avx512_bf16",),
        int(ram_gib * GiB),
        int(ram_gib * GiB * 0.9),
        tuple(cuda),
        False,
        board,
        release,
    )


def test_plan_on_this_kind_of_box():
    p = plan(_hw(23.5), load_profile("laptop-cpu-16gb"), ModelConfig(), "lm_train")
    assert (p.device, p.dtype, p.autocast, p.threads, p.seq_len) == ("cpu", "bf16", True, 2, 70)
    assert p.budget == int(0.6 * 23.5 * GiB)
    assert p.fits and p.warnings == () and 1 <= p.batch_size <= 64
    assert p.estimate.total <= p.budget


def test_plan_warns_for_a_too_large_base_instead_of_swapping():
    p = plan(
        _hw(3.9, board="NVIDIA Jetson Nano Developer Kit"),
        load_profile("jetson-nano-4gb"),
        ModelConfig(),
        "lm_train",
    )
    assert p.model_params == ModelConfig().n_params()
    assert any("more than the 25.0M profile 'jetson-nano-4gb'" in w for w in p.warnings)


def test_plan_that_does_not_fit_is_flagged():
    p = plan(_hw(1.0), load_profile("cpu-small"), ModelConfig(), "clas_train")
    assert not p.fits and p.batch_size == 2  # BatchNorm in the head needs two samples
    assert any(
        w.startswith("the base does not fit: clas_train needs about")
        and "at batch size 2 but the budget is 0.50 GiB" in w
        for w in p.warnings
    )


def test_budget_uses_vram_on_a_discrete_gpu_and_ram_on_a_jetson():
    gpu = CudaDevice(0, "RTX", 24 * GiB, 20 * GiB, (8, 9))
    ws = load_profile("workstation-cuda")
    assert memory_budget(_hw(64, [gpu]), ws, "cuda") == 20 * GiB  # capped at free VRAM
    orin = CudaDevice(0, "Orin", 30 * GiB, 28 * GiB, (8, 7))
    jet = _hw(30.6, [orin], "Jetson AGX Orin", "# R36")
    agx = load_profile("jetson-agx-orin-32gb")
    assert memory_budget(jet, agx, "cuda") == int(0.75 * 30.6 * GiB)
    p = plan(jet, agx, ModelConfig(), "lm_train")
    assert (p.device, p.dtype, p.autocast) == ("cuda", "bf16", True)
    # unified memory: the CPU process and the CUDA context both count
    assert p.estimate.breakdown["runtime"] == CALIBRATED.runtime + 512 * 2**20
    p = plan(_hw(64, [gpu]), ws, ModelConfig(), "lm_train")
    assert p.estimate.breakdown["runtime"] == 512 * 2**20
    assert p.estimate.breakdown["activations"] == p.batch_size * p.estimate.per_sample
    # bf16 activations: half the fp32 LSTM bytes, logits stay fp32
    fp32 = estimate_memory(ModelConfig(), 70, "fp32", "lm_train", p.batch_size)
    assert p.estimate.per_sample < fp32.per_sample


def test_plan_rejects_unknown_mode():
    with pytest.raises(ConfigError, match="unknown planning mode"):
        plan(_hw(16), load_profile("laptop-cpu-16gb"), TINY, "finetune")
