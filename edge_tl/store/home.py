"""Where edge_tl keeps its state: `edge-tl --home DIR`, else $EDGE_TL_HOME, else ~/.edge_tl;
folders 0700."""

from __future__ import annotations

import os
from pathlib import Path

SUBDIRS = ("keys", "vault", "bases", "models", "runs")
HOME_ENV = "EDGE_TL_HOME"

_home: Path | None = None  # set by the CLI's --home for one command


def set_home(path: Path | str | None) -> None:
    """Use `path` as the home folder instead of $EDGE_TL_HOME (None: back to the default)."""
    global _home
    _home = Path(path).expanduser() if path is not None else None


def home() -> Path:
    """Return the edge_tl home folder (not created): --home, $EDGE_TL_HOME, ~/.edge_tl."""
    if _home is not None:
        return _home
    env = os.environ.get(HOME_ENV)
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
