"""Check every file under $EDGE_TL_HOME with the same loaders the commands use; never repair.

`edge-tl doctor --check-store` prints the resulting StoreReport. The check decrypts vault files,
models and checkpoints in memory only and reports file names and defects, never their contents.
It deletes nothing: leftover temp files are reported with the command that removes them.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edge_tl.bases.bundle import file_sha256, verify_bundle
from edge_tl.bases.store import BUNDLE_FILE, IMPORT_FILE
from edge_tl.errors import DecryptError, EdgeTLError, IdentityError
from edge_tl.store import datasets as data
from edge_tl.store import keys
from edge_tl.store.checkpoints import load_checkpoint
from edge_tl.store.datasets import DatasetInfo
from edge_tl.store.home import home
from edge_tl.store.keys import decrypt_on_device
from edge_tl.store.models import load_model
from edge_tl.store.vault import decode_vault

KINDS = ("keys", "vault", "bases", "models", "checkpoints")
STORE = "store"  # kind of problems with the home folder itself
_FOLDER = {
    "keys": "keys",
    "vault": "vault",
    "bases": "bases",
    "models": "models",
    "checkpoints": "runs",
}
_KIND_OF = {folder: kind for kind, folder in _FOLDER.items()}
PRIVATE_FOLDERS = ("keys", "vault", "models", "runs")  # folders 0700, their files 0600
_VAULT_FILE = re.compile(r"[0-9a-f]{32}\.age")  # as edge_tl.store.datasets names them
_VAULT_EXTRA = {"index.age", ".lock"}
_NO_IDENTITY_FIX = "fix keys/identity.txt first (see the keys problem), then check again"


@dataclass(frozen=True)
class Problem:
    """One defect: the file (absolute path), what is wrong with it and what to do."""

    path: Path
    what: str
    fix: str
    kind: str = STORE


@dataclass
class StoreReport:
    """The outcome of check_store: files checked per kind, problems found, informational notes."""

    home: Path
    checked: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def problems_of(self, kind: str) -> list[Problem]:
        """The problems of one kind."""
        return [p for p in self.problems if p.kind == kind]

    def relative(self, path: Path) -> str:
        """`path` relative to the store folder when it lies inside it (for display)."""
        try:
            rel = path.relative_to(self.home)
        except ValueError:
            return str(path)
        return str(rel) if rel.parts else str(path)

    def add(self, path: Path, what: str, fix: str) -> None:
        """Record a problem; its kind follows from the store folder `path` lies in."""
        try:
            top = path.relative_to(self.home).parts[:1]
        except ValueError:
            top = ()
        kind = _KIND_OF.get(top[0], STORE) if top else STORE
        self.problems.append(Problem(path, what.rstrip("."), fix.rstrip("."), kind))


def check_store(passphrase: str | None = None) -> StoreReport:
    """Verify keys, vault, bases, models, checkpoints, temp leftovers and file modes."""
    root = home()
    report = StoreReport(root)
    if not root.is_dir():
        report.notes.append(f"there is no store at {root} yet: nothing to check")
        return report
    # Modes first: the loaders below reset the store folders to 0700 as every command does.
    loose = _check_modes(report)
    _find_leftovers(report)
    unlocked = _check_keys(report, passphrase)
    _check_vault(report, unlocked)
    _check_bases(report)
    _check_sealed(report, unlocked, "models", ".etlm", _load_model)
    _check_sealed(report, unlocked, "checkpoints", ".ckpt", _load_checkpoint)
    _report_loose_folders(report, loose)
    order = {k: i for i, k in enumerate((STORE, *KINDS))}
    report.problems.sort(key=lambda p: (order[p.kind], str(p.path)))
    return report


# ---------------------------------------------------------------- modes and leftovers


def _mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.lstat().st_mode)
    except OSError:
        return None


def _check_modes(report: StoreReport) -> list[tuple[Path, int]]:
    """Report files other users may read; return the folders they may enter, with their modes."""
    root = report.home
    folders = [root] + [root / f for f in PRIVATE_FOLDERS if (root / f).is_dir()]
    loose = []
    for folder in folders:
        mode = _mode(folder)
        if mode is not None and mode & 0o077:
            loose.append((folder, mode))
        if folder == root:
            continue
        for p in sorted(folder.iterdir()):
            mode = _mode(p)
            if mode is None or not stat.S_ISREG(p.lstat().st_mode) or _is_leftover(p):
                continue
            if folder.name == "keys" and p.name.endswith(".pub"):
                if mode & 0o022:  # a public key may be readable, never writable by others
                    report.add(
                        p,
                        f"file mode {mode:04o} lets other users change it, expected "
                        "0644 or stricter",
                        f"run `chmod 644 {p}`",
                    )
            elif mode & 0o077:
                report.add(
                    p,
                    f"file mode {mode:04o} lets other users read or change it, expected 0600",
                    f"run `chmod 600 {p}`",
                )
    return loose


def _report_loose_folders(report: StoreReport, loose: list[tuple[Path, int]]) -> None:
    """Folder modes seen before the loaders ran; opening a store folder resets it to 0700."""
    for folder, mode in loose:
        if _mode(folder) == 0o700:
            report.add(
                folder,
                f"folder mode was {mode:04o} (other users could enter it); opening it during "
                "this check reset it to 0700",
                "nothing left to do here; find out what loosened it (a copy, a restore, chmod -R)",
            )
        else:
            report.add(
                folder,
                f"folder mode {mode:04o} lets other users in, expected 0700",
                f"run `chmod 700 {folder}`",
            )


def _is_leftover(p: Path) -> bool:
    return p.name.startswith(".") and p.name.endswith((".part", ".rm"))


def _find_leftovers(report: StoreReport) -> None:
    for top, dirs, files in os.walk(report.home):
        for name in sorted(files):
            p = Path(top) / name
            if _is_leftover(p):
                report.add(
                    p,
                    "temporary file left by an interrupted write",
                    f"it is safe to delete once no edge-tl command is running: rm {p}",
                )
        for name in sorted(dirs):
            p = Path(top) / name
            if _is_leftover(p):
                report.add(
                    p,
                    "temporary folder left by an interrupted base import or removal",
                    f"it is safe to delete once no edge-tl command is running: rm -r {p}",
                )
        dirs[:] = [d for d in dirs if not _is_leftover(Path(top) / d)]


# ---------------------------------------------------------------- keys


def _encrypted_files(root: Path) -> list[Path]:
    out: list[Path] = []
    for folder, pattern in (("vault", "*.age"), ("models", "*.etlm"), ("runs", "*.ckpt")):
        if (root / folder).is_dir():
            out += [p for p in (root / folder).glob(pattern) if p.is_file()]
    return out


def _check_keys(report: StoreReport, passphrase: str | None) -> bool:
    """Check identity and recipient; True when the identity is unlocked for the later checks."""

    folder = report.home / "keys"
    ident_path = folder / "identity.txt"
    if not ident_path.is_file():
        if _encrypted_files(report.home):
            report.add(
                ident_path,
                "the device identity is missing, so nothing in the vault, "
                "models or checkpoints can be decrypted",
                "restore keys/identity.txt from your backup",
            )
        else:
            report.notes.append("this device has no identity yet (`edge-tl keys init`)")
        return False
    report.checked["keys"] += 1
    try:
        ident = keys.load_identity(passphrase)
    except DecryptError:
        report.add(
            ident_path,
            "cannot be unlocked: wrong passphrase, or the file is damaged",
            "check the passphrase; if it is right, restore keys/identity.txt from your backup",
        )
        return False
    except IdentityError as e:
        if keys.is_age_file(ident_path.read_bytes()[:64]):
            raise  # passphrase-protected and no passphrase given: nothing else can be checked
        report.add(ident_path, e.message, e.hint or "restore it from your backup")
        return False
    rec_path = folder / "recipient.txt"
    if rec_path.is_file():
        report.checked["keys"] += 1
        pub = rec_path.read_text(encoding="utf-8", errors="replace").strip()
        if pub != str(ident.to_public()):
            report.add(
                rec_path,
                "does not hold the identity's recipient, so new files would be "
                "encrypted to another key",
                f"delete it (`rm {rec_path}`); the next command re-creates it from the identity",
            )
    else:
        report.notes.append("keys/recipient.txt is missing; the next command re-creates it")
    return True


# ---------------------------------------------------------------- vault


def _check_vault(report: StoreReport, unlocked: bool) -> None:
    """The vault folder: stray files, the index, every listed dataset, every unlisted file."""
    folder = report.home / "vault"
    if not folder.is_dir():
        return
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if _VAULT_FILE.fullmatch(p.name):
            files[p.stem] = p
        elif p.name not in _VAULT_EXTRA and not _is_leftover(p):
            report.add(p, "is not an edge_tl vault file", "move it out of the vault folder")
    index = folder / "index.age"
    if not unlocked:
        n = len(files) + index.is_file()
        if n:
            report.add(folder, f"{n} encrypted files not checked", _NO_IDENTITY_FIX)
        return
    entries = _check_index(report, index, bool(files))
    for info in entries or []:
        _check_listed(report, folder, info, files)
    listed = {info.id for info in entries or []}
    for vid, path in files.items():
        if vid not in listed:
            _check_unlisted(report, vid, path, indexed=entries is not None)


def _check_index(report: StoreReport, index: Path, has_files: bool) -> list[DatasetInfo] | None:
    """The vault index's entries (None if it is missing or cannot be read)."""
    if not index.is_file():
        if has_files:
            report.add(
                index,
                "the vault index is missing",
                "run `edge-tl data reindex` to rebuild it from the vault files",
            )
        return None
    report.checked["vault"] += 1
    try:
        return data.list_datasets()  # decrypts and parses index.age
    except (EdgeTLError, OSError) as e:
        _add_error(report, index, e, "delete it, then run `edge-tl data reindex`")
        return None


