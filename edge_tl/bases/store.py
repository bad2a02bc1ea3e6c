"""The base-model store: verified bundles under $EDGE_TL_HOME/bases, plus read-only builtins.

Layout: `bases/<name>/base.etlb` (the verified bundle, byte for byte) and `bases/<name>/import.json`
(where it came from, whether its signature was checked). An import builds `bases/.<name>.*.part/`
and renames it into place, so an interrupted import leaves nothing that `list` or `load` sees.
Builtins are `edge_tl/assets/*.etlb`, pinned by sha256 in `edge_tl/assets/bases.sha256`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_tl.bases.bundle import (
    EXTENSION,
    Base,
    file_sha256,
    read_bundle,
    read_manifest,
    verify_bundle,
)
from edge_tl.bases.manifest import check_name
from edge_tl.config import ModelConfig, from_dict, to_dict
from edge_tl.errors import BundleError, EdgeTLError, StoreError
from edge_tl.store.home import subdir

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
PINS_FILE = "bases.sha256"
BUNDLE_FILE = "base.etlb"
IMPORT_FILE = "import.json"
DEFAULT = "default"
LIST_HINT = "run `edge-tl base list` to see the installed bases"


@dataclass(frozen=True)
class BaseInfo:
    """One installed base, described from its manifest (no tensors loaded)."""

    name: str
    builtin: bool
    path: Path
    size: int
    sha256: str | None = None  # whole file: the pin for builtins, recorded at import otherwise
    model_cfg: ModelConfig | None = None
    dtype: str | None = None
    description: str = ""
    corpus: dict[str, Any] = field(default_factory=dict)
    signer: str | None = None
    signature_verified: bool = False
    created: str | None = None
    tool: str | None = None
    imported: str | None = None
    source: str | None = None
    problem: str | None = None  # why the bundle cannot be read, if it cannot

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for `edge-tl base list --json`)."""
        return {
            "name": self.name,
            "builtin": self.builtin,
            "path": str(self.path),
            "size": self.size,
            "sha256": self.sha256,
            "model_config": to_dict(self.model_cfg) if self.model_cfg else None,
            "n_params": self.model_cfg.n_params() if self.model_cfg else None,
            "dtype": self.dtype,
            "description": self.description,
            "corpus": self.corpus,
            "signer": self.signer,
            "signature_verified": self.signature_verified,
            "created": self.created,
            "tool": self.tool,
            "imported": self.imported,
            "source": self.source,
            "problem": self.problem,
        }


# ---------------------------------------------------------------- builtins


def _pins() -> dict[str, str]:
    """file name -> sha256 from `assets/bases.sha256` (sha256sum format)."""
    pins: dict[str, str] = {}
    pin_file = ASSETS_DIR / PINS_FILE
    if not pin_file.is_file():
        return pins
    for line in pin_file.read_text(encoding="utf-8").splitlines():
        parts = line.strip().split()
        if len(parts) == 2 and len(parts[0]) == 64:
            pins[parts[1].lstrip("*")] = parts[0].lower()
    return pins


def _builtin_paths() -> dict[str, Path]:
    if not ASSETS_DIR.is_dir():
        return {}
    return {p.name.removesuffix(EXTENSION): p for p in sorted(ASSETS_DIR.glob(f"*{EXTENSION}"))}


def _check_pin(name: str, path: Path) -> str:
    pin = _pins().get(path.name)
    if pin is None:
        raise BundleError(
            f"builtin base {name}: {path.name} is not pinned in edge_tl/assets/{PINS_FILE}",
            "reinstall edge_tl (a packager adds `sha256sum FILE >> bases.sha256`)",
        )
    actual = file_sha256(path)
    if actual != pin:
        raise BundleError(
            f"builtin base {name}: sha256 does not match the pin in edge_tl/assets/{PINS_FILE}",
            "the installed package is corrupted; reinstall edge_tl",
        )
    return actual


# ---------------------------------------------------------------- store


def _store() -> Path:
    folder = subdir("bases")
    _remove_leftovers(folder)
    return folder


def _remove_leftovers(folder: Path) -> None:
    """Delete what a killed import or rm left behind (hidden `.part` / `.rm` folders)."""
    for p in folder.glob(".*"):
        if p.is_dir() and p.name.endswith((".part", ".rm")):
            shutil.rmtree(p, ignore_errors=True)


def _stored_dir(name: str) -> Path | None:
    if not isinstance(name, str) or not name or name.startswith("."):
        return None
    d = _store() / name
    return d if (d / BUNDLE_FILE).is_file() else None


