"""Every setting of a run, resolved in one place.

`resolve_config`: defaults -> device profile -> config file -> flags, into the frozen TrainConfig.
`resolve_runtime`: hardware x profile x model shape -> device, dtype, threads and batch sizes.
`train`, `compare`, the Python API and the benches all call these two.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from edge_tl.config import ModelConfig, from_dict
from edge_tl.errors import ConfigError
from edge_tl.hardware.device import Hardware, detect
from edge_tl.hardware.planner import plan
from edge_tl.hardware.profiles import DeviceProfile, auto_select, load_profile
from edge_tl.hardware.runtime import choose_runtime
from edge_tl.train.config import DTYPES, TrainConfig
from edge_tl.train.engine import thread_plan


@dataclass
class Run:
    """Per-run plumbing: device, dtype, sizes, progress, checkpoint hooks and resume state."""

    device: str = "cpu"
    dtype: str = "fp32"
    bs: int = 64
    lm_bs: int = 64
    progress: bool = True  # bars on a terminal, else one line per epoch; False: neither
    threads_why: str = ""  # why this many threads, for the plan line
    save: Callable[..., None] | None = None  # save(phase, stage, epoch, batch, learn, extra)
    resume: Any = None  # a checkpoint.Checkpoint to continue from
    log: Callable[[str], None] = field(default=lambda s: print(s, file=sys.stderr))
    extra: dict[str, Any] = field(default_factory=dict)

    def bars(self) -> bool:
        """Progress bars: only when asked for and stdout is a terminal (never into a log file)."""
        return self.progress and _is_terminal(sys.stdout)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def read_config_file(path: Path) -> dict[str, Any]:
    """TrainConfig keys from a TOML file (top level or a [train] table)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read train config {path}: {e}") from e
    return data.get("train", data)


def as_profile(profile: str | Path | DeviceProfile | None) -> DeviceProfile | None:
    """A profile given by name, TOML path or object (None stays None: chosen from hardware)."""
    return load_profile(profile) if isinstance(profile, str | Path) else profile


def pick_dtype(cfg: TrainConfig, device: str, runtime_dtype: str | None = None) -> str:
    """The training dtype: a --dtype flag, else what runtime.choose_runtime picked."""
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
        return bool(detect().cpu_bf16)
    except OSError:
        return False


def classifier_dtype(cfg: TrainConfig, run: Any, pretrained: bool) -> str:
    """The classifier's training dtype: fp32 for a random-init encoder under autocast."""
    # Measured on IMDb (bench/probes/clas_recipe.py --scratch): with bf16 autocast a random-init
    # AWD-LSTM classifier stayed at chance (0.50 dev at 1k and 2.5k, 10 epochs) and did not fit
    # its own training rows; in fp32 the same run reached 0.80. On an H200 (CUDA bf16, 2026-11-26,
    # bench/results/compare-semi-gpu) scratch stayed at chance at 500, 1k and 5k too. A
    # pretrained encoder trains the same in both (0.774 vs 0.777 at 500), so it keeps autocast.
    if cfg.dtype == "auto" and not pretrained and run.dtype != "fp32":
        return "fp32"
    return run.dtype


def resolve_runtime(
    cfg: TrainConfig,
    profile: str | Path | DeviceProfile | None,
    shape: ModelConfig,
    progress: bool,
    log: Callable[[str], None] | None = None,
) -> tuple[Hardware, DeviceProfile, Run]:
    """Hardware, profile and a Run with device, dtype, threads and planned batch sizes."""
    hw = detect()
    prof = as_profile(profile) or auto_select(hw)
    rt = choose_runtime(hw, prof)
    device, threads, rt_dtype = rt.device, rt.threads, rt.dtype
    lm_bs = plan(hw, prof, shape, "lm_train").batch_size
    bs = plan(hw, prof, shape, "clas_train").batch_size
    if cfg.threads:
        threads, why = cfg.threads, "set by --threads, the train config or the device profile"
    elif device == "cpu":
        threads, why = thread_plan(threads or torch.get_num_threads())
    else:
        why = f"{device} trains; the CPU only feeds it"
    if threads:
        torch.set_num_threads(threads)
    run = Run(
        device=device,
        dtype=pick_dtype(cfg, device, rt_dtype),
        progress=progress,
        bs=cfg.bs or min(bs, 64),
        lm_bs=cfg.lm_bs or min(lm_bs, 64),
        threads_why=why,
    )
    if log is not None:
        run.log = log
    return hw, prof, run


def resolve_config(
    profile: str | Path | DeviceProfile | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    config_file: Path | None = None,
) -> TrainConfig:
    """defaults -> device profile (bptt, max length, dtype, threads) -> config file -> overrides
    (flags; None values are flags not given)."""
    data: dict[str, Any] = {}
    profile = as_profile(profile)
    if profile is not None:
        data.update(
            bptt=profile.bptt,
            max_len=max(profile.max_seq_len, 2 * profile.bptt),  # TrainConfig needs 2 x bptt
            threads=profile.threads,
        )
        if profile.dtype in DTYPES:
            data["dtype"] = profile.dtype
    if config_file is not None:
        data.update(read_config_file(config_file))
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return from_dict(TrainConfig, data, "train config")


__all__ = [
    "Run",
    "as_profile",
    "classifier_dtype",
    "pick_dtype",
    "read_config_file",
    "resolve_config",
    "resolve_runtime",
]
