"""Hardware detection: CPU, memory, cores, CUDA, MPS and Jetson boards.

Probing never imports torch unless a GPU can exist (an NVIDIA driver, a Jetson, or Apple
silicon), so `edge-tl doctor` stays quick on a CPU box. Every probe takes injectable paths or
callables so tests can fake a Jetson, a Raspberry Pi or a CUDA workstation.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil

from edge_tl.errors import DeviceError

T = TypeVar("T")
GiB = 2**30

# ISA features worth reporting (x86 /proc/cpuinfo "flags", ARM "Features").
ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "asimdhp",
    "asimddp",
    "fphp",
    "bf16",
    "i8mm",
    "sve",
    "sve2",
)
# Flags that mean the CPU computes bf16 natively (x86 AVX-512 BF16 / AMX, ARMv8.6 BF16).
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
CPU_INFO = Path("/proc/cpuinfo")
TEGRA_RELEASE = Path("/etc/nv_tegra_release")
DT_MODEL = Path("/proc/device-tree/model")
NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")


@dataclass(frozen=True)
class CudaDevice:
    """One CUDA device as torch sees it."""

    index: int
    name: str
    total_bytes: int
    free_bytes: int
    capability: tuple[int, int]

    @property
    def bf16(self) -> bool:
        """Ampere (sm_80) and newer compute bf16 natively; older GPUs get fp16."""
        return self.capability >= (8, 0)


@dataclass(frozen=True)
class Hardware:
    """What this machine offers: CPU, RAM, accelerators, board."""

    arch: str
    cpu_model: str
    physical_cores: int
    logical_cores: int  # usable by this process (CPU affinity)
    isa: tuple[str, ...]
    ram_total: int
    ram_available: int
    cuda: tuple[CudaDevice, ...] = ()
    mps: bool = False
    board_model: str | None = None  # /proc/device-tree/model (Jetson, Raspberry Pi)
    jetson_release: str | None = None  # first line of /etc/nv_tegra_release

    @property
    def cpu_bf16(self) -> bool:
        """Whether the CPU computes bf16 natively (so bf16 autocast is worth it)."""
        return any(f in self.isa for f in CPU_BF16_FLAGS)

    @property
    def is_jetson(self) -> bool:
        """An NVIDIA Jetson board (L4T release file or a device-tree model naming Jetson)."""
        return self.jetson_release is not None or "jetson" in (self.board_model or "").lower()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (with the derived flags)."""
        out = asdict(self)
        out["cuda"] = [{**asdict(d), "bf16": d.bf16} for d in self.cuda]
        out.update(cpu_bf16=self.cpu_bf16, is_jetson=self.is_jetson)
        return out


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def read_cpuinfo(path: Path = CPU_INFO, machine: str | None = None) -> tuple[str, tuple[str, ...]]:
    """CPU model name and the reported ISA features from a /proc/cpuinfo-style file."""
    machine = machine or platform.machine()
    text = _read_text(path) or ""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    if not flags and machine.lower() in ("arm64", "aarch64"):
        flags = {"asimd"}  # NEON is mandatory on ARMv8 (macOS has no /proc/cpuinfo)
    model = model or platform.processor() or machine
    return model, tuple(f for f in ISA_FLAGS if f in flags)


def read_board(
    tegra_release: Path = TEGRA_RELEASE, dt_model: Path = DT_MODEL
) -> tuple[str | None, str | None]:
    """(device-tree model, Jetson L4T release line), each None when absent."""
    model = _read_text(dt_model)
    release = _read_text(tegra_release)
    if model is not None:
        model = model.replace("\x00", "").strip() or None  # device-tree strings end in NUL
    release = release.strip().splitlines()[0] if release and release.strip() else None
    return model, release


def read_memory() -> tuple[int, int]:
    """(total, available) RAM bytes via psutil."""

    vm = psutil.virtual_memory()
    return int(vm.total), int(vm.available)


def read_cores() -> tuple[int, int]:
    """(physical, usable logical) core counts."""

    try:
        logical = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows have no sched_getaffinity
        logical = psutil.cpu_count(logical=True) or 1
    physical = psutil.cpu_count(logical=False) or logical
    return min(physical, logical), logical


def gpu_possible(driver: Path = NVIDIA_DRIVER, tegra_release: Path = TEGRA_RELEASE) -> bool:
    """Whether a GPU can exist here, so that importing torch to ask is worth its second."""
    if driver.exists() or tegra_release.exists() or Path("/dev/nvidia0").exists():
        return True
    return platform.system() == "Darwin" and platform.machine() == "arm64"


def probe_cuda() -> tuple[CudaDevice, ...]:
    """CUDA devices with total and free memory (torch.cuda.mem_get_info); () without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return ()
    devices = []
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        props = torch.cuda.get_device_properties(i)
        devices.append(CudaDevice(i, props.name, int(total), int(free), (props.major, props.minor)))
    return tuple(devices)


def probe_mps() -> bool:
    """Whether Apple's Metal backend is usable."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def detect(
    cpuinfo: Path = CPU_INFO,
    tegra_release: Path = TEGRA_RELEASE,
    dt_model: Path = DT_MODEL,
    machine: str | None = None,
    memory: Callable[[], tuple[int, int]] = read_memory,
    cores: Callable[[], tuple[int, int]] = read_cores,
    cuda: Callable[[], tuple[CudaDevice, ...]] | None = None,
    mps: Callable[[], bool] | None = None,
) -> Hardware:
    """Probe this machine (every source injectable for tests)."""
    machine = machine or platform.machine()
    model, isa = read_cpuinfo(cpuinfo, machine)
    board, release = read_board(tegra_release, dt_model)
    total, available = memory()
    physical, logical = cores()
    if cuda is None or mps is None:
        maybe_gpu = gpu_possible(tegra_release=tegra_release)
        cuda = cuda or (probe_cuda if maybe_gpu else tuple)
        mps = mps or (probe_mps if maybe_gpu else bool)
    return Hardware(
        arch=machine,
        cpu_model=model,
        physical_cores=physical,
        logical_cores=logical,
        isa=isa,
        ram_total=total,
        ram_available=available,
        cuda=tuple(cuda()),
        mps=bool(mps()),
        board_model=board,
        jetson_release=release,
    )


def is_oom(err: BaseException) -> bool:
    """Whether `err` is a CUDA out-of-memory error (and not some other RuntimeError)."""
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    if isinstance(err, oom):
        return True
    # Older torch raised a plain RuntimeError("CUDA out of memory. ...").
    return isinstance(err, RuntimeError) and "CUDA out of memory" in str(err)


def cuda_oom_backoff(fn: Callable[[int], T], batch_size: int, min_batch: int = 1) -> tuple[T, int]:
    """Call fn(bs); on CUDA OOM halve bs and retry. Returns (result, batch size that worked)."""
    if batch_size < min_batch or min_batch < 1:
        raise DeviceError(f"batch size {batch_size} is below the minimum {min_batch}")
    bs = batch_size
    while True:
        try:
            return fn(bs), bs
        except Exception as e:
            if not is_oom(e):
                raise
            if bs <= min_batch:
                raise DeviceError(
                    f"out of GPU memory even at batch size {bs}",
                    "use a smaller bptt or sequence length, a device profile with a smaller "
                    "budget, or free GPU memory used by other processes",
                ) from e
        # Outside the except block, so the traceback's frames (and their tensors) are freed.
        bs = max(min_batch, bs // 2)
        _empty_cuda_cache()


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
