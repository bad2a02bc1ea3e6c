"""Device profiles: TOML files saying how much of a machine edge_tl may use, and how.

A profile is loaded strictly (unknown key, wrong type or impossible value -> ConfigError
naming the file, the key and what was expected) and auto-selected from detected hardware.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_tl.config import from_dict
from edge_tl.errors import ConfigError
from edge_tl.hardware.device import Hardware

GiB = 2**30
DEVICES = ("cpu", "cuda", "auto")
DTYPES = ("auto", "bf16", "fp16", "fp32")
MAX_BUDGET = 0.95  # leave the OS something, always
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class Match:
    """Auto-selection rules; every rule that is set must hold for the profile to match."""

    board_model: str = ""  # substring of /proc/device-tree/model, case-insensitive
    arch: str = ""  # e.g. "aarch64"; empty = any
    min_ram_gib: float = 0.0
    max_ram_gib: float = 0.0  # 0 = no upper bound
    needs_cuda: bool = False
    min_vram_gib: float = 0.0
    priority: int = 0  # the highest-priority matching profile wins


@dataclass(frozen=True)
class DeviceProfile:
    """How much of a device edge_tl may use, and how (one TOML file)."""

    name: str
    description: str
    device: str  # "cpu" | "cuda" | "auto"
    memory_budget: float  # share of RAM (or VRAM on a discrete GPU), 0 < x <= 0.95
    threads: int  # 0 = all usable cores
    dtype: str  # "auto" | "bf16" | "fp16" | "fp32"
    max_batch_size: int
    bptt: int  # language-model window / classifier chunk length
    max_seq_len: int  # classifier tokens kept per document
    max_model_params: int  # the largest base this device is meant to fine-tune
    match: Match = field(default_factory=Match)
    path: str = ""  # where it was loaded from (set by the loader, not by the file)


def _expect(where: str, key: str, ok: bool, expected: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{where}: key {key!r}: expected {expected}, got {value!r}")


def _validate(p: DeviceProfile, where: str) -> None:
    _expect(
        where,
        "name",
        bool(_NAME.match(p.name)),
        "a lower-case name of letters, digits, '-', '_' or '.'",
        p.name,
    )
    _expect(where, "device", p.device in DEVICES, f"one of {', '.join(DEVICES)}", p.device)
    _expect(
        where,
        "memory_budget",
        0 < p.memory_budget <= MAX_BUDGET,
        f"a fraction 0 < x <= {MAX_BUDGET} of memory",
        p.memory_budget,
    )
    _expect(where, "threads", 0 <= p.threads <= 1024, "0 (all cores) or a core count", p.threads)
    _expect(where, "dtype", p.dtype in DTYPES, f"one of {', '.join(DTYPES)}", p.dtype)
    for key in ("max_batch_size", "bptt", "max_seq_len", "max_model_params"):
        _expect(where, key, getattr(p, key) >= 1, "a whole number >= 1", getattr(p, key))
    _expect(
        where, "bptt", p.bptt <= p.max_seq_len, f"at most max_seq_len ({p.max_seq_len})", p.bptt
    )
    m = p.match
    for key in ("min_ram_gib", "max_ram_gib", "min_vram_gib"):
        _expect(where, f"match.{key}", getattr(m, key) >= 0, "a number >= 0", getattr(m, key))
    _expect(
        where,
        "match.max_ram_gib",
        m.max_ram_gib == 0 or m.max_ram_gib > m.min_ram_gib,
        f"0 (no bound) or more than match.min_ram_gib ({m.min_ram_gib})",
        m.max_ram_gib,
    )


def parse_profile(data: bytes, source: str) -> DeviceProfile:
    """Parse and validate profile TOML bytes; `source` names the file in every error."""
    where = f"device profile {source}"
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: not valid TOML ({e})", "fix the syntax at that line") from e
    if "path" in table:
        raise ConfigError(f"{where}: unknown key 'path'", "the loader sets it; remove it")
    profile = from_dict(DeviceProfile, table, where)
    _validate(profile, where)
    return dataclasses.replace(profile, path=source)


def profile_dirs() -> list[Path]:
    """Folders holding the built-in profiles: a repo checkout's, then the installed copy."""
    here = Path(__file__).resolve().parent.parent  # the package folder
    return [d for d in (here.parent / "device_profiles", here / "device_profiles") if d.is_dir()]


def _builtin() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in reversed(profile_dirs()):  # the repo checkout's copy wins
        found.update({p.stem: p for p in sorted(d.glob("*.toml"))})
    return found


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """Load a built-in profile by name, or any profile file by path."""
    text = str(name_or_path)
    path = Path(text)
    if text.endswith(".toml") or "/" in text or path.is_file():
        if not path.is_file():
            raise ConfigError(
                f"device profile {text} does not exist",
                "give a path to a .toml file or a built-in profile name",
            )
    else:
        builtin = _builtin()
        if text not in builtin:
            raise ConfigError(
                f"unknown device profile {text!r}",
                f"built-in profiles: {', '.join(sorted(builtin)) or 'none found'}",
            )
        path = builtin[text]
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"device profile {path}: cannot read it ({e.strerror})") from e
    return parse_profile(data, str(path))


def list_profiles() -> list[DeviceProfile]:
    """Every built-in profile, by name."""
    return [load_profile(p) for _, p in sorted(_builtin().items())]


def matches(profile: DeviceProfile, hw: Hardware) -> bool:
    """Whether every match rule of `profile` holds on `hw`."""
    m = profile.match
    ram = hw.ram_total / GiB
    vram = max((d.total_bytes for d in hw.cuda), default=0) / GiB
    return (
        (not m.board_model or m.board_model.lower() in (hw.board_model or "").lower())
        and (not m.arch or m.arch.lower() == hw.arch.lower())
        and ram >= m.min_ram_gib
        and (m.max_ram_gib == 0 or ram < m.max_ram_gib)
        and (not m.needs_cuda or bool(hw.cuda))
        and vram >= m.min_vram_gib
    )


def auto_select(hw: Hardware, profiles: list[DeviceProfile] | None = None) -> DeviceProfile:
    """The highest-priority built-in profile whose match rules hold on `hw`."""
    candidates = [p for p in (profiles or list_profiles()) if matches(p, hw)]
    if not candidates:
        raise ConfigError(
            "no device profile matches this machine",
            "pass --profile NAME or --profile PATH (see device_profiles/)",
        )
    return max(candidates, key=lambda p: (p.match.priority, p.name))
