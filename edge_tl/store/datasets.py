"""The dataset store: import sources into encrypted vault files, load them back only in memory."""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_tl.errors import DataError, StoreError
from edge_tl.store.files import atomic_write, remove_stale_parts
from edge_tl.store.index import (
    INDEX_MAGIC,
    DatasetInfo,
    ReindexReport,
    load_index,
    locked,
    rebuild_index,
    save_index,
    vault_dir,
)
from edge_tl.store.keys import decrypt_on_device, encrypt_for_device, load_identity
from edge_tl.store.sources import MAX_TEXT_CHARS, read_source
from edge_tl.store.vault import RecordWriter, decode_vault, valid_name


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
class ImportReport:
    """The outcome of an import."""

    info: DatasetInfo
    skipped_empty: int
    source_bytes: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


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
    remove_stale_parts(vault_dir())


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
    path = vault_dir() / f"{vid}.age"
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
        save_index(index)
    except BaseException:
        # The vault file is useless without its index entry; do not leave it behind.
        with contextlib.suppress(FileNotFoundError):
            (vault_dir() / f"{info.id}.age").unlink()
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
    unlabelled: bool = False,
) -> ImportReport:
    """Import a CSV/TSV/JSONL/text-folder source (optionally .gz/.xz/.age) as dataset `name`.

    A CSV/TSV without a label column is refused unless `unlabelled` (see read_source)."""
    t0 = time.perf_counter()
    source = Path(source)
    # Unlock first even when nothing needs decrypting yet: a wrong passphrase must fail here,
    # not leave a dataset its owner cannot read back.
    load_identity()
    with locked():
        index = load_index()
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
            unlabelled=unlabelled,
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
    with locked():
        index = load_index()
        _check_new_name(name, index)
        _drop_orphans(index)
        info, _ = _store(name, zip(texts, labels, strict=True), source)
        _commit(index, info)
    return info


def list_datasets() -> list[DatasetInfo]:
    """All datasets, sorted by name (reads only the encrypted index)."""
    return [i for _, i in sorted(load_index().items())]


def dataset_info(name: str) -> DatasetInfo:
    """The index entry of dataset `name`."""
    index = load_index()
    if name not in index:
        raise DataError(f"dataset {name!r} not found", "run `edge-tl data list` to see the names")
    return index[name]


def open_dataset(name: str) -> Dataset:
    """Decrypt and verify dataset `name` in memory (no plaintext or temp file is written)."""
    info = dataset_info(name)
    path = vault_dir() / f"{info.id}.age"
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
            "nothing was loaded; `edge-tl data reindex` puts each file back under its own "
            "name (or restore the vault folder from a backup)",
        )
    return Dataset(name, texts, labels, tuple(h.labels), h.content_sha256)


def remove_dataset(name: str) -> DatasetInfo:
    """Delete dataset `name` (index entry first, then its vault file)."""
    with locked():
        index = load_index()
        if name not in index:
            raise DataError(
                f"dataset {name!r} not found", "run `edge-tl data list` to see the names"
            )
        info = index.pop(name)
        save_index(index)
        with contextlib.suppress(FileNotFoundError):
            (vault_dir() / f"{info.id}.age").unlink()
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


__all__ = [
    "INDEX_MAGIC",
    "Dataset",
    "DatasetInfo",
    "ImportReport",
    "ReindexReport",
    "dataset_info",
    "import_source",
    "list_datasets",
    "open_dataset",
    "rebuild_index",
    "remove_dataset",
    "save_dataset",
    "split_dataset",
    "stratified_nested_subsets",
]
