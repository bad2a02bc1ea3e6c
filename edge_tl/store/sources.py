"""Readers of untrusted sources: CSV, TSV, JSONL, text folders; optionally gzip/xz/bz2/age."""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import lzma
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from edge_tl.errors import DataError
from edge_tl.store.streams import open_source

FORMATS = ("csv", "tsv", "jsonl", "folder")
MAX_TEXT_CHARS = 1_000_000  # one text; far above any review or message, far below a whole book
_SUFFIX_FORMAT = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
_ENC_HINT = "pass --encoding with the file's encoding (for example --encoding latin-1)"
Row = tuple[str, str | None]


class _Progress:
    """A fastprogress bar over a byte or item total; silent when off or stdout is not a terminal."""

    def __init__(self, total: int, on: bool) -> None:
        self.bar = None
        self.total = max(int(total), 1)
        if on:
            from fastprogress.fastprogress import progress_bar

            self.bar = progress_bar(range(self.total), display=True)
            self.bar.update(0)
        self.last = 0

    def update(self, done: int) -> None:
        done = min(int(done), self.total)
        if self.bar is not None and done > self.last:
            self.last = done
            self.bar.update(done)

    def close(self) -> None:
        self.update(self.total)


def detect_format(source: Path) -> str:
    """Guess the format from the path: a folder, or the suffix after .age/.gz/.xz/.bz2."""
    if source.is_dir():
        return "folder"
    name = source.name.lower()
    for outer in (".age", ".gz", ".xz", ".bz2", ".age"):
        name = name.removesuffix(outer)
    fmt = _SUFFIX_FORMAT.get(Path(name).suffix)
    if fmt is None:
        raise DataError(
            f"cannot tell the format of {source.name}",
            "pass --format csv, tsv, jsonl or folder",
        )
    return fmt


