"""The dataset store: import sources into encrypted vault files, load them back only in memory."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_tl.errors import DataError, StoreError
from edge_tl.store.files import atomic_write, remove_stale_parts
from edge_tl.store.home import subdir
from edge_tl.store.keys import decrypt_on_device, encrypt_for_device, load_identity
from edge_tl.store.sources import MAX_TEXT_CHARS, read_source
from edge_tl.store.vault import RecordWriter, decode_vault, valid_name

INDEX_MAGIC = b"edge_tl-index/1\n"
_VAULT_FILE = re.compile(r"[0-9a-f]{32}\.age")


@dataclass(frozen=True)
class Dataset:
    """A dataset loaded in memory; labels[i] is None for an unlabelled row."""

    name: str
    texts: list[str]
    labels: list[str | None]
    label_names: tuple[str, ...]
    fingerprint: str

    def __len__(self) -> int:
        return len(self.texts)

    def labelled(self) -> tuple[list[str], list[str]]:
        """Texts and labels of the labelled rows only."""
        keep = [i for i, lab in enumerate(self.labels) if lab is not None]
        return [self.texts[i] for i in keep], [self.labels[i] for i in keep]  # type: ignore[misc]

    def unlabelled_texts(self) -> list[str]:
        """Texts of the unlabelled rows (for language-model fine-tuning)."""
        return [t for t, lab in zip(self.texts, self.labels, strict=True) if lab is None]


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


@dataclass(frozen=True)
class ImportReport:
    """The outcome of an import."""

    info: DatasetInfo
    skipped_empty: int
    source_bytes: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


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


def _vault_dir() -> Path:
    return subdir("vault")


def _index_path() -> Path:
    return _vault_dir() / "index.age"


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """Serialise writers of the store (imports, removals) across processes."""
    try:
        import fcntl
    except ImportError:  # not POSIX: single-writer use only
        yield
        return
    fd = os.open(_vault_dir() / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    with open(fd, "r+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _load_index() -> dict[str, DatasetInfo]:
    path = _index_path()
    if not path.exists():
        if any(_VAULT_FILE.fullmatch(p.name) for p in _vault_dir().iterdir()):
            return _rebuild_from_files()
        return {}
    pt = decrypt_on_device(path.read_bytes(), "the vault index (vault/index.age)")
    try:
        return _parse_index(pt)
    except (ValueError, TypeError, KeyError, RecursionError) as e:
        raise StoreError(
            f"the vault index is damaged ({e})",
            "delete vault/index.age; the next command rebuilds it from the vault files",
        ) from None


def _parse_index(pt: bytes) -> dict[str, DatasetInfo]:
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


def _save_index(index: dict[str, DatasetInfo]) -> None:
    body = {
        "datasets": {
            n: {k: v for k, v in asdict(i).items() if k != "name"} for n, i in sorted(index.items())
        }
    }
    pt = INDEX_MAGIC + json.dumps(body, ensure_ascii=False).encode() + b"\n"
    atomic_write(_index_path(), encrypt_for_device(pt))


def _rebuild_from_files(index: dict[str, DatasetInfo] | None = None) -> dict[str, DatasetInfo]:
    """Add every vault file that no entry names (and whose name is free) to a copy of `index`."""
    index = dict(index or {})
    known = {i.id for i in index.values()}
    for p in sorted(_vault_dir().iterdir()):
        if not _VAULT_FILE.fullmatch(p.name) or p.stem in known:
            continue
        what = f"vault file {p.name}"
        h, _, labels = decode_vault(decrypt_on_device(p.read_bytes(), what), what)
        if h.id != p.stem or h.name in index:
            continue  # a copy of another file, or a name now taken: leave it, never guess
        index[h.name] = _info(h.name, h, labels, p.stat().st_size)
    return index


def rebuild_index() -> int:
    """Add vault files missing from the index (lost index, restored backup); return the count."""
    with _locked():
        try:
            index = _load_index()
        except StoreError:
            index = {}  # damaged: start again from the files
        index = _rebuild_from_files(index)
        _save_index(index)
    return len(index)


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


def _check_new_name(name: str, index: dict[str, DatasetInfo]) -> None:
    if not valid_name(name):
        raise DataError(
            f"invalid dataset name {name!r}",
            "use 1-200 printable characters without leading or trailing spaces",
        )
    if name in index:
        raise StoreError(
            f"dataset {name!r} already exists",
            f"choose another --name, or remove it first with `edge-tl data rm {name}`",
        )


def _drop_orphans(index: dict[str, DatasetInfo]) -> None:
    """Delete temp files of killed writers. Complete vault files are never deleted here, even
    when no index entry names them (a restored backup): rebuild_index() adopts those."""
    remove_stale_parts(_vault_dir())


def _store(
    name: str, rows: Iterable[tuple[str, str | None]], source: str
) -> tuple[DatasetInfo, int]:
    """Write rows as a new dataset (caller holds the lock and checked the name)."""
    writer = RecordWriter()
    try:
        for text, label in rows:
            writer.add(text, label)
    except BaseException:
        writer.close()
        raise
    counts, unl = writer.label_counts()
    counts = {lab: counts[lab] for lab in sorted(counts)}
    if writer.rows == 0:
        writer.close()
        raise DataError(f"{source} has no rows", "nothing was imported")
    if len(counts) == 1:
        writer.close()
        only = next(iter(counts))
        raise DataError(
            f"{source} has one class only ({only!r}); a classifier needs at least two",
            "check --label-col, or leave the label column empty to import unlabelled text",
        )
    vid = os.urandom(16).hex()
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    header, plaintext = writer.finish(id=vid, name=name, created=created, source=source)
    ct = encrypt_for_device(plaintext)
    del plaintext
    path = _vault_dir() / f"{vid}.age"
    atomic_write(path, ct)
    info = DatasetInfo(
        name=name,
        id=vid,
        rows=header.rows,
        labels=header.labels,
        label_counts=counts,
        unlabelled=unl,
        fingerprint=header.content_sha256,
        records_bytes=header.records_bytes,
        file_bytes=len(ct),
        created=created,
        source=source,
    )
    return info, len(ct)


def _commit(index: dict[str, DatasetInfo], info: DatasetInfo) -> None:
    index[info.name] = info
    try:
        _save_index(index)
    except BaseException:
        # The vault file is useless without its index entry; do not leave it behind.
        with contextlib.suppress(FileNotFoundError):
            (_vault_dir() / f"{info.id}.age").unlink()
        raise


def import_source(
    source: Path,
    name: str,
    *,
    fmt: str | None = None,
    text_col: str | None = None,
    label_col: str | None = None,
    encoding: str = "utf-8",
    progress: bool = True,
    skip_empty: bool = False,
    max_chars: int = MAX_TEXT_CHARS,
) -> ImportReport:
    """Import a CSV/TSV/JSONL/text-folder source (optionally .gz/.xz/.age) as dataset `name`."""
    t0 = time.perf_counter()
    source = Path(source)
    # Unlock first even when nothing needs decrypting yet: a wrong passphrase must fail here,
    # not leave a dataset its owner cannot read back.
    load_identity()
    with _locked():
        index = _load_index()
        _check_new_name(name, index)
        _drop_orphans(index)
        stats: dict[str, int] = {}
        reader = read_source(
            source,
            fmt=fmt,
            text_col=text_col,
            label_col=label_col,
            encoding=encoding,
            progress=progress,
            skip_empty=skip_empty,
            max_chars=max_chars,
            stats=stats,
        )
        info, _ = _store(name, reader, source.name)
        _commit(index, info)
    size = source.stat().st_size if source.is_file() else _folder_size(source)
    return ImportReport(info, stats.get("skipped_empty", 0), size, time.perf_counter() - t0)


def _folder_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*.txt") if p.is_file())


def save_dataset(
    name: str, texts: Sequence[str], labels: Sequence[str | None], *, source: str = "python"
) -> DatasetInfo:
    """Create dataset `name` from in-memory rows (texts non-empty; None = unlabelled)."""
    if len(texts) != len(labels):
        raise DataError(f"{len(texts)} texts but {len(labels)} labels")
    for i, (t, lab) in enumerate(zip(texts, labels, strict=True)):
        if not isinstance(t, str) or not t.strip():
            raise DataError(f"row {i}: empty or non-string text")
        if lab is not None and (not isinstance(lab, str) or not lab.strip() or lab != lab.strip()):
            raise DataError(f"row {i}: label must be a non-empty, unpadded string or None")
    load_identity()
    with _locked():
        index = _load_index()
        _check_new_name(name, index)
        _drop_orphans(index)
        info, _ = _store(name, zip(texts, labels, strict=True), source)
        _commit(index, info)
    return info


def list_datasets() -> list[DatasetInfo]:
    """All datasets, sorted by name (reads only the encrypted index)."""
    return [i for _, i in sorted(_load_index().items())]


def dataset_info(name: str) -> DatasetInfo:
    """The index entry of dataset `name`."""
    index = _load_index()
    if name not in index:
        raise DataError(f"dataset {name!r} not found", "run `edge-tl data list` to see the names")
    return index[name]


def open_dataset(name: str) -> Dataset:
    """Decrypt and verify dataset `name` in memory (no plaintext or temp file is written)."""
    info = dataset_info(name)
    path = _vault_dir() / f"{info.id}.age"
    what = f"dataset {name!r} ({path.name})"
    try:
        ct = path.read_bytes()
    except FileNotFoundError:
        raise DataError(
            f"the vault file of dataset {name!r} is missing ({path.name})",
            f"restore it from a backup, or remove the dataset with `edge-tl data rm {name}`",
        ) from None
    h, texts, labels = decode_vault(decrypt_on_device(ct, what), what)
    if h.id != info.id or h.name != name or h.content_sha256 != info.fingerprint:
        raise DataError(
            f"{what} holds another dataset: the file was swapped or replaced",
            "nothing was loaded; restore the vault folder from a backup",
        )
    return Dataset(name, texts, labels, tuple(h.labels), h.content_sha256)


def remove_dataset(name: str) -> DatasetInfo:
    """Delete dataset `name` (index entry first, then its vault file)."""
    with _locked():
        index = _load_index()
        if name not in index:
            raise DataError(
                f"dataset {name!r} not found", "run `edge-tl data list` to see the names"
            )
        info = index.pop(name)
        _save_index(index)
        with contextlib.suppress(FileNotFoundError):
            (_vault_dir() / f"{info.id}.age").unlink()
        _drop_orphans(index)
    return info


def stratified_nested_subsets(
    labels: Sequence[str | None], sizes: Sequence[int], seed: int
) -> dict[int, list[int]]:
    """Row indexes of stratified subsets of the labelled rows, each inside the next larger."""
    by_class: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        if lab is not None:
            by_class.setdefault(lab, []).append(i)
    total = sum(len(v) for v in by_class.values())
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise DataError(f"subset size {s!r} is not a positive integer")
        if s > total:
            raise DataError(f"subset size {s} is larger than the {total} labelled rows")
        if s < len(by_class):
            raise DataError(
                f"subset size {s} is smaller than the number of labels ({len(by_class)})",
                "every label needs at least one row in each subset",
            )
    rng = random.Random(seed)
    classes = sorted(by_class)
    rank = list(range(len(classes)))
    rng.shuffle(rank)
    keyed = []
    for c, cls in enumerate(classes):
        members = by_class[cls][:]
        rng.shuffle(members)
        n = len(members)
        # Sainte-Lague order: the j-th row of a class comes at (j + 1/2) / n of the way through,
        # so every prefix holds each class within about one row of its share, and prefixes nest.
        keyed.extend(((2 * j + 1) / (2 * n), rank[c], idx) for j, idx in enumerate(members))
    keyed.sort()
    order = [idx for _, _, idx in keyed]
    return {s: sorted(order[:s]) for s in sizes}


def split_dataset(name: str, sizes: list[int], seed: int) -> dict[int, list[int]]:
    """Stratified nested subsets of dataset `name` (row indexes into open_dataset(name))."""
    return stratified_nested_subsets(open_dataset(name).labels, sizes, seed)
