"""Where edge_tl keeps its state: $EDGE_TL_HOME (default ~/.edge_tl), folders 0700."""

from __future__ import annotations

import os
from pathlib import Path

SUBDIRS = ("keys", "vault", "bases", "models", "runs")


def home() -> Path:
    """Return the edge_tl home folder (not created)."""
    env = os.environ.get("EDGE_TL_HOME")
    return Path(env).expanduser() if env else Path.home() / ".edge_tl"


def ensure_dir(path: Path) -> Path:
    """Create `path` (and parents) with mode 0700 and return it."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def subdir(name: str) -> Path:
    """Return (creating it 0700) one of the store's sub-folders."""
    if name not in SUBDIRS:
        raise ValueError(f"unknown store folder {name!r}")
    ensure_dir(home())
    return ensure_dir(home() / name)
