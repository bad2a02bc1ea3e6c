"""Device profiles: every built-in loads, bad files fail naming file and key, auto-selection."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_tl.errors import ConfigError
from edge_tl.hardware.device import CudaDevice, Hardware
from edge_tl.hardware.profiles import (
    DeviceProfile,
    auto_select,
    list_profiles,
    load_profile,
    parse_profile,
    profile_dirs,
)

GiB = 2**30
REPO_PROFILES = Path(__file__).resolve().parents[2] / "device_profiles"
REQUIRED = {
    "jetson-nano-4gb",
    "jetson-orin-nano-8gb",
    "jetson-agx-orin-32gb",
    "raspberry-pi-5-8gb",
    "laptop-cpu-16gb",
    "workstation-cuda",
}

GOOD = """name = "t"
description = "test"
device = "cpu"
memory_budget = 0.5
threads = 0
dtype = "auto"
max_batch_size = 8
bptt = 70
max_seq_len = 512
max_model_params = 1_000_000

[match]
min_ram_gib = 1
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as e:
        load_profile(str(path))
    return str(e.value)


def test_every_builtin_profile_loads_and_is_named_after_its_file():
    profiles = list_profiles()
    names = {p.name for p in profiles}
    assert REQUIRED <= names
    files = {p.stem for p in REPO_PROFILES.glob("*.toml")}
    assert names == files
    for p in profiles:
        assert Path(p.path).stem == p.name
        assert 0 < p.memory_budget <= 0.95 and p.bptt <= p.max_seq_len


def test_profiles_found_in_the_checkout():
    assert REPO_PROFILES in profile_dirs()


def test_good_profile_by_path(tmp_path):
    p = load_profile(write(tmp_path, GOOD))
    assert isinstance(p, DeviceProfile)
    assert (p.memory_budget, p.max_model_params, p.match.min_ram_gib) == (0.5, 1_000_000, 1.0)
    assert p.path == str(tmp_path / "bad.toml")


def test_unknown_key_names_file_and_key(tmp_path):
    path = write(tmp_path, GOOD.replace("threads = 0", "threads = 0\nturbo = true"))
    msg = error_of(path)
    assert msg.startswith(f"device profile {path}: unknown key 'turbo'. allowed keys are: ")
    assert "memory_budget" in msg


def test_unknown_key_in_match_table(tmp_path):
    path = write(tmp_path, GOOD + 'gpu_name = "x"\n')
    msg = error_of(path)
    assert str(path) in msg and "unknown key 'gpu_name'" in msg


def test_wrong_type_names_file_key_and_expectation(tmp_path):
    path = write(tmp_path, GOOD.replace("bptt = 70", 'bptt = "seventy"'))
    assert (
        error_of(path) == f"device profile {path}: key 'bptt': expected a whole number, "
        "got 'seventy'."
    )


def test_wrong_type_in_match(tmp_path):
    path = write(tmp_path, GOOD.replace("min_ram_gib = 1", 'min_ram_gib = "lots"'))
    msg = error_of(path)
    assert str(path) in msg and "'match'" in msg and "'min_ram_gib'" in msg
    assert "expected a number" in msg


@pytest.mark.parametrize(
    ("old", "new", "key", "expected"),
    [
        (
            "memory_budget = 0.5",
            "memory_budget = 1.5",
            "memory_budget",
            "a fraction 0 < x <= 0.95 of memory, got 1.5",
        ),
        (
            "memory_budget = 0.5",
            "memory_budget = 0",
            "memory_budget",
            "a fraction 0 < x <= 0.95 of memory, got 0.0",
        ),
        ("bptt = 70", "bptt = 0", "bptt", "a whole number >= 1, got 0"),
        ("bptt = 70", "bptt = 1000", "bptt", "at most max_seq_len (512), got 1000"),
        ("threads = 0", "threads = -2", "threads", "0 (all cores) or a core count, got -2"),
        ('dtype = "auto"', 'dtype = "int4"', "dtype", "one of auto, bf16, fp16, fp32, got 'int4'"),
        ('device = "cpu"', 'device = "tpu"', "device", "one of cpu, cuda, auto, got 'tpu'"),
        (
            "max_batch_size = 8",
            "max_batch_size = 0",
            "max_batch_size",
            "a whole number >= 1, got 0",
        ),
        (
            'name = "t"',
            'name = "Bad Name"',
            "name",
            "a lower-case name of letters, digits, '-', '_' or '.', got 'Bad Name'",
        ),
        (
            "min_ram_gib = 1",
            "min_ram_gib = 8\nmax_ram_gib = 4",
            "match.max_ram_gib",
            "0 (no bound) or more than match.min_ram_gib (8.0), got 4.0",
        ),
    ],
)
def test_impossible_values(tmp_path, old, new, key, expected):
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new))
    assert error_of(path) == f"device profile {path}: key {key!r}: expected {expected}."


