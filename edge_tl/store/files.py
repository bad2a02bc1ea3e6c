"""Atomic, private file writes: temp file in the same folder, fsync, rename."""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from edge_tl.errors import EdgeTLError


@contextlib.contextmanager
def atomic_writer(path: Path, mode: int = 0o600) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces `path` only if the block finishes without error."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.fchmod(fd, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        _unlink_quiet(tmp)
        if e.errno == errno.ENOSPC:
            raise EdgeTLError(
                f"no space left on the device while writing {path}",
                "free some disk space and run the command again; nothing partial was kept",
            ) from e
        raise
    except BaseException:
        _unlink_quiet(tmp)
        raise


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `path` atomically with file mode `mode`."""
    with atomic_writer(path, mode) as f:
        f.write(data)


def remove_stale_parts(folder: Path, name: str | None = None) -> list[Path]:
    """Delete leftover `.*.part` temp files (from a killed writer) in `folder`; return them.

    With `name`, only the leftovers of writes to `folder/name` (for folders we do not own).
    """
    removed = []
    if folder.is_dir():
        for p in folder.glob(f".{glob.escape(name)}.*.part" if name else ".*.part"):
            _unlink_quiet(str(p))
            removed.append(p)
    return removed


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _unlink_quiet(p: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(p)
