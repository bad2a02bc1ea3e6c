"""The vault index (vault/index.age): the encrypted list of datasets, and its rebuild from the
vault files (lost index, restored backup, renamed or swapped files), docs/vault-format.md."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_tl.errors import DecryptError, EdgeTLError, IdentityError, StoreError
from edge_tl.store.files import atomic_write
from edge_tl.store.home import subdir
from edge_tl.store.keys import decrypt_on_device, encrypt_for_device
from edge_tl.store.vault import decode_vault, parse_header, valid_name

INDEX_MAGIC = b"edge_tl-index/1\n"
_VAULT_FILE = re.compile(r"[0-9a-f]{32}\.age")


@dataclass(frozen=True)
class DatasetInfo:
    """What the (encrypted) index knows about a dataset, without opening its vault file."""

    name: str
    id: str
    rows: int
    labels: list[str]
    label_counts: dict[str, int]
    unlabelled: int
    fingerprint: str
    records_bytes: int
    file_bytes: int
    created: str
    source: str


_ENTRY_TYPES = {
    "id": str,
    "rows": int,
    "labels": list,
    "label_counts": dict,
    "unlabelled": int,
    "fingerprint": str,
    "records_bytes": int,
    "file_bytes": int,
    "created": str,
    "source": str,
}


def vault_dir() -> Path:
    return subdir("vault")


def index_path() -> Path:
    return vault_dir() / "index.age"


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """Serialise writers of the store (imports, removals) across processes."""
    try:
        import fcntl
    except ImportError:  # not POSIX: single-writer use only
        yield
        return
    fd = os.open(vault_dir() / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    with open(fd, "r+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def load_index() -> dict[str, DatasetInfo]:
    path = index_path()
    if not path.exists():
        if not any(_VAULT_FILE.fullmatch(p.name) for p in vault_dir().iterdir()):
            return {}
        # Lost index: list the vault files in memory when each is readable and named by its
        # own id; anything else waits for `data reindex`, which repairs what it can and names
        # the rest.
        scan = _scan_files({})
        problems = scan.skipped + [(p.name, f"holds dataset id {v}") for p, v in scan.moves.items()]
        if problems:
            file, why = problems[0]
            more = f" ({len(problems) - 1} more files need attention)" if len(problems) > 1 else ""
            raise StoreError(
                f"the vault index (vault/index.age) is missing and vault/{file} {why}{more}",
                "run `edge-tl data reindex`: it lists every readable dataset again and names "
                "the files it leaves out",
            )
        return scan.index
    pt = decrypt_on_device(path.read_bytes(), "the vault index (vault/index.age)")
    try:
        return parse_index(pt)
    except (ValueError, TypeError, KeyError, RecursionError) as e:
        raise StoreError(
            f"the vault index is damaged ({e})",
            "delete vault/index.age; the next command rebuilds it from the vault files",
        ) from None


def parse_index(pt: bytes) -> dict[str, DatasetInfo]:
    if not pt.startswith(INDEX_MAGIC):
        raise ValueError("bad magic line")
    raw = json.loads(pt[len(INDEX_MAGIC) :].decode("utf-8"))
    if (
        not isinstance(raw, dict)
        or set(raw) != {"datasets"}
        or not isinstance(raw["datasets"], dict)
    ):
        raise ValueError("not an index object")
    out = {}
    for name, e in raw["datasets"].items():
        if not isinstance(e, dict) or set(e) != set(_ENTRY_TYPES):
            raise ValueError("bad entry for a dataset")
        for k, t in _ENTRY_TYPES.items():
            if not isinstance(e[k], t) or isinstance(e[k], bool):
                raise ValueError(f"bad {k!r} in an entry")
        if not _VAULT_FILE.fullmatch(e["id"] + ".age") or not valid_name(name):
            raise ValueError("bad id or name in an entry")
        out[name] = DatasetInfo(name=name, **e)
    return out


def save_index(index: dict[str, DatasetInfo]) -> None:
    body = {
        "datasets": {
            n: {k: v for k, v in asdict(i).items() if k != "name"} for n, i in sorted(index.items())
        }
    }
    pt = INDEX_MAGIC + json.dumps(body, ensure_ascii=False).encode() + b"\n"
    atomic_write(index_path(), encrypt_for_device(pt))


@dataclass
class _Scan:
    """Vault files no index entry names: what they add, what must move, what is left out."""

    index: dict[str, DatasetInfo]  # the index with the adopted datasets added
    moves: dict[Path, str] = field(default_factory=dict)  # file -> the id it holds
    adopted: list[tuple[str, str]] = field(default_factory=list)  # (file name, dataset name)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file name, why)
    unreadable: int = 0  # files that did not decrypt


@dataclass(frozen=True)
class ReindexReport:
    """The outcome of rebuild_index: the index's size, adopted files and files left out."""

    listed: int
    adopted: list[tuple[str, str, str]]  # (file name, dataset name, file name now)
    skipped: list[tuple[str, str]]  # (file name, why it was left out)


