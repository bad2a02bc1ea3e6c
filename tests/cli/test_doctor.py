"""`edge-tl doctor`: human and JSON output, profile choice, bad profiles, no torch import."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner
from tinydata import run_child

from edge_tl.cli import cli
from edge_tl.config import ModelConfig

GiB = 2**30
REPO = Path(__file__).resolve().parents[2]


def run(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["doctor", *args])


def test_json_reports_this_machine():
    r = run("--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    hw = out["hardware"]
    assert hw["cores"] == len(__import__("os").sched_getaffinity(0))
    assert hw["ram_total"] == psutil.virtual_memory().total
    assert hw["ram_total_gib"] == round(psutil.virtual_memory().total / GiB, 1)
    flags = Path("/proc/cpuinfo").read_text()
    assert hw["cpu_bf16"] == (" avx512_bf16" in flags or " amx_bf16" in flags)
    assert out["profile"]["auto_selected"] is True
    assert out["base"]["config"]["n_hid"] == ModelConfig().n_hid
    for mode in ("lm_train", "clas_train"):
        p = out["plans"][mode]
        assert p["mode"] == mode and p["batch_size"] >= 1
        assert (
            p["estimate"]["total"]
            == p["estimate"]["fixed"] + p["batch_size"] * p["estimate"]["per_sample"]
        )


@pytest.mark.parametrize(
    ("flags", "bf16", "dtype"),
    [("avx2 fma avx512f avx512_bf16", True, "bf16"), ("avx2 fma avx512f", False, "fp32")],
)
def test_json_on_the_reference_box(tmp_path, monkeypatch, flags, bf16, dtype):
    """The reference machine (2 cores, 24 GiB, no GPU), injected into detect(): the laptop
    profile and a CPU runtime, in bf16 exactly when the CPU reports native bf16."""
    from edge_tl.hardware import device

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"model name\t: Reference CPU\nflags\t\t: fpu sse4_2 avx {flags}\n")
    real_detect = device.detect

    def detect() -> device.Hardware:
        return real_detect(
            cpuinfo=cpuinfo,
            tegra_release=tmp_path / "absent",
            dt_model=tmp_path / "absent",
            machine="x86_64",
            memory=lambda: (24 * GiB, 20 * GiB),
            cores=lambda: (2, 2),
            cuda=tuple,
            mps=lambda: False,
        )

    monkeypatch.setattr(device, "detect", detect)
    r = run("--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    hw = out["hardware"]
    assert (hw["cores"], hw["cuda"], hw["ram_total_gib"]) == (2, [], 24.0)
    assert hw["cpu_model"] == "Reference CPU" and hw["cpu_bf16"] is bf16
    assert out["profile"]["name"] == "laptop-cpu-16gb" and out["profile"]["auto_selected"]
    assert (out["runtime"]["device"], out["runtime"]["dtype"]) == ("cpu", dtype)
    assert out["runtime"]["autocast"] is bf16 and out["runtime"]["threads"] == 2


def test_human_output_with_given_profile():
    r = run("--profile", "raspberry-pi-5-8gb")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "Hardware"
    assert any(line.startswith("Profile     raspberry-pi-5-8gb (given): ") for line in lines)
    i = next(i for i, line in enumerate(lines) if line.startswith("Runtime     "))
    assert lines[i].startswith("Runtime     cpu, fp32, autocast off, ")
    assert lines[i + 1].startswith("  why       fp32 requested by the profile")
    assert any(line.startswith("Plan lm_train   batch ") for line in lines)
    assert any(line.startswith("Plan clas_train batch ") for line in lines)


def test_profile_by_path_and_base_config(tmp_path):
    prof = (REPO / "device_profiles" / "cpu-small.toml").read_text()
    (tmp_path / "mine.toml").write_text(prof.replace('name = "cpu-small"', 'name = "mine"'))
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"vocab_size": 1000, "emb_sz": 32, "n_hid": 64, "n_layers": 2}))
    r = run("--profile", str(tmp_path / "mine.toml"), "--base-config", str(base), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["profile"]["name"] == "mine" and out["profile"]["auto_selected"] is False
    small = ModelConfig(vocab_size=1000, emb_sz=32, n_hid=64, n_layers=2)
    assert out["plans"]["lm_train"]["model_params"] == small.n_params()
    assert out["plans"]["lm_train"]["batch_size"] == 16  # the profile's cap


def test_bad_profile_is_one_error_line(tmp_path):
    prof = (REPO / "device_profiles" / "cpu-small.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(prof.replace("memory_budget = 0.5", "memory_budget = 1.5"))
    r = run("--profile", str(bad))
    assert r.exit_code == 1
    assert r.output == (
        f"Error: device profile {bad}: key 'memory_budget': expected a fraction 0 < x <= 0.95 "
        "of memory, got 1.5.\n"
    )
    bad.write_text(prof.replace("bptt = 70", "bptt = 70\nbpt = 3"))
    r = run("--profile", str(bad))
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.output.startswith(f"Error: device profile {bad}: unknown key 'bpt'. allowed keys")


def test_unknown_profile_name():
    r = run("--profile", "nope")
    assert r.exit_code == 1
    assert r.output.startswith("Error: unknown device profile 'nope'. built-in profiles: ")


def test_bad_base_config(tmp_path):
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"vocab_size": 1000, "hidden": 3}))
    r = run("--base-config", str(base))
    assert r.exit_code == 1
    assert r.output.startswith(f"Error: base config {base}: unknown key 'hidden'. ")


def test_cuda_profile_here_without_cuda():
    out = json.loads(run("--json").output)
    if out["hardware"]["cuda"]:
        import pytest

        pytest.skip("this machine has CUDA")
    r = run("--profile", "workstation-cuda")
    assert r.exit_code == 1
    assert r.output.startswith(
        "Error: device profile 'workstation-cuda' needs CUDA, but torch sees no CUDA device. "
    )


def test_doctor_does_not_import_torch_on_a_cpu_box():
    code = (
        "import sys\n"
        "from edge_tl.cli import cli\n"
        "try:\n"
        "    cli(['doctor', '--json'], standalone_mode=False)\n"
        "finally:\n"
        "    print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n"
    )
    r = run_child(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert r.returncode == 0, r.stderr
    gpu = json.loads(r.stdout)["hardware"]["cuda"] or Path("/proc/driver/nvidia").exists()
    assert r.stderr.strip().endswith("TORCH" if gpu else "NO-TORCH")