def _check_listed(
    report: StoreReport, folder: Path, info: DatasetInfo, files: dict[str, Path]
) -> None:
    """A dataset the index lists: its file exists and opens (content hash and entry checked)."""
    name, path = info.name, folder / f"{info.id}.age"
    if info.id not in files:
        report.add(
            path,
            f"dataset {name!r} is listed in the index but its vault file is missing",
            f"restore the file from a backup, or drop the entry with `edge-tl data rm {name}`",
        )
        return
    report.checked["vault"] += 1
    try:
        data.open_dataset(name)  # decrypts, parses, checks the content hash and the entry
    except (EdgeTLError, OSError) as e:
        fix = (
            f"restore the file from a backup, or remove the dataset with `edge-tl data rm "
            f"{name}` and import its source again"
        )
        _add_error(report, path, e, fix)


def _check_unlisted(report: StoreReport, vid: str, path: Path, indexed: bool) -> None:
    """A vault file no index entry names: readable, named by its own id, and why unlisted."""
    report.checked["vault"] += 1
    what = f"vault file {path.name}"
    try:
        h, _, _ = decode_vault(decrypt_on_device(path.read_bytes(), what), what)
    except (EdgeTLError, OSError) as e:
        fix = "restore it from a backup"
        if indexed:
            fix = "no index entry names it: delete it, or " + fix
        _add_error(report, path, e, fix)
        return
    if h.id != vid:
        report.add(
            path,
            f"holds dataset id {h.id}, not the id in its file name (renamed, swapped or a copy)",
            "`edge-tl data reindex` renames it back to its id, or names it a copy to delete",
        )
    elif indexed:
        report.add(
            path,
            f"dataset {h.name!r} is not listed in the vault index",
            "run `edge-tl data reindex` to list it again, or delete the file if "
            "that dataset was removed on purpose",
        )