def import_base(
    path: Path, *, trust: Path | None = None, allow_unsigned: bool = False, name: str | None = None
) -> str:
    """Verify a bundle (hashes, signature, contents) and copy it into the store; return its name."""
    path = Path(path)
    manifest = read_manifest(path)  # cheap structural check before copying anything
    name = check_name(name if name is not None else manifest["name"], "cannot import base")
    if name in _builtin_paths():
        raise StoreError(
            f"base name {name!r} belongs to a builtin base", "pass another --name to import it"
        )
    store = _store()
    if (store / name).exists():
        raise StoreError(
            f"base {name!r} already exists",
            f"remove it with `edge-tl base rm {name}` or import under another --name",
        )
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".part", dir=store))
    try:
        copy = tmp / BUNDLE_FILE
        with open(path, "rb") as src, open(copy, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        os.chmod(copy, 0o600)
        # Verify the copy we keep, not the source, so nothing can change after the check.
        info = verify_bundle(copy, trust=trust, allow_unsigned=allow_unsigned, label=path.name)
        record = {
            "source": path.name,
            "imported": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "sha256": file_sha256(copy),
            "signer": info.signer,
            "signature_verified": info.signature_verified,
        }
        (tmp / IMPORT_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        try:
            os.rename(tmp, store / name)  # atomic: the base appears whole or not at all
        except OSError as e:
            raise StoreError(f"base {name!r} already exists", "pick another --name") from e
        with contextlib.suppress(OSError):
            fd = os.open(store, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return name


def _info_from(name: str, path: Path, builtin: bool) -> BaseInfo:
    extra: dict[str, Any] = {}
    if builtin:
        extra["sha256"] = _pins().get(path.name)
        if extra["sha256"] is None:
            extra["problem"] = f"not pinned in edge_tl/assets/{PINS_FILE}"
    else:
        with contextlib.suppress(OSError, ValueError):
            rec = json.loads((path.parent / IMPORT_FILE).read_text(encoding="utf-8"))
            if isinstance(rec, dict):
                extra.update(
                    sha256=rec.get("sha256"),
                    signature_verified=rec.get("signature_verified") is True,
                    imported=rec.get("imported"),
                    source=rec.get("source"),
                )
    try:
        m = read_manifest(path, f"{name} ({'builtin' if builtin else 'store'})")
    except EdgeTLError as e:
        extra["problem"] = str(e)
        return BaseInfo(name, builtin, path, path.stat().st_size, **extra)
    return BaseInfo(
        name=name,
        builtin=builtin,
        path=path,
        size=path.stat().st_size,
        model_cfg=from_dict(ModelConfig, m["model_config"], "manifest model_config"),
        dtype=m["weights"]["dtype"],
        description=m["description"],
        corpus=m["corpus"],
        signer=m["signer"],
        created=m["created"],
        tool=m["tool"],
        **extra,
    )


def list_bases() -> list[BaseInfo]:
    """Builtin bases first, then imported ones, each sorted by name."""
    out = [_info_from(n, p, True) for n, p in _builtin_paths().items()]
    store = _store()
    for d in sorted(store.iterdir()):
        if d.is_dir() and not d.name.startswith(".") and (d / BUNDLE_FILE).is_file():
            out.append(_info_from(d.name, d / BUNDLE_FILE, False))
    return out


def base_info(name: str) -> BaseInfo:
    """Describe one installed base by name."""
    builtins = _builtin_paths()
    if name in builtins:
        return _info_from(name, builtins[name], True)
    d = _stored_dir(name)
    if d is None:
        raise _not_found(name)
    return _info_from(name, d / BUNDLE_FILE, False)


def base_path(name: str) -> Path:
    """The bundle file of an installed base."""
    return base_info(name).path


def remove_base(name: str) -> None:
    """Delete an imported base (builtins are read-only)."""
    if name in _builtin_paths():
        raise StoreError(f"base {name!r} is built into edge_tl and cannot be removed")
    d = _stored_dir(name)
    if d is None:
        raise _not_found(name)
    # Rename first so a crash mid-delete never leaves a half base under its name.
    trash = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".rm", dir=d.parent))
    os.rename(d, trash / name)
    shutil.rmtree(trash, ignore_errors=True)


def load_base(name: str = DEFAULT) -> Base:
    """Load an installed base, re-verifying it (pin for builtins, member hashes for all)."""
    builtins = _builtin_paths()
    if name in builtins:
        sha = _check_pin(name, builtins[name])
        base = read_bundle(builtins[name], allow_unsigned=True, label=f"{name} (builtin)")
    else:
        d = _stored_dir(name)
        if d is None:
            raise _not_found(name, loading=True)
        # The signature was checked at import; hashes are checked again on every load.
        base = read_bundle(d / BUNDLE_FILE, allow_unsigned=True, label=f"{name} (store)")
        sha = _info_from(name, d / BUNDLE_FILE, builtin=False).sha256  # recorded at import
    base.name, base.sha256 = name, sha
    return base


def _not_found(name: str, loading: bool = False) -> EdgeTLError:
    if name == DEFAULT and loading:
        return BundleError(
            "no default base is installed (this edge_tl ships none)",
            "import one with `edge-tl base import FILE` and pass its name",
        )
    return StoreError(f"base {name!r} not found", LIST_HINT)


__all__ = [
    "BaseInfo",
    "base_info",
    "base_path",
    "import_base",
    "list_bases",
    "load_base",
    "remove_base",
]
