"""A comparison's results file (results.json) and the lock of its output folder."""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge_tl.errors import ConfigError, StoreError
from edge_tl.store.files import atomic_write

FORMAT = "edge_tl-compare/1"
RESULTS = "results.json"


def load_results(out: Path) -> dict[str, Any]:
    """results.json of `out`, or an empty document."""
    path = Path(out) / RESULTS
    if not path.exists():
        return {"format": FORMAT, "setup": None, "plan": None, "runs": {}}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"cannot read {path}: {e}", "move it away to start over") from None
    if (
        not isinstance(doc, dict)
        or doc.get("format") != FORMAT
        or not isinstance(doc.get("runs"), dict)
    ):
        raise StoreError(
            f"{path} is not an edge-tl compare results file", "choose another --out folder"
        )
    return doc


def save_results(out: Path, doc: dict[str, Any]) -> None:
    """Write results.json atomically (a killed run leaves the previous complete file)."""
    atomic_write(Path(out) / RESULTS, (json.dumps(doc, indent=1) + "\n").encode("utf-8"), 0o644)


def check_setup(old: dict[str, Any] | None, new: dict[str, Any], out: Path) -> None:
    """Refuse to mix runs made with other data, test rows, base or training config."""
    if not old:
        return
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            raise ConfigError(
                f"{Path(out) / RESULTS} holds runs made with another {key}",
                "rerun with the same settings, or pass another --out to start a new comparison",
            )


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """One compare at a time per output folder."""

    Path(out).mkdir(parents=True, exist_ok=True)
    with open(Path(out) / ".lock", "a+b") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(
                f"another edge-tl compare is writing to {out}",
                "wait for it to finish, or pass another --out",
            ) from None
        yield


__all__ = ["FORMAT", "RESULTS", "check_setup", "load_results", "locked", "save_results"]
