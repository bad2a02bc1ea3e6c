"""Plain-text corpora for pretraining: txt, jsonl and csv (optionally .gz/.xz), as paragraphs."""

from __future__ import annotations

import csv
import gzip
import io
import json
import lzma
import re
from collections.abc import Iterator
from pathlib import Path

from edge_tl.errors import DataError


def _unwrap(paragraph: str) -> str:
    # Gutenberg books are hard-wrapped at ~70 columns; a paragraph is one text.
    return re.sub(r"\s*\n\s*", " ", paragraph).strip()


def _paragraphs(text: str) -> Iterator[str]:
    for p in re.split(r"\n\s*\n", text):
        p = _unwrap(p)
        if p:
            yield p


def _open_text(path: Path) -> io.TextIOBase:
    name = path.name.lower()
    if name.endswith(".xz"):
        return lzma.open(path, "rt", encoding="utf-8", newline="")  # type: ignore[return-value]
    if name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")  # type: ignore[return-value]
    return open(path, encoding="utf-8", newline="")  # noqa: SIM115


def read_corpus(paths: list[Path]) -> Iterator[str]:
    """Yield paragraphs from txt, jsonl(.xz/.gz) (key `text`) and csv(.gz) (column `text`) files."""
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"corpus file {path} does not exist", "check the --corpus paths")
        stem = re.sub(r"\.(xz|gz)$", "", path.name.lower())
        try:
            with _open_text(path) as f:
                if stem.endswith(".jsonl"):
                    for n, line in enumerate(f, 1):
                        if line.strip():
                            rec = json.loads(line)
                            if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                                raise DataError(f"{path}:{n}: expected a JSON object with 'text'")
                            yield from _paragraphs(rec["text"])
                elif stem.endswith((".csv", ".tsv")):
                    delim = "\t" if stem.endswith(".tsv") else ","
                    reader = csv.DictReader(f, delimiter=delim)
                    if not reader.fieldnames or "text" not in reader.fieldnames:
                        raise DataError(f"{path}: no 'text' column", "name the column 'text'")
                    for row in reader:
                        if row["text"]:
                            yield _unwrap(row["text"])
                else:
                    yield from _paragraphs(f.read())
        except (UnicodeDecodeError, json.JSONDecodeError, lzma.LZMAError, OSError) as e:
            raise DataError(f"cannot read corpus file {path}: {e}") from e


def take_words(paragraphs: Iterator[str], max_words: int) -> list[str]:
    """Collect paragraphs until about `max_words` whitespace-separated words."""
    out, n = [], 0
    for p in paragraphs:
        out.append(p)
        n += p.count(" ") + 1
        if n >= max_words:
            break
    return out


__all__ = ["read_corpus", "take_words"]
