"""Memory planner: pure arithmetic from a model shape to bytes, and the largest safe batch.

The model is fastai's AWD-LSTM trained with fastai's Adam on the CPU/GPU allocator; the
coefficients marked "calibrated" were fitted on measured peak RSS (bench/planner_validate.py,
docs/planner.md) and the rest follow from the layer shapes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from edge_tl.config import ModelConfig
from edge_tl.errors import ConfigError, DeviceError
from edge_tl.hardware.device import Hardware
from edge_tl.hardware.profiles import DeviceProfile
from edge_tl.hardware.runtime import choose_runtime

MiB = 2**20
GiB = 2**30
MODES = ("lm_train", "clas_train", "inference")
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
FP32 = 4

# fastai's classifier: SentenceEncoder chunk length and the tokens kept for backprop.
CLAS_BPTT = 72
CLAS_MAX_LEN = 72 * 20
CLAS_HEAD_HIDDEN = 50  # fastai's default lin_ftrs=[50]


@dataclass(frozen=True)
class Coefficients:
    """The planner's fitted constants; each multiplies a shape-derived byte count."""

    runtime: float  # bytes: RSS after importing torch + fastai, plus allocator slack
    lstm_floats_per_unit: float  # values alive per token per LSTM output unit in backward
    logit_copies: float  # vocab-sized fp32 tensors per token at the LM peak
    emb_copies: float  # extra vocab x emb fp32 matrices at the step's peak
    weight_drop_copies: float  # weight_hh-sized fp32 tensors kept per recurrent forward call


# Fitted by `bench/planner_validate.py --fit` (least squares on relative error over the 11
# "fit" rows of docs/planner.md; the 7 "check" rows were not used). Each lands where the
# physics says it should: runtime above the 375 MiB measured right after import (thread
# pools, allocator slack), ~9 floats per LSTM unit (input projection, activated gates, cell,
# tanh(cell), output), 3.5 vocab-sized copies per token (logits, log-softmax, gradients),
# ~2 embedding copies (embedding dropout's masked matrix and its gradient) and ~3 weight_hh
# copies per recurrent call (dropped weight, fp32 noise, gradient).
CALIBRATED = Coefficients(
    runtime=434 * MiB,
    lstm_floats_per_unit=8.9,
    logit_copies=3.5,
    emb_copies=1.7,
    weight_drop_copies=2.7,
)


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak bytes of one configuration, with a per-component breakdown."""

    mode: str
    dtype: str
    seq_len: int
    batch_size: int
    fixed: int  # bytes that do not depend on the batch size
    per_sample: int  # bytes added by each sample of the batch
    breakdown: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Estimated peak bytes for `batch_size` samples."""
        return self.fixed + self.per_sample * self.batch_size


def n_params(cfg: ModelConfig, mode: str, n_class: int = 2) -> int:
    """Trainable parameters of the LM (lm_train) or the classifier (clas_train, inference)."""
    if mode == "lm_train":
        return cfg.n_params(with_decoder=True)
    head_in = 3 * cfg.emb_sz  # masked concat pooling: last, max, mean
    # fastai's LinBnDrop: BatchNorm (weight + bias) then a Linear without bias.
    head = 2 * head_in + head_in * CLAS_HEAD_HIDDEN
    head += 2 * CLAS_HEAD_HIDDEN + CLAS_HEAD_HIDDEN * n_class
    return cfg.n_params(with_decoder=False) + head


def _check(mode: str, dtype: str, seq_len: int, batch_size: int) -> None:
    if mode not in MODES:
        raise ConfigError(f"unknown planning mode {mode!r}", f"use one of: {', '.join(MODES)}")
    if dtype not in DTYPE_BYTES:
        raise ConfigError(f"unknown dtype {dtype!r}", f"use one of: {', '.join(DTYPE_BYTES)}")
    if seq_len < 1 or batch_size < 1:
        raise ConfigError(f"seq_len and batch_size must be >= 1, got {seq_len} and {batch_size}")