def test_missing_key(tmp_path):
    path = write(tmp_path, GOOD.replace("bptt = 70\n", ""))
    msg = error_of(path)
    assert msg.startswith(f"device profile {path}: ") and "bptt" in msg


def test_toml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, GOOD.replace("threads = 0", "threads = = 0"))
    msg = error_of(path)
    assert msg.startswith(f"device profile {path}: not valid TOML (")
    assert "line 5" in msg


def test_not_utf8(tmp_path):
    path = tmp_path / "bin.toml"
    path.write_bytes(b'name = "\xff\xfe"\n')
    assert error_of(path).startswith(f"device profile {path}: not UTF-8 text")


def test_path_key_is_reserved(tmp_path):
    path = write(tmp_path, 'path = "/etc"\n' + GOOD)
    assert error_of(path).startswith(f"device profile {path}: unknown key 'path'")


def test_unknown_name_and_missing_path(tmp_path):
    with pytest.raises(ConfigError, match="unknown device profile 'gpu9000'.*laptop-cpu-16gb"):
        load_profile("gpu9000")
    with pytest.raises(ConfigError, match="does not exist"):
        load_profile(str(tmp_path / "nope.toml"))


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_bytes_only_raise_config_error(data):
    try:
        parse_profile(data, "fuzz.toml")
    except ConfigError as e:
        assert str(e).startswith("device profile fuzz.toml")


@settings(max_examples=100, deadline=None)
@given(st.integers(0, len(GOOD.encode())), st.integers(0, 255))
def test_truncated_or_tampered_good_profile(cut, byte):
    data = bytearray(GOOD.encode())
    truncated = bytes(data[:cut])
    if cut < len(data):
        data[cut] = byte
    for blob in (truncated, bytes(data)):
        try:
            p = parse_profile(blob, "t.toml")
        except ConfigError as e:
            assert str(e).startswith("device profile t.toml")
        else:
            assert 0 < p.memory_budget <= 0.95 and p.bptt >= 1  # anything accepted is valid


def hw(ram_gib: float, arch: str = "x86_64", board: str | None = None, cuda=()) -> Hardware:
    return Hardware(
        arch,
        "cpu",
        4,
        4,
        (),
        int(ram_gib * GiB),
        int(ram_gib * GiB),
        tuple(cuda),
        False,
        board,
        None,
    )


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        (hw(23.5), "laptop-cpu-16gb"),  # this box: 2 cores, ~24 GiB, no GPU
        (hw(15.3), "laptop-cpu-16gb"),
        (hw(256), "laptop-cpu-16gb"),
        (hw(7.6), "cpu-small"),
        (
            hw(
                3.9,
                "aarch64",
                "NVIDIA Jetson Nano Developer Kit",
                [CudaDevice(0, "X1", 4 * GiB, 2 * GiB, (5, 3))],
            ),
            "jetson-nano-4gb",
        ),
        (hw(7.4, "aarch64", "NVIDIA Jetson Orin Nano Developer Kit"), "jetson-orin-nano-8gb"),
        (hw(30.6, "aarch64", "Jetson AGX Orin"), "jetson-agx-orin-32gb"),
        (hw(7.9, "aarch64", "Raspberry Pi 5 Model B Rev 1.0"), "raspberry-pi-5-8gb"),
        (hw(7.9, "x86_64", "Raspberry Pi 5 Model B Rev 1.0"), "cpu-small"),  # arch must match
        (hw(64, cuda=[CudaDevice(0, "RTX 4090", 24 * GiB, 23 * GiB, (8, 9))]), "workstation-cuda"),
        (hw(64, cuda=[CudaDevice(0, "GTX 1050", 4 * GiB, 3 * GiB, (6, 1))]), "laptop-cpu-16gb"),
    ],
)
def test_auto_select(machine, expected):
    assert auto_select(machine).name == expected


def test_auto_select_none_matches():
    only = [load_profile("workstation-cuda")]
    with pytest.raises(ConfigError, match="no device profile matches this machine"):
        auto_select(hw(16), only)


def test_builtin_files_are_plain_toml():
    """Both copies (the checkout's and the packaged one) hold every required profile, each a
    plain TOML file named after its `name`, and the copies are the same files."""
    packaged = REPO_PROFILES.parent / "edge_tl" / "device_profiles"
    found = {
        d: {p.name: p.read_bytes() for p in d.glob("*.toml")} for d in (REPO_PROFILES, packaged)
    }
    assert found[REPO_PROFILES] == found[packaged]
    assert {Path(n).stem for n in found[packaged]} >= REQUIRED
    for name, raw in found[packaged].items():
        assert tomllib.loads(raw.decode("utf-8"))["name"] == Path(name).stem
