"""The vault record format (docs/vault-format.md): rows <-> the plaintext inside an age file."""

from __future__ import annotations

import hashlib
import json
import re
import sys
import zlib
from array import array
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from edge_tl.errors import DataError

MAGIC = b"edge_tl-vault/1\n"
MAGIC_PREFIX = b"edge_tl-vault/"
SCHEMA = 1
COLUMNS = ("text", "label")
COMPRESSIONS = ("zlib-blocks", "none")
# Half the disk for ~1 CPU-second per 130 MB; "none" suits a busy CPU with plenty of disk.
DEFAULT_COMPRESSION = "zlib-blocks"
BLOCK = 4 * 1024 * 1024  # max inflated bytes per zlib block
MAX_COMPRESSED_BLOCK = 8 * 1024 * 1024
UNLABELLED = 0xFFFFFFFF
ZLIB_LEVEL = 1  # level 1: ~2x smaller than raw text at ~60 MB/s per core; higher levels gain little
_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_LITTLE = sys.byteorder == "little"


@dataclass(frozen=True)
class VaultHeader:
    """The JSON header line of a vault plaintext (schema 1)."""

    schema: int
    kind: str
    id: str
    name: str
    columns: list[str]
    labels: list[str]
    rows: int
    records_bytes: int
    content_sha256: str
    compression: str
    created: str
    source: str

    def to_json(self) -> bytes:
        """One JSON line (no trailing LF), keys in a fixed order."""
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":")).encode()


_HEADER_TYPES: dict[str, type] = {
    "schema": int,
    "kind": str,
    "id": str,
    "name": str,
    "columns": list,
    "labels": list,
    "rows": int,
    "records_bytes": int,
    "content_sha256": str,
    "compression": str,
    "created": str,
    "source": str,
}


def labels_digest_suffix(labels: list[str], rows: int) -> bytes:
    """The bytes hashed after R: labels JSON, LF, decimal row count, LF."""
    lj = json.dumps(labels, ensure_ascii=False, separators=(",", ":"))
    return f"{lj}\n{rows}\n".encode()