def read_source(
    source: Path,
    *,
    fmt: str | None = None,
    text_col: str | None = None,
    label_col: str | None = None,
    encoding: str = "utf-8",
    progress: bool = False,
    skip_empty: bool = False,
    max_chars: int = MAX_TEXT_CHARS,
    stats: dict[str, int] | None = None,
    unlabelled: bool = False,
) -> Iterator[Row]:
    """Yield (text, label or None) rows from a source, checking each; counts go into `stats`.

    A CSV/TSV with no `label` column (and no label_col) is an error unless `unlabelled`: a data
    owner whose labels sit in a column of another name would otherwise get an unlabelled
    dataset without a word, and learn it only when training refuses it."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"source {source} does not exist", "check the path")
    fmt = fmt or detect_format(source)
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}", "use csv, tsv, jsonl or folder")
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise DataError(
            f"unknown encoding {encoding!r}", "use a Python codec name such as utf-8 or latin-1"
        ) from None
    checker = _TextCheck(source.name, skip_empty, max_chars, stats if stats is not None else {})
    checker.unlabelled = unlabelled
    if fmt == "folder":
        if text_col or label_col:
            raise DataError("--text-col and --label-col apply to csv, tsv and jsonl sources only")
        if not source.is_dir():
            raise DataError(
                f"{source} is not a folder", "a folder source has one sub-folder per label"
            )
        yield from _read_folder(source, encoding, checker, progress)
        return
    if source.is_dir():
        raise DataError(f"{source} is a folder", "use --format folder, or give a file")
    yield from _read_file(source, fmt, text_col, label_col, encoding, checker, progress)


class _TextCheck:
    def __init__(self, name: str, skip_empty: bool, max_chars: int, stats: dict[str, int]) -> None:
        self.name, self.skip_empty, self.max_chars = name, skip_empty, max_chars
        self.stats = stats
        self.unlabelled = False  # a CSV/TSV without a label column is meant to be unlabelled
        stats["skipped_empty"] = 0

    def ok(self, text: str, where: str) -> bool:
        if not text or text.isspace():  # isspace() does not copy the text
            if self.skip_empty:
                self.stats["skipped_empty"] += 1
                return False
            raise DataError(
                f"{self.name}: {where}: empty text",
                "remove the row, or pass --skip-empty to drop empty texts",
            )
        if len(text) > self.max_chars:
            raise DataError(
                f"{self.name}: {where}: text of {len(text):,} characters is over the limit of "
                f"{self.max_chars:,}",
                "split long documents into several rows",
            )
        return True


def _text_stream(stream: IO[bytes], encoding: str) -> io.TextIOWrapper:
    # utf-8-sig drops a leading byte-order mark (Excel writes one) and is otherwise UTF-8.
    enc = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    return io.TextIOWrapper(stream, encoding=enc, errors="strict", newline="")


def _bad_line(source: Path, encoding: str) -> int | None:
    """Find the first line that does not decode (rescans the source; error path only)."""
    stream, _, _ = open_source(source)
    dec = codecs.getincrementaldecoder(encoding)(errors="strict")
    try:
        for n, line in enumerate(stream, 1):
            try:
                dec.decode(line)
            except UnicodeDecodeError:
                return n
    except (OSError, EOFError, lzma.LZMAError):
        return None
    finally:
        stream.close()
    return None


def _read_file(
    source: Path,
    fmt: str,
    text_col: str | None,
    label_col: str | None,
    encoding: str,
    checker: _TextCheck,
    progress: bool,
) -> Iterator[Row]:
    size = source.stat().st_size
    stream, position, _ = open_source(source)
    bar = _Progress(size // 1024, progress)
    try:
        text = _text_stream(stream, encoding)
        rows = _csv_rows if fmt in ("csv", "tsv") else _jsonl_rows
        for i, row in enumerate(rows(text, fmt, text_col, label_col, checker)):
            if i % 2048 == 0:
                bar.update(position() // 1024)
            yield row
        bar.close()
    except UnicodeDecodeError:
        line = _bad_line(source, encoding)
        where = f"line {line}" if line else "a line"
        raise DataError(f"{source.name}: {where} is not valid {encoding}", _ENC_HINT) from None
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as e:
        raise DataError(
            f"cannot read {source.name}: {e}", "check that the file is complete"
        ) from None
    finally:
        stream.close()


@contextlib.contextmanager
def _field_limit(limit: int) -> Iterator[None]:
    old = csv.field_size_limit()
    csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _pick_column(
    header: list[str], want: str | None, default: str, flag: str, name: str
) -> int | None:
    if want is not None:
        if want not in header:
            raise DataError(
                f"{name}: no column {want!r}; the columns are: {', '.join(header)}",
                f"pass {flag} with one of them",
            )
        return header.index(want)
    return header.index(default) if default in header else None


def _csv_rows(
    text: io.TextIOWrapper,
    fmt: str,
    text_col: str | None,
    label_col: str | None,
    checker: _TextCheck,
) -> Iterator[Row]:
    name = checker.name
    reader = csv.reader(text, delimiter="\t" if fmt == "tsv" else ",", strict=True)
    start = 1
    with _field_limit(checker.max_chars + 1):
        try:
            header = [h.strip() for h in next(reader, [])]
            if not header:
                raise DataError(f"{name} is empty", "the first line must name the columns")
            ti = _pick_column(header, text_col, "text", "--text-col", name)
            if ti is None:
                raise DataError(
                    f"{name}: no 'text' column; the columns are: {', '.join(header)}",
                    "pass --text-col with the column that holds the text",
                )
            li = _pick_column(header, label_col, "label", "--label-col", name)
            if li is None and not checker.unlabelled:
                raise DataError(
                    f"{name}: no 'label' column; the columns are: {', '.join(header)}",
                    "pass --label-col with the column that holds the labels, or --unlabelled "
                    "to import the texts without labels (language-model data, --lm-data)",
                )
            start = reader.line_num + 1
            for row in reader:
                where = f"line {start}"
                start = reader.line_num + 1
                if not row:
                    continue  # a blank line
                if len(row) != len(header):
                    raise DataError(
                        f"{name}: {where}: expected {len(header)} fields, found {len(row)}",
                        "check for a missing column, or a separator inside an unquoted text",
                    )
                label = (row[li].strip() or None) if li is not None else None
                if checker.ok(row[ti], where):
                    yield row[ti], label
        except csv.Error as e:
            msg = str(e)
            if "field larger than field limit" in msg:
                raise DataError(
                    f"{name}: line {start}: a field is over the limit of {checker.max_chars:,} "
                    "characters",
                    "split long documents into several rows (or check for an unclosed quote)",
                ) from None
            hint = (
                "a quote opened on this line is never closed"
                if "unexpected end of data" in msg
                else "check the quoting: a quote inside a quoted field must be doubled"
            )
            raise DataError(
                f"{name}: line {start}: malformed {fmt.upper()} ({msg})", hint
            ) from None


def _jsonl_rows(
    text: io.TextIOWrapper,
    fmt: str,
    text_col: str | None,
    label_col: str | None,
    checker: _TextCheck,
) -> Iterator[Row]:
    name = checker.name
    tkey, lkey = text_col or "text", label_col or "label"
    for n, line in enumerate(text, 1):
        if not line.strip():
            continue
        where = f"line {n}"
        try:
            obj: Any = json.loads(line)
        except (ValueError, RecursionError) as e:
            raise DataError(
                f"{name}: {where}: not valid JSON ({type(e).__name__})",
                "each line must hold one JSON object",
            ) from None
        if not isinstance(obj, dict):
            raise DataError(
                f"{name}: {where}: not a JSON object", "each line must hold one JSON object"
            )
        if tkey not in obj:
            raise DataError(
                f"{name}: {where}: no key {tkey!r}",
                "pass --text-col with the key that holds the text",
            )
        if label_col is not None and label_col not in obj:
            raise DataError(f"{name}: {where}: no key {label_col!r}", "check --label-col")
        t, lab = obj[tkey], obj.get(lkey)
        if not isinstance(t, str):
            raise DataError(f"{name}: {where}: {tkey!r} is not a string")
        if isinstance(lab, bool) or not (lab is None or isinstance(lab, str | int)):
            raise DataError(f"{name}: {where}: label {lkey!r} is not a string or an integer")
        label = (str(lab).strip() or None) if lab is not None else None
        if checker.ok(t, where):
            yield t, label


def _read_folder(root: Path, encoding: str, checker: _TextCheck, progress: bool) -> Iterator[Row]:
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    groups: list[tuple[str | None, list[Path]]] = []
    if subdirs:
        # aclImdb layout: one sub-folder per label; `unsup` holds unlabelled texts.
        for d in subdirs:
            files = sorted(p for p in d.glob("*.txt") if not p.name.startswith("."))
            groups.append((None if d.name == "unsup" else d.name, files))
    else:
        groups.append((None, sorted(p for p in root.glob("*.txt") if not p.name.startswith("."))))
    total = sum(len(f) for _, f in groups)
    if total == 0:
        raise DataError(
            f"no .txt files in {root} or its sub-folders",
            "a folder source holds one sub-folder of .txt files per label",
        )
    enc = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    bar = _Progress(total, progress)
    done = 0
    for label, files in groups:
        for p in files:
            where = str(p.relative_to(root))
            if p.stat().st_size > 4 * checker.max_chars + 4:
                raise DataError(
                    f"{checker.name}: {where}: file is over the limit of "
                    f"{checker.max_chars:,} characters",
                    "split long documents",
                )
            try:
                t = p.read_bytes().decode(enc)
            except UnicodeDecodeError:
                raise DataError(
                    f"{checker.name}: {where} is not valid {encoding}", _ENC_HINT
                ) from None
            done += 1
            if done % 512 == 0:
                bar.update(done)
            if checker.ok(t, where):
                yield t, label
    bar.close()