def _scan_files(index: dict[str, DatasetInfo]) -> _Scan:
    """Read every vault file that no entry of `index` names; each file carries its own id and
    name, so a renamed or swapped file is adopted under its id (moved there by the caller).
    Damaged files, copies and names already taken are left out, each with the reason."""
    scan = _Scan(dict(index))
    known = {i.id for i in index.values()}
    found: dict[str, tuple[Path, Any, list[str | None]]] = {}
    for p in sorted(vault_dir().iterdir()):
        if not _VAULT_FILE.fullmatch(p.name) or p.stem in known:
            continue
        read = _read_vault_file(p, scan)
        if read is None:
            continue
        h, labels = read
        other = found.get(h.id)
        if h.id in known:
            scan.skipped.append((p.name, f"is a copy of dataset {h.name!r} ({h.id}.age)"))
        elif other is not None:  # two files hold one id: keep the one named by it, or the first
            keep, drop = (p, other[0]) if p.stem == h.id else (other[0], p)
            scan.skipped.append((drop.name, f"is a copy of dataset {h.name!r} ({keep.name})"))
            found[h.id] = (p, h, labels) if keep == p else other
        else:
            found[h.id] = (p, h, labels)
    chosen: dict[Path, tuple[str, Any, list[str | None]]] = {}
    names = set(scan.index)
    for vid, (p, h, labels) in sorted(found.items(), key=lambda kv: kv[1][0].name):
        if h.name in names:
            scan.skipped.append((p.name, f"holds dataset {h.name!r}, a name already listed"))
        else:
            names.add(h.name)
            chosen[p] = (vid, h, labels)
    _drop_blocked(chosen, scan)
    for p, (vid, h, labels) in chosen.items():
        scan.index[h.name] = _info(h.name, h, labels, p.stat().st_size)
        scan.adopted.append((p.name, h.name))
        if p.stem != vid:
            scan.moves[p] = vid
    return scan


def _drop_blocked(chosen: dict[Path, tuple[str, Any, Any]], scan: _Scan) -> None:
    """Leave out a renamed file whose own name is taken by a file that stays (a damaged one):
    that file is never overwritten. Until no move is blocked (one left out may block another)."""
    while True:
        moving = {p for p, (vid, _, _) in chosen.items() if p.stem != vid}
        blocked = [
            p
            for p in moving
            if (p.parent / f"{chosen[p][0]}.age").exists()
            and p.parent / f"{chosen[p][0]}.age" not in moving
        ]
        if not blocked:
            return
        for p in sorted(blocked):
            vid, h, _ = chosen.pop(p)
            scan.skipped.append(
                (p.name, f"holds dataset {h.name!r}, but its own name {vid}.age is taken")
            )


def _read_vault_file(p: Path, scan: _Scan) -> tuple[Any, list[str | None]] | None:
    """A vault file's header and labels, or None (and the reason in `scan`) if unreadable."""
    what = f"vault file {p.name}"
    try:
        h, _, labels = decode_vault(decrypt_on_device(p.read_bytes(), what), what)
    except IdentityError:
        raise  # no identity, or no passphrase: nothing can be read
    except DecryptError:
        scan.unreadable += 1
        scan.skipped.append((p.name, "cannot be decrypted (wrong key, or damaged)"))
        return None
    except (EdgeTLError, OSError) as e:
        why = e.message.removeprefix(f"{what} ") if isinstance(e, EdgeTLError) else str(e)
        scan.skipped.append((p.name, why))
        return None
    return h, labels