# ---------------------------------------------------------------- bases


def _check_bases(report: StoreReport) -> None:

    folder = report.home / "bases"
    if not folder.is_dir():
        return
    for d in sorted(folder.iterdir()):
        if _is_leftover(d):
            continue
        if not d.is_dir():
            report.add(d, "is not a base folder", "move it out of the bases folder")
            continue
        bundle = d / BUNDLE_FILE
        redo = f"remove it with `edge-tl base rm {d.name}` and import the original bundle again"
        if not bundle.is_file():
            report.add(d, f"base folder without {BUNDLE_FILE}", f"delete it: rm -r {d}")
            continue
        report.checked["bases"] += 1
        try:
            # Hashes, manifest, members and weights, as every load does; the signature was
            # checked at import time against a key the store does not keep.
            verify_bundle(bundle, allow_unsigned=True, label=f"{d.name} (store)")
            rec = json.loads((d / IMPORT_FILE).read_text(encoding="utf-8"))
            recorded = rec.get("sha256") if isinstance(rec, dict) else None
            actual = file_sha256(bundle)
        except EdgeTLError as e:
            _add_error(report, bundle, e, redo)
            continue
        except (OSError, UnicodeDecodeError, ValueError) as e:
            report.add(d / IMPORT_FILE, f"cannot read the import record ({type(e).__name__})", redo)
            continue
        if recorded != actual:
            report.add(
                bundle,
                "sha256 differs from the one recorded at import (the bundle was "
                "replaced after its import was verified)",
                redo,
            )


# ---------------------------------------------------------------- models and checkpoints


def _load_model(name: str) -> None:

    load_model(name)


def _load_checkpoint(name: str) -> None:

    load_checkpoint(name)


def _check_sealed(
    report: StoreReport, unlocked: bool, kind: str, suffix: str, load: Callable[[str], None]
) -> None:
    """Decrypt and parse every `<name><suffix>` of a folder with its store loader."""
    folder = report.home / _FOLDER[kind]
    if not folder.is_dir():
        return
    files = []
    for p in sorted(folder.iterdir()):
        if p.name.endswith(suffix) and p.is_file():
            files.append(p)
        elif kind == "models" and not _is_leftover(p):
            report.add(p, "is not an edge_tl model file", "move it out of the models folder")
        elif kind == "checkpoints" and p.is_dir() and not _is_leftover(p):
            report.notes.append(f"{report.relative(p)}/ is a work folder (not checked)")
    if not unlocked:
        if files:
            report.add(folder, f"{len(files)} encrypted files not checked", _NO_IDENTITY_FIX)
        return
    for p in files:
        report.checked[kind] += 1
        try:
            load(p.name[: -len(suffix)])
        except (EdgeTLError, OSError) as e:
            fix = (
                "restore the file from a backup, or remove it with `edge-tl models rm "
                f"{p.name[: -len(suffix)]}` and train it again"
                if kind == "models"
                else f"delete it (`rm {p}`) and start the run again without --resume"
            )
            _add_error(report, p, e, fix)


def _add_error(report: StoreReport, path: Path, e: Exception, fix: str) -> None:
    """Record a loader's error with the fix that suits a stored file (not the loader's hint)."""
    if isinstance(e, EdgeTLError):
        report.add(path, e.message, fix)
    else:
        reason = getattr(e, "strerror", None) or type(e).__name__
        report.add(path, f"cannot read it ({reason})", "check its owner and permissions")


__all__ = ["KINDS", "PRIVATE_FOLDERS", "Problem", "StoreReport", "check_store"]