def valid_name(name: str) -> bool:
    """True for a usable dataset name: 1-200 characters, no control characters, not padded."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= 200
        and name == name.strip()
        and all(ch.isprintable() for ch in name)
    )


def _u32(values: array) -> bytes:
    if not _LITTLE:
        values = array("I", values)
        values.byteswap()
    return values.tobytes()


class RecordWriter:
    """Collects rows and builds a vault plaintext; compresses and hashes text blocks meanwhile."""

    def __init__(self, compression: str | None = None, workers: int = 2) -> None:
        compression = compression or DEFAULT_COMPRESSION
        if compression not in COMPRESSIONS:
            raise ValueError(f"unknown compression {compression!r}")
        self.compression = compression
        self._idx = array("I")
        self._lens = array("I")
        self._label_ids: dict[str, int] = {}
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._text_bytes = 0
        self._hash = hashlib.sha256()
        # zlib and hashlib release the GIL, so blocks compress while the caller keeps parsing.
        self._pool = ThreadPoolExecutor(max_workers=workers)
        self._hasher = ThreadPoolExecutor(max_workers=1)  # one worker keeps the hash in order
        self._blocks: list[Future[bytes] | bytes] = []

    @property
    def rows(self) -> int:
        """Rows added so far."""
        return len(self._lens)

    def add(self, text: str, label: str | None) -> None:
        """Append one row (text must be non-empty; label None = unlabelled)."""
        data = text.encode("utf-8")
        if not data:
            raise ValueError("empty text")
        if label is None:
            self._idx.append(UNLABELLED)
        else:
            self._idx.append(self._label_ids.setdefault(label, len(self._label_ids)))
        self._lens.append(len(data))
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= BLOCK:
            self._flush()

    def label_counts(self) -> tuple[dict[str, int], int]:
        """Rows per label and the number of unlabelled rows so far."""
        counts = [0] * len(self._label_ids)
        unl = 0
        for i in self._idx:
            if i == UNLABELLED:
                unl += 1
            else:
                counts[i] += 1
        return {lab: counts[i] for lab, i in self._label_ids.items()}, unl

    def _flush(self, final: bool = False) -> None:
        """Send full 4 MiB blocks to the workers; the rest waits for more rows unless final."""
        if not self._pending:
            return
        blob = b"".join(self._pending)
        end = len(blob) if final else len(blob) - len(blob) % BLOCK
        for off in range(0, end, BLOCK):
            self._submit(blob[off : min(off + BLOCK, end)])
        rest = blob[end:]
        self._pending, self._pending_bytes = ([rest], len(rest)) if rest else ([], 0)

    def _submit(self, chunk: bytes) -> None:
        self._text_bytes += len(chunk)
        self._hasher.submit(self._hash.update, chunk)
        if self.compression == "zlib-blocks":
            self._blocks.append(self._pool.submit(zlib.compress, chunk, ZLIB_LEVEL))
        else:
            self._blocks.append(chunk)

    def finish(self, *, id: str, name: str, created: str, source: str) -> tuple[VaultHeader, bytes]:
        """Return the header and the complete plaintext (magic, header line, body)."""
        try:
            self._flush(final=True)
            text_bytes = self._text_bytes
            labels = sorted(self._label_ids)
            remap = array("I", [0] * len(self._label_ids))
            for new, lab in enumerate(labels):
                remap[self._label_ids[lab]] = new
            idx = array("I", (UNLABELLED if i == UNLABELLED else remap[i] for i in self._idx))
            tables = _u32(self._lens) + _u32(idx)
            n = len(self._lens)
            for off in range(0, len(tables), BLOCK):
                self._submit(tables[off : off + BLOCK])
            self._hasher.submit(self._hash.update, labels_digest_suffix(labels, n)).result()
            parts = []
            for b in self._blocks:
                raw = b.result() if isinstance(b, Future) else b
                if self.compression == "zlib-blocks":
                    parts.append(len(raw).to_bytes(4, "little"))
                parts.append(raw)
            header = VaultHeader(
                schema=SCHEMA,
                kind="dataset",
                id=id,
                name=name,
                columns=list(COLUMNS),
                labels=labels,
                rows=n,
                records_bytes=text_bytes + 8 * n,
                content_sha256=self._hash.hexdigest(),
                compression=self.compression,
                created=created,
                source=source,
            )
            if header.records_bytes != self._text_bytes:
                raise RuntimeError("record size bookkeeping is off")  # internal invariant
            return header, MAGIC + header.to_json() + b"\n" + b"".join(parts)
        finally:
            self.close()

    def close(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._hasher.shutdown(wait=True, cancel_futures=True)


def encode_records(
    texts: list[str],
    labels: list[str | None],
    *,
    id: str,
    name: str,
    created: str,
    source: str,
    compression: str | None = None,
) -> tuple[VaultHeader, bytes]:
    """Build a vault plaintext from in-memory rows."""
    if len(texts) != len(labels):
        raise ValueError("texts and labels differ in length")
    w = RecordWriter(compression)
    try:
        for t, lab in zip(texts, labels, strict=True):
            w.add(t, lab)
    except BaseException:
        w.close()
        raise
    return w.finish(id=id, name=name, created=created, source=source)


class _Damaged(Exception):
    """Internal: one reason a plaintext is rejected."""


def _no_dup_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for k, v in pairs:
        if k in d:
            raise _Damaged(f"duplicate header key {k!r}")
        d[k] = v
    return d


def parse_header(plaintext: bytes) -> tuple[VaultHeader, int]:
    """Parse and check magic + header line; return the header and the body offset."""
    try:
        return _parse_header(plaintext)
    except _Damaged as e:
        raise DataError(str(e)) from None


def _parse_header(plaintext: bytes) -> tuple[VaultHeader, int]:
    if not plaintext.startswith(MAGIC):
        if plaintext.startswith(MAGIC_PREFIX):
            ver = plaintext[len(MAGIC_PREFIX) : plaintext.find(b"\n", 0, 64)].decode(
                "ascii", "replace"
            )
            raise _Damaged(f"unsupported vault format version {ver!r} (this edge_tl reads 1)")
        raise _Damaged("not an edge_tl vault plaintext (bad magic line)")
    end = plaintext.find(b"\n", len(MAGIC))
    if end < 0:
        raise _Damaged("header line is not terminated")
    try:
        raw = json.loads(
            plaintext[len(MAGIC) : end].decode("utf-8"), object_pairs_hook=_no_dup_keys
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _Damaged(f"header is not valid JSON ({type(e).__name__})") from None
    if not isinstance(raw, dict):
        raise _Damaged("header is not a JSON object")
    if set(raw) != set(_HEADER_TYPES):
        extra = sorted(set(raw) - set(_HEADER_TYPES))
        missing = sorted(set(_HEADER_TYPES) - set(raw))
        raise _Damaged(f"header keys differ (unknown {extra}, missing {missing})")
    for key, typ in _HEADER_TYPES.items():
        v = raw[key]
        if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
            raise _Damaged(f"header key {key!r} should be {typ.__name__}")
    h = VaultHeader(**raw)
    labels = h.labels
    problems = [
        (h.schema != SCHEMA, "schema is not 1"),
        (h.kind != "dataset", "kind is not 'dataset'"),
        (not _HEX32.fullmatch(h.id), "id is not 32 hex digits"),
        (not valid_name(h.name), "name is not valid"),
        (h.columns != list(COLUMNS), "columns are not ['text', 'label']"),
        (not all(isinstance(x, str) and x for x in labels), "labels are not non-empty strings"),
        (h.rows < 1 or h.rows >= UNLABELLED, "rows out of range"),
        (h.records_bytes < 9 * h.rows, "records_bytes too small for the row count"),
        (not _HEX64.fullmatch(h.content_sha256), "content_sha256 is not 64 hex digits"),
        (h.compression not in COMPRESSIONS, f"unknown compression {h.compression!r}"),
    ]
    for bad, why in problems:
        if bad:
            raise _Damaged(f"header: {why}")
    if labels != sorted(set(labels)):
        raise _Damaged("header: labels are not unique and sorted")
    return h, end + 1


def _inflate(block: bytes) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(block, BLOCK)
    except zlib.error as e:
        raise _Damaged(f"a block is not valid zlib ({e})") from None
    if not d.eof or d.unconsumed_tail or d.unused_data or not out:
        raise _Damaged("a block is truncated, too large or has trailing bytes")
    return out


def _inflate_blocks(body: memoryview, records_bytes: int) -> bytes:
    blocks = []
    pos, total = 0, 0
    while pos < len(body):
        if pos + 4 > len(body):
            raise _Damaged("truncated block length")
        c = int.from_bytes(body[pos : pos + 4], "little")
        if c < 1 or c > MAX_COMPRESSED_BLOCK or pos + 4 + c > len(body):
            raise _Damaged("bad or truncated block")
        blocks.append(bytes(body[pos + 4 : pos + 4 + c]))
        pos += 4 + c
        total += 1
        if total > records_bytes // BLOCK + 2:  # texts and tables each end with a short block
            raise _Damaged("more blocks than records_bytes allows")
    if not blocks:
        raise _Damaged("no blocks")
    with ThreadPoolExecutor(max_workers=2) as pool:
        return b"".join(pool.map(_inflate, blocks))


def decode_vault(plaintext: bytes, what: str) -> tuple[VaultHeader, list[str], list[str | None]]:
    """Check and decode a vault plaintext; raise DataError naming `what` if anything is off."""
    try:
        h, off = _parse_header(plaintext)
        body = memoryview(plaintext)[off:]
        records = bytes(body) if h.compression == "none" else _inflate_blocks(body, h.records_bytes)
        texts, labels = _decode_records(h, records)
    except _Damaged as e:
        raise DataError(
            f"{what} is damaged: {e}",
            "nothing was loaded; restore the vault from a backup or import the source again",
        ) from None
    return h, texts, labels


def _decode_records(h: VaultHeader, r: bytes) -> tuple[list[str], list[str | None]]:
    n = h.rows
    if len(r) != h.records_bytes:
        raise _Damaged("records length differs from the header")
    hasher = hashlib.sha256()
    with ThreadPoolExecutor(max_workers=1) as pool:
        # Hash on a second core (hashlib drops the GIL) while the texts are decoded here.
        hashed = pool.submit(hasher.update, r)
        text_len = len(r) - 8 * n
        lens = array("I")
        lens.frombytes(r[text_len : text_len + 4 * n])
        idx = array("I")
        idx.frombytes(r[text_len + 4 * n :])
        if not _LITTLE:
            lens.byteswap()
            idx.byteswap()
        if sum(lens) != text_len:
            raise _Damaged("text lengths do not add up")
        if 0 in lens:
            raise _Damaged("an empty text")
        n_labels = len(h.labels)
        used = set(idx)
        used.discard(UNLABELLED)
        if used != set(range(n_labels)):
            raise _Damaged("label indexes do not match the label set")
        mv = memoryview(r)
        texts: list[str] = []
        pos = 0
        try:
            for ln in lens:
                texts.append(str(mv[pos : pos + ln], "utf-8"))
                pos += ln
        except UnicodeDecodeError:
            raise _Damaged(f"text of row {len(texts) + 1} is not valid UTF-8") from None
        names = h.labels
        lab = [None if i == UNLABELLED else names[i] for i in idx]
        hashed.result()
    hasher.update(labels_digest_suffix(h.labels, n))
    if hasher.hexdigest() != h.content_sha256:
        raise _Damaged("content hash does not match")
    return texts, lab
