"""Hardware detection on faked machines, the runtime choice, autocast and the OOM back-off."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

from edge_tl.errors import DeviceError
from edge_tl.hardware.device import (
    CudaDevice,
    Hardware,
    cuda_oom_backoff,
    detect,
    read_board,
    read_cpuinfo,
)
from edge_tl.hardware.profiles import load_profile
from edge_tl.hardware.runtime import Runtime, autocast_context, choose_runtime

GiB = 2**30

X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse4_2
"""

ORIN_CPUINFO = """processor\t: 0
BogoMIPS\t: 62.50
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm
CPU implementer\t: 0x41
CPU part\t: 0xd42
"""

PI_CPUINFO = """processor\t: 0
Features\t: fp asimd evtstrm crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
Model\t\t: Raspberry Pi 5 Model B Rev 1.0
"""

ORIN_GPU = CudaDevice(0, "Orin", 7 * GiB, 5 * GiB, (8, 7))
MAXWELL = CudaDevice(0, "NVIDIA Tegra X1", 4 * GiB, 2 * GiB, (5, 3))


def fake_hw(
    tmp_path: Path,
    cpuinfo: str,
    board: str | None = None,
    release: str | None = None,
    machine: str = "x86_64",
    ram_gib: float = 16,
    cuda=(),
    mps: bool = False,
    cores=(4, 8),
) -> Hardware:
    """Run the real detect() against fake files and probes."""
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    model, rel = tmp_path / "model", tmp_path / "nv_tegra_release"
    if board is not None:
        model.write_bytes(board.encode() + b"\x00")
    if release is not None:
        rel.write_text(release)
    return detect(
        cpuinfo=tmp_path / "cpuinfo",
        tegra_release=rel,
        dt_model=model,
        machine=machine,
        memory=lambda: (int(ram_gib * GiB), int(ram_gib * GiB * 0.8)),
        cores=lambda: cores,
        cuda=lambda: tuple(cuda),
        mps=lambda: mps,
    )