def _move_to_own_ids(moves: dict[Path, str]) -> None:
    """Rename each file to <its id>.age. A file in the way is itself moving (a swap): it is
    parked under a fresh random id first. Every step is one rename and every name is a vault
    file name, so an interrupted run loses nothing and the next reindex finishes the job."""
    pending = dict(moves)
    while pending:
        p, vid = next(iter(pending.items()))
        del pending[p]
        target = vault_dir() / f"{vid}.age"
        if target.exists():
            if target not in pending:
                raise StoreError(f"vault/{target.name} is in the way of vault/{p.name}")
            parked = vault_dir() / f"{os.urandom(16).hex()}.age"
            os.rename(target, parked)
            pending[parked] = pending.pop(target)
        os.rename(p, target)


def rebuild_index() -> ReindexReport:
    """Add vault files missing from the index (lost index, restored backup, renamed or swapped
    files) and name the files left out (damaged, copies, names taken); never deletes a file."""
    with locked():
        try:
            index = _load_index_file()
        except StoreError:
            index = {}  # damaged: start again from the files
        kept, suspects = _verify_listed(index)
        scan = _scan_files(kept)
        if not index and not scan.adopted and 0 < scan.unreadable == len(scan.skipped):
            raise DecryptError(
                f"none of the {scan.unreadable} vault files can be decrypted with this "
                "device's identity",
                "if the identity was replaced, restore keys/identity.txt from your backup; if "
                "the files are damaged, restore the vault from a backup. Nothing was changed",
            )
        ids = {i.id for i in scan.index.values()}
        for name, info in suspects.items():
            if name not in scan.index and info.id not in ids:  # its file is gone: keep the entry
                scan.index[name] = info
                scan.skipped.append(
                    (
                        f"{info.id}.age",
                        f"is missing; dataset {name!r} stays listed: restore the file from a "
                        f"backup, or `edge-tl data rm {name}`",
                    )
                )
        _move_to_own_ids(scan.moves)
        save_index(scan.index)
    adopted = [(f, n, f"{scan.index[n].id}.age") for f, n in scan.adopted]
    return ReindexReport(len(scan.index), adopted, scan.skipped)


def _verify_listed(
    index: dict[str, DatasetInfo],
) -> tuple[dict[str, DatasetInfo], dict[str, DatasetInfo]]:
    """Split the index: entries whose file holds them (or cannot be read: they stay, `doctor`
    names the file), and entries whose file is missing or holds another dataset (renamed or
    swapped files: the file scan finds them by content)."""
    kept, suspects = {}, {}
    for name, info in index.items():
        p = vault_dir() / f"{info.id}.age"
        if not p.is_file():
            suspects[name] = info
            continue
        what = f"vault file {p.name}"
        try:
            h, _ = parse_header(decrypt_on_device(p.read_bytes(), what))
        except IdentityError:
            raise
        except (EdgeTLError, OSError):
            kept[name] = info
            continue
        (kept if (h.id, h.name) == (info.id, name) else suspects)[name] = info
    return kept, suspects


def _load_index_file() -> dict[str, DatasetInfo]:
    """The index as stored ({} when there is none): the files it lacks are rebuild_index's."""
    return load_index() if index_path().exists() else {}


def _info(name: str, h: Any, labels: Iterable[str | None], file_bytes: int) -> DatasetInfo:
    counts = dict.fromkeys(h.labels, 0)  # sorted, as in the header
    unl = 0
    for lab in labels:
        if lab is None:
            unl += 1
        else:
            counts[lab] += 1
    return DatasetInfo(
        name=name,
        id=h.id,
        rows=h.rows,
        labels=list(h.labels),
        label_counts=counts,
        unlabelled=unl,
        fingerprint=h.content_sha256,
        records_bytes=h.records_bytes,
        file_bytes=file_bytes,
        created=h.created,
        source=h.source,
    )


__all__ = [
    "INDEX_MAGIC",
    "DatasetInfo",
    "ReindexReport",
    "index_path",
    "load_index",
    "locked",
    "parse_index",
    "rebuild_index",
    "save_index",
    "vault_dir",
]
