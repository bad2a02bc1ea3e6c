"""Batch scoring: stream texts from a file or stdin through a Classifier in constant memory.

Inputs: plain text (one text per `\\n`-terminated line; other Unicode line breaks such as U+0085
or U+2028 stay inside the text), CSV/TSV (every column kept, the text in `text_col`) or JSONL
(one object a line). Outputs: CSV (the input's columns, then `label` and `prob_<label>` for each
label) or JSONL (the input's fields, then `label` and `probs`). Rows go through onnxruntime
CHUNK at a time, so a file of any size needs the memory of one chunk.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from edge_tl.deploy.predict import Classifier
from edge_tl.errors import DataError

CHUNK = 256  # rows per onnxruntime pass
FORMATS = ("text", "csv", "tsv", "jsonl")
csv.field_size_limit(16 * 2**20)  # a review can be long; the csv module's default is 128 KiB


def detect_format(path: Path | None, default: str = "text") -> str:
    """The format a file's name says (.csv, .tsv, .jsonl, optionally .gz); else `default`."""
    if path is None:
        return default
    name = path.name.lower().removesuffix(".gz")
    for ext, fmt in ((".csv", "csv"), (".tsv", "tsv"), (".jsonl", "jsonl"), (".ndjson", "jsonl")):
        if name.endswith(ext):
            return fmt
    return default


@contextmanager
def open_input(path: Path | None) -> Iterator[IO[str]]:
    """A text stream of the input (stdin for None), gzip-decompressed for .gz; `\\n` only."""
    if path is None:
        wrapper = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", newline="")
        try:
            yield wrapper
        finally:
            wrapper.detach()  # leave stdin open
        return
    try:
        raw = gzip.open(path, "rb") if path.suffix.lower() == ".gz" else path.open("rb")
    except OSError as e:
        raise DataError(f"cannot read {path} ({e.strerror})", "check the path") from e
    with raw:
        yield io.TextIOWrapper(raw, encoding="utf-8", newline="")


def read_rows(
    stream: IO[str], fmt: str, text_col: str, where: str
) -> Iterator[tuple[dict[str, Any], str]]:
    """(the row's fields, its text) for each input row; blank text lines are skipped."""
    try:
        if fmt == "text":
            yield from _text_rows(stream)
        elif fmt in ("csv", "tsv"):
            yield from _csv_rows(stream, "\t" if fmt == "tsv" else ",", text_col, where)
        else:
            yield from _jsonl_rows(stream, text_col, where)
    except UnicodeDecodeError as e:
        fix = "convert it to UTF-8" + (", one text per line" if fmt == "text" else "")
        raise DataError(f"{where} is not UTF-8 text (byte {e.object[e.start]:#04x})", fix) from e
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"cannot read {where}: {e}", "check the file") from e


def _text_rows(stream: IO[str]) -> Iterator[tuple[dict[str, Any], str]]:
    # Iterating a stream opened with newline="" splits on \n, \r and \r\n only: never on
    # U+0085, U+2028 or a form feed, which str.splitlines() would also split on.
    for line in _lines(stream):
        if line.strip():
            yield {"text": line}, line


def _lines(stream: IO[str]) -> Iterator[str]:
    """Lines ending in `\\n` (a trailing `\\r` dropped); a lone `\\r` stays inside the text."""
    pending = ""
    for piece in stream:
        pending += piece
        if not pending.endswith("\n"):
            continue  # a lone \r ended this piece; the line goes on
        yield pending[:-1].removesuffix("\r")
        pending = ""
    if pending:
        yield pending.removesuffix("\r")


def _csv_rows(
    stream: IO[str], delimiter: str, text_col: str, where: str
) -> Iterator[tuple[dict[str, Any], str]]:
    reader = csv.DictReader(stream, delimiter=delimiter)
    if reader.fieldnames is None or text_col not in reader.fieldnames:
        cols = ", ".join(reader.fieldnames or []) or "none"
        raise DataError(
            f"{where} has no column {text_col!r} (its columns: {cols})",
            "name the text column with --text-col",
        )
    for i, row in enumerate(reader, start=2):
        if None in row:
            raise DataError(f"{where} line {i}: more fields than the header has", "fix the row")
        yield row, row[text_col] or ""


def _jsonl_rows(stream: IO[str], text_col: str, where: str) -> Iterator[tuple[dict[str, Any], str]]:
    for i, line in enumerate(_lines(stream), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where} line {i} is not JSON ({e.msg})", "one object a line") from e
        if not isinstance(row, dict) or not isinstance(row.get(text_col), str):
            raise DataError(
                f"{where} line {i} has no string field {text_col!r}",
                "name the text field with --text-col",
            )
        yield row, row[text_col]


def _chunks(rows: Iterable[Any], n: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class Writer:
    """Writes scored rows as CSV or JSONL, the input's fields first."""

    def __init__(self, out: IO[str], fmt: str, labels: list[str]) -> None:
        self.out, self.fmt, self.labels = out, fmt, labels
        self._csv: csv.DictWriter | None = None

    def write(self, row: dict[str, Any], label: str, probs: dict[str, float]) -> None:
        if self.fmt == "jsonl":
            # ASCII JSON: no raw U+0085 / U+2028 for a reader that splits on them
            self.out.write(json.dumps({**row, "label": label, "probs": probs}))
            self.out.write("\n")
            return
        rec = {**row, "label": label, **{f"prob_{k}": f"{v:.6f}" for k, v in probs.items()}}
        if self._csv is None:
            delim = "\t" if self.fmt == "tsv" else ","
            self._csv = csv.DictWriter(self.out, fieldnames=list(rec), delimiter=delim)
            self._csv.writeheader()
        self._csv.writerow(rec)


def score_stream(
    clf: Classifier, rows: Iterable[tuple[dict[str, Any], str]], chunk: int = CHUNK
) -> Iterator[tuple[dict[str, Any], str, dict[str, float]]]:
    """(row, label, probabilities) for each input row, `chunk` rows per onnxruntime pass."""
    n = 0
    for part in _chunks(rows, chunk):
        for i, (_, text) in enumerate(part):  # named by its place in the whole input
            if not text.strip():
                raise DataError(f"text {n + i + 1} is empty", "give some text to classify")
        probs = clf.predict_proba([text for _, text in part])
        for (row, _), p in zip(part, probs, strict=True):
            pred = clf.prediction(p)
            yield row, pred.label, pred.probs
        n += len(part)


__all__ = ["CHUNK", "FORMATS", "Writer", "detect_format", "open_input", "read_rows", "score_stream"]