def test_x86_flags_model_and_bf16(tmp_path):
    hw = fake_hw(tmp_path, X86_CPUINFO)
    assert hw.cpu_model == "Intel(R) Xeon(R) Platinum 8480+"
    assert {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx2"} <= set(hw.isa)
    assert "fpu" not in hw.isa  # only the curated list is reported
    assert hw.cpu_bf16 and not hw.is_jetson and hw.cuda == ()
    assert (hw.physical_cores, hw.logical_cores) == (4, 8)


def test_avx2_only_cpu_has_no_bf16(tmp_path):
    hw = fake_hw(tmp_path, "model name : Old\nflags : sse4_2 avx avx2 fma\n")
    assert not hw.cpu_bf16
    assert hw.isa == ("sse4_2", "avx", "avx2", "fma")


def test_fake_jetson_orin_nano(tmp_path):
    hw = fake_hw(
        tmp_path,
        ORIN_CPUINFO,
        board="NVIDIA Jetson Orin Nano Developer Kit",
        release="# R36 (release), REVISION: 3.0, GCID: 36191598\nextra\n",
        machine="aarch64",
        ram_gib=7.4,
        cuda=[ORIN_GPU],
        cores=(6, 6),
    )
    assert hw.is_jetson
    assert hw.board_model == "NVIDIA Jetson Orin Nano Developer Kit"  # trailing NUL stripped
    assert hw.jetson_release == "# R36 (release), REVISION: 3.0, GCID: 36191598"
    assert "asimd" in hw.isa and "fphp" in hw.isa and not hw.cpu_bf16
    assert hw.cuda[0].bf16
    rt = choose_runtime(hw, load_profile("jetson-orin-nano-8gb"))
    assert rt == Runtime("cuda", "bf16", True, 6, rt.reason)


def test_jetson_nano_gets_fp16(tmp_path):
    hw = fake_hw(
        tmp_path,
        ORIN_CPUINFO,
        board="NVIDIA Jetson Nano Developer Kit",
        machine="aarch64",
        ram_gib=3.9,
        cuda=[MAXWELL],
        cores=(4, 4),
    )
    assert hw.is_jetson  # from the model string alone, without the release file
    rt = choose_runtime(hw, load_profile("jetson-nano-4gb"))
    assert (rt.device, rt.dtype, rt.autocast, rt.threads) == ("cuda", "fp16", True, 4)


def test_jetson_without_cuda_torch_falls_back_to_cpu(tmp_path):
    hw = fake_hw(
        tmp_path,
        ORIN_CPUINFO,
        board="NVIDIA Jetson Orin Nano Developer Kit",
        machine="aarch64",
        ram_gib=7.4,
        cores=(6, 6),
    )
    rt = choose_runtime(hw, load_profile("jetson-orin-nano-8gb"))
    assert (rt.device, rt.dtype, rt.autocast) == ("cpu", "fp32", False)


def test_raspberry_pi(tmp_path):
    hw = fake_hw(
        tmp_path,
        PI_CPUINFO,
        board="Raspberry Pi 5 Model B Rev 1.0",
        machine="aarch64",
        ram_gib=7.9,
        cores=(4, 4),
    )
    assert not hw.is_jetson and "asimddp" in hw.isa
    rt = choose_runtime(hw, load_profile("raspberry-pi-5-8gb"))
    assert (rt.device, rt.dtype, rt.autocast, rt.threads) == ("cpu", "fp32", False, 4)


def test_arm_without_cpuinfo_still_has_neon(tmp_path):
    model, isa = read_cpuinfo(tmp_path / "missing", machine="arm64")
    assert isa == ("asimd",) and model


def test_missing_board_files(tmp_path):
    assert read_board(tmp_path / "a", tmp_path / "b") == (None, None)


def test_cpu_runtime_choices(tmp_path):
    bf16 = fake_hw(tmp_path, X86_CPUINFO, cores=(2, 2))
    laptop = load_profile("laptop-cpu-16gb")
    rt = choose_runtime(bf16, laptop)
    assert (rt.device, rt.dtype, rt.autocast, rt.threads) == ("cpu", "bf16", True, 2)
    assert "native CPU bf16" in rt.reason
    rt = choose_runtime(bf16, _with(laptop, dtype="fp32"))
    assert (rt.dtype, rt.autocast) == ("fp32", False)
    forced = _with(laptop, dtype="bf16", threads=8)
    rt = choose_runtime(bf16, forced)
    assert (rt.device, rt.dtype, rt.autocast, rt.threads) == ("cpu", "bf16", True, 2)
    plain = fake_hw(tmp_path, "flags : avx2\n")
    rt = choose_runtime(plain, forced)
    assert (rt.dtype, rt.autocast) == ("fp32", False) and "no native bf16" in rt.reason
    rt = choose_runtime(plain, laptop)
    assert (rt.dtype, rt.autocast) == ("fp32", False) and "no native bf16" in rt.reason


def test_cuda_runtime_and_forced_fp32(tmp_path):
    a100 = CudaDevice(0, "A100", 80 * GiB, 79 * GiB, (8, 0))
    hw = fake_hw(tmp_path, X86_CPUINFO, ram_gib=128, cuda=[a100])
    ws = load_profile("workstation-cuda")
    rt = choose_runtime(hw, ws)
    assert (rt.device, rt.dtype, rt.autocast) == ("cuda", "bf16", True)
    rt = choose_runtime(hw, _with(ws, dtype="fp32"))
    assert (rt.device, rt.dtype, rt.autocast) == ("cuda", "fp32", False)
    t4 = CudaDevice(0, "T4", 16 * GiB, 15 * GiB, (7, 5))
    rt = choose_runtime(fake_hw(tmp_path, X86_CPUINFO, cuda=[t4]), _with(ws, dtype="bf16"))
    assert (rt.dtype, rt.autocast) == ("fp16", True) and "lacks" in rt.reason


def test_cuda_profile_without_cuda_is_device_error(tmp_path):
    hw = fake_hw(tmp_path, X86_CPUINFO)
    with pytest.raises(DeviceError, match="needs CUDA, but torch sees no CUDA device"):
        choose_runtime(hw, load_profile("workstation-cuda"))


def test_mps(tmp_path):
    hw = fake_hw(tmp_path, "", machine="arm64", mps=True)
    rt = choose_runtime(hw, load_profile("laptop-cpu-16gb"))
    assert rt.device == "cpu"  # the profile says cpu
    rt = choose_runtime(hw, _with(load_profile("laptop-cpu-16gb"), device="auto"))
    assert (rt.device, rt.dtype, rt.autocast) == ("mps", "fp16", True)


def test_real_detect_here_is_quick_and_sane():
    hw = detect()
    assert hw.logical_cores >= 1 and hw.ram_total > hw.ram_available > 0
    assert hw.to_dict()["cpu_bf16"] == hw.cpu_bf16


def test_autocast_context():
    assert isinstance(autocast_context(Runtime("cpu", "fp32", False, 1)), contextlib.nullcontext)
    with autocast_context(Runtime("cpu", "bf16", True, 1)):
        y = torch.nn.functional.linear(torch.ones(2, 4), torch.ones(3, 4))
    assert y.dtype == torch.bfloat16


def _oom(msg: str = "CUDA out of memory. Tried to allocate 2.00 GiB") -> Exception:
    return torch.cuda.OutOfMemoryError(msg)


def test_oom_backoff_halves_until_it_fits():
    calls: list[int] = []

    def fn(bs: int) -> str:
        calls.append(bs)
        if bs > 12:
            raise _oom()
        return f"ran {bs}"

    assert cuda_oom_backoff(fn, 64) == ("ran 8", 8)
    assert calls == [64, 32, 16, 8]


def test_oom_backoff_legacy_runtime_error_message():
    calls: list[int] = []

    def fn(bs: int) -> int:
        calls.append(bs)
        if bs > 3:
            raise RuntimeError("CUDA out of memory. Tried to allocate 1 GiB")
        return bs

    assert cuda_oom_backoff(fn, 10) == (2, 2)
    assert calls == [10, 5, 2]


def test_oom_backoff_reraises_other_errors_untouched():
    calls: list[int] = []

    def fn(bs: int) -> None:
        calls.append(bs)
        raise RuntimeError("shape mismatch: (3, 4) vs (4, 5)")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        cuda_oom_backoff(fn, 32)
    assert calls == [32]  # no retry for a bug


def test_oom_backoff_gives_up_at_min_batch():
    calls: list[int] = []

    def fn(bs: int) -> None:
        calls.append(bs)
        raise _oom()

    with pytest.raises(DeviceError) as e:
        cuda_oom_backoff(fn, 16, min_batch=4)
    assert calls == [16, 8, 4]
    assert str(e.value).startswith("out of GPU memory even at batch size 4. ")
    assert isinstance(e.value.__cause__, torch.cuda.OutOfMemoryError)


def test_oom_backoff_rejects_bad_arguments():
    with pytest.raises(DeviceError, match="below the minimum"):
        cuda_oom_backoff(lambda bs: bs, 2, min_batch=4)


def _with(profile, **changes):  # type: ignore[no-untyped-def]
    import dataclasses

    return dataclasses.replace(profile, **changes)