def estimate_memory(
    cfg: ModelConfig,
    seq_len: int,
    dtype: str,
    mode: str,
    batch_size: int = 1,
    coef: Coefficients = CALIBRATED,
) -> MemoryEstimate:
    """Estimate peak bytes of training (lm_train/clas_train) or inference at `batch_size`."""
    _check(mode, dtype, seq_len, batch_size)
    act = DTYPE_BYTES[dtype]  # activations follow the (autocast) compute dtype
    train = mode != "inference"
    p = n_params(cfg, mode)
    layers = cfg.lstm_layers()
    raw_hh = sum(4 * o * o for _, o in layers)  # elements of all weight_hh matrices
    # Tokens whose activations are alive at the peak: the LM keeps one bptt window; the
    # classifier keeps the last CLAS_MAX_LEN tokens, run as CLAS_BPTT-long chunks.
    kept = seq_len if mode == "lm_train" else min(seq_len, CLAS_MAX_LEN)
    calls = 1 if mode == "lm_train" else -(-kept // CLAS_BPTT)
    b: dict[str, int] = {"runtime": int(coef.runtime)}
    if train:
        # Master weights, gradients and both Adam moments stay fp32 under autocast.
        b["weights"] = (p + raw_hh) * FP32  # + WeightDropout's module copy of weight_hh
        b["gradients"] = p * FP32
        b["optimizer"] = 2 * p * FP32
        # Every recurrent forward call keeps a dropped weight_hh and its noise for backward.
        b["weight_dropout"] = int(coef.weight_drop_copies * calls * raw_hh * FP32)
        b["embedding_transient"] = int(coef.emb_copies * cfg.vocab_size * cfg.emb_sz * FP32)
    else:
        b["weights"] = (p + raw_hh) * act
    per_token = 0.0
    units = sum(o for _, o in layers)
    if train:
        dropouts = cfg.emb_sz * 2 + sum(o for _, o in layers[:-1])  # embedding, input, hidden
        per_token += (coef.lstm_floats_per_unit * units + 2 * dropouts) * act
        if mode == "lm_train":
            per_token += 2 * cfg.emb_sz * act  # output dropout, AR/TAR terms
            per_token += coef.logit_copies * cfg.vocab_size * FP32  # softmax runs in fp32
        per_sample = per_token * kept
    else:
        # No graph: only one chunk's gates, cell and outputs are alive at a time, plus the
        # encoder outputs of every kept chunk (concatenated for pooling).
        chunk = min(seq_len, CLAS_BPTT)
        per_sample = sum(6 * o + i for i, o in layers) * act * chunk
        per_sample += 2 * kept * cfg.emb_sz * act
    if mode != "lm_train" and train:
        per_sample += kept * cfg.emb_sz * act  # concatenated encoder outputs for pooling
    b["activations"] = int(per_sample) * batch_size
    fixed = sum(v for k, v in b.items() if k != "activations")
    return MemoryEstimate(mode, dtype, seq_len, batch_size, fixed, int(per_sample), b)


def max_batch_size(
    cfg: ModelConfig,
    seq_len: int,
    dtype: str,
    mode: str,
    budget: int,
    cap: int | None = None,
    coef: Coefficients = CALIBRATED,
) -> int:
    """Largest batch whose estimate fits in `budget` bytes (at most `cap`); DeviceError if none."""
    least = min_batch(mode)
    est = estimate_memory(cfg, seq_len, dtype, mode, least, coef)
    if est.total > budget:
        what = "one sample" if least == 1 else f"{least} samples"
        raise DeviceError(
            f"the model does not fit: {what} of {mode} needs about {_gib(est.total)} but the "
            f"budget is {_gib(budget)} ({_gib(est.total - budget)} short)",
            "use a device profile with a larger memory budget, a shorter sequence length, "
            "or a smaller base model",
        )
    n = least + (budget - est.total) // max(est.per_sample, 1)
    return int(max(least, min(n, cap)) if cap is not None else n)


def min_batch(mode: str) -> int:
    """Smallest usable batch: the classifier head's BatchNorm needs 2 samples in training."""
    return 2 if mode == "clas_train" else 1


def _gib(n: int) -> str:
    return f"{n / GiB:.2f} GiB"


# On a GPU the CUDA context lives outside the caching allocator; what the allocator sees
# at rest is only the tensors, so the runtime term is this reserve instead of the CPU's RSS.
CUDA_RUNTIME_RESERVE = 512 * MiB


@dataclass(frozen=True)
class Plan:
    """Device, dtype, threads and the largest safe batch for one job on one machine."""

    profile: str
    mode: str
    device: str
    dtype: str
    autocast: bool
    threads: int
    batch_size: int
    seq_len: int  # bptt for the LM, tokens kept per document for the classifier
    budget: int  # bytes the profile lets edge_tl use here
    estimate: MemoryEstimate  # at `batch_size`
    model_params: int
    fits: bool
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """JSON-ready form."""
        out = dataclasses.asdict(self)
        out["estimate"] = {**dataclasses.asdict(self.estimate), "total": self.estimate.total}
        return out


def memory_budget(hw: Hardware, profile: DeviceProfile, device: str) -> int:
    """Bytes edge_tl may use: the profile's share of VRAM (discrete GPU) or of RAM, capped
    at what is free now."""
    if device == "cuda" and hw.cuda and not hw.is_jetson:
        gpu = hw.cuda[0]
        return int(min(profile.memory_budget * gpu.total_bytes, gpu.free_bytes))
    # CPU, MPS and Jetson (unified memory): a share of system RAM.
    return int(min(profile.memory_budget * hw.ram_total, hw.ram_available))


def plan(hw: Hardware, profile: DeviceProfile, cfg: ModelConfig, mode: str = "lm_train") -> Plan:
    """Choose device, dtype, threads and batch size for `cfg` under `profile` on `hw`."""

    if mode not in MODES:
        raise ConfigError(f"unknown planning mode {mode!r}", f"use one of: {', '.join(MODES)}")
    rt = choose_runtime(hw, profile)
    seq_len = profile.bptt if mode == "lm_train" else profile.max_seq_len
    budget = memory_budget(hw, profile, rt.device)
    coef = CALIBRATED
    if rt.device == "cuda":
        # A Jetson's CPU process and CUDA context share one RAM; a discrete GPU holds the
        # context only.
        extra = coef.runtime if hw.is_jetson else 0
        coef = dataclasses.replace(coef, runtime=CUDA_RUNTIME_RESERVE + extra)
    params = n_params(cfg, mode)
    warnings: list[str] = []
    if params > profile.max_model_params:
        warnings.append(
            f"the base has {params / 1e6:.1f}M parameters, more than the "
            f"{profile.max_model_params / 1e6:.1f}M profile {profile.name!r} is meant to "
            "fine-tune; expect slow steps"
        )
    least = min_batch(mode)
    one = estimate_memory(cfg, seq_len, rt.dtype, mode, least, coef)
    fits = one.total <= budget
    if fits:
        bs = max_batch_size(cfg, seq_len, rt.dtype, mode, budget, profile.max_batch_size, coef)
    else:
        bs = least
        warnings.append(
            f"the base does not fit: {mode} needs about {_gib(one.total)} at batch size {bs} but "
            f"the budget is {_gib(budget)} ({_gib(one.total - budget)} short); use a smaller "
            "base, a shorter sequence length or a profile with a larger memory budget"
        )
    est = estimate_memory(cfg, seq_len, rt.dtype, mode, bs, coef)
    return Plan(
        profile.name,
        mode,
        rt.device,
        rt.dtype,
        rt.autocast,
        rt.threads,
        bs,
        seq_len,
        budget,
        est,
        params,
        fits,
        tuple(warnings),
    )
