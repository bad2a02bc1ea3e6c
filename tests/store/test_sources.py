"""Source parsers: every format, every malformed input gives a clear DataError."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import uuid
from pathlib import Path

import pyrage
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tinydata import run_child

from edge_tl.errors import DataError, DecryptError
from edge_tl.store import keys
from edge_tl.store.sources import detect_format, read_source

ROWS = [("good film", "pos"), ('bad, "awful"\nfilm', "neg"), ("Straße ☃", None)]


def _csv_bytes(rows=ROWS, delimiter=",", header=("text", "label")) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    w.writerow(header)
    for t, lab in rows:
        w.writerow([t, lab or ""])
    return buf.getvalue().encode()


def _read(path: Path, **kw) -> list[tuple[str, str | None]]:
    return list(read_source(path, **kw))


@pytest.mark.parametrize("wrap", ["plain", "gz", "xz", "bz2"])
def test_csv_round_trip_and_compression(tmp_path, wrap):
    raw = _csv_bytes()
    packers = {"plain": lambda b: b, "gz": gzip.compress, "xz": lzma.compress, "bz2": bz2.compress}
    path = tmp_path / ("d.csv" + ("" if wrap == "plain" else f".{wrap}"))
    path.write_bytes(packers[wrap](raw))
    assert _read(path) == ROWS


def test_tsv_jsonl_and_custom_columns(tmp_path):
    tsv = tmp_path / "d.tsv"
    tsv.write_bytes(_csv_bytes(delimiter="\t"))
    assert _read(tsv) == ROWS
    custom = tmp_path / "c.csv"
    custom.write_bytes(_csv_bytes(header=("review", "sentiment")))
    assert _read(custom, text_col="review", label_col="sentiment") == ROWS
    jl = tmp_path / "d.jsonl"
    lines = [json.dumps({"body": t, "y": lab}) for t, lab in ROWS] + [""]
    jl.write_text("\n".join(lines), encoding="utf-8")
    assert _read(jl, text_col="body", label_col="y") == ROWS
    ints = tmp_path / "i.jsonl"
    ints.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n', encoding="utf-8")
    assert _read(ints) == [("a", "1"), ("b", "0")]


def test_unlabelled_csv_on_purpose_and_bom_is_dropped(tmp_path):
    p = tmp_path / "u.csv"
    p.write_bytes(b"\xef\xbb\xbftext,id\nhello,1\nworld,2\n")
    assert _read(p, unlabelled=True) == [("hello", None), ("world", None)]


def test_csv_without_a_label_column_names_the_columns(tmp_path):
    """Labels under another column name used to import silently as unlabelled text."""
    p = tmp_path / "reviews.csv"
    p.write_text("text,sentiment\ngood film,pos\nbad film,neg\n", encoding="utf-8")
    assert _err(p) == (
        "reviews.csv: no 'label' column; the columns are: text, sentiment. pass --label-col "
        "with the column that holds the labels, or --unlabelled to import the texts without "
        "labels (language-model data, --lm-data)"
    )
    assert _read(p, label_col="sentiment") == [("good film", "pos"), ("bad film", "neg")]
    tsv = tmp_path / "r.tsv"
    tsv.write_text("text\tsentiment\ngood\tpos\n", encoding="utf-8")
    assert "r.tsv: no 'label' column" in _err(tsv)


@pytest.mark.parametrize(("suffix", "kind"), [(".gz", "gzip"), (".xz", "xz"), (".bz2", "bzip2")])
def test_compressed_name_without_compressed_content(tmp_path, suffix, kind):
    """A .csv.gz that is not gzip was reported as `not valid utf-8`."""
    p = tmp_path / f"d.csv{suffix}"
    p.write_bytes(b"\x00\xff\xfe not compressed at all \x80\x81")
    assert _err(p) == (
        f"d.csv{suffix} is not {kind}-compressed, though its name ends in {suffix}. check that "
        f"it is complete; if it is not compressed, name it without {suffix}"
    )


def test_acl_imdb_folder_layout(tmp_path):
    root = tmp_path / "train"
    for label, names in {"pos": ["1_9", "0_7"], "neg": ["3_1"], "unsup": ["5_0"]}.items():
        (root / label).mkdir(parents=True)
        for n in names:
            (root / label / f"{n}.txt").write_text(f"{label} review {n}", encoding="utf-8")
    (root / "urls_pos.txt").write_text("http://x\n", encoding="utf-8")  # ignored: not in a label
    (root / "labeledBow.feat").write_text("0:1\n", encoding="utf-8")
    rows = _read(root)
    assert sorted(rows, key=str) == sorted(
        [
            ("neg review 3_1", "neg"),
            ("pos review 0_7", "pos"),
            ("pos review 1_9", "pos"),
            ("unsup review 5_0", None),
        ],
        key=str,
    )
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.txt").write_text("only text", encoding="utf-8")
    assert _read(flat) == [("only text", None)]


def _err(path: Path, **kw) -> str:
    with pytest.raises(DataError) as e:
        _read(path, **kw)
    return str(e.value)


def test_malformed_csv_errors_name_the_line(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text('text,label\nfine,a\n"never closed,b\nmore,a\n', encoding="utf-8")
    assert _err(p) == (
        "bad.csv: line 3: malformed CSV (unexpected end of data). "
        "a quote opened on this line is never closed"
    )
    p.write_text("text,label\nfine,a\nmissing\n", encoding="utf-8")
    assert _err(p) == (
        "bad.csv: line 3: expected 2 fields, found 1. "
        "check for a missing column, or a separator inside an unquoted text"
    )
    p.write_text("a,b\n1,2\n", encoding="utf-8")
    assert _err(p) == (
        "bad.csv: no 'text' column; the columns are: a, b. "
        "pass --text-col with the column that holds the text"
    )
    assert _err(p, text_col="a", label_col="zz") == (
        "bad.csv: no column 'zz'; the columns are: a, b. pass --label-col with one of them"
    )
    p.write_bytes(b"")
    assert _err(p) == "bad.csv is empty. the first line must name the columns"


def test_empty_text_is_an_error_unless_skipped(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text("text,label\nok,a\n  ,b\nfine,b\n", encoding="utf-8")
    assert _err(p) == (
        "e.csv: line 3: empty text. remove the row, or pass --skip-empty to drop empty texts"
    )
    stats: dict[str, int] = {}
    assert list(read_source(p, skip_empty=True, stats=stats)) == [("ok", "a"), ("fine", "b")]
    assert stats == {"skipped_empty": 1}


def test_non_utf8_names_the_line_and_encoding_option_fixes_it(tmp_path):
    p = tmp_path / "latin.csv"
    p.write_bytes("text,label\nfine,a\ncaf\xe9 au lait,b\n".encode("latin-1"))
    assert _err(p) == (
        "latin.csv: line 3 is not valid utf-8. "
        "pass --encoding with the file's encoding (for example --encoding latin-1)"
    )
    assert _read(p, encoding="latin-1") == [("fine", "a"), ("café au lait", "b")]
    gz = tmp_path / "latin.csv.gz"
    gz.write_bytes(gzip.compress(p.read_bytes()))
    assert _err(gz).startswith("latin.csv.gz: line 3 is not valid utf-8.")
    folder = tmp_path / "f" / "pos"
    folder.mkdir(parents=True)
    (folder / "x.txt").write_bytes(b"\xff\xfe bad")
    assert _err(tmp_path / "f").startswith("f: pos/x.txt is not valid utf-8.")
    assert _err(p, encoding="no-such-codec") == (
        "unknown encoding 'no-such-codec'. use a Python codec name such as utf-8 or latin-1"
    )


def test_ten_megabyte_single_line(tmp_path):
    p = tmp_path / "huge.csv"
    p.write_bytes(b"text,label\n" + b"x" * 10_000_000 + b",a\n")
    assert _err(p) == (
        "huge.csv: line 2: a field is over the limit of 1,000,000 characters. "
        "split long documents into several rows (or check for an unclosed quote)"
    )
    j = tmp_path / "huge.jsonl"
    j.write_text(json.dumps({"text": "y" * 10_000_000, "label": "a"}) + "\n", encoding="utf-8")
    assert _err(j) == (
        "huge.jsonl: line 1: text of 10,000,000 characters is over the limit of 1,000,000. "
        "split long documents into several rows"
    )
    nl = tmp_path / "one_line.csv"
    nl.write_bytes(b"z" * 10_000_000)  # no newline at all: a 10 MB header line
    assert "over the limit" in _err(nl)


def test_bad_jsonl(tmp_path):
    p = tmp_path / "b.jsonl"
    cases = {
        '{"text": "a"}\n{oops\n': "b.jsonl: line 2: not valid JSON (JSONDecodeError). "
        "each line must hold one JSON object",
        '["a"]\n': "b.jsonl: line 1: not a JSON object. each line must hold one JSON object",
        '{"body": "a"}\n': "b.jsonl: line 1: no key 'text'. pass --text-col with the key that "
        "holds the text",
        '{"text": 3}\n': "b.jsonl: line 1: 'text' is not a string.",
        '{"text": "a", "label": [1]}\n': "b.jsonl: line 1: label 'label' is not a string or an "
        "integer.",
    }
    for content, message in cases.items():
        p.write_text(content, encoding="utf-8")
        assert _err(p) == message


def test_format_detection(tmp_path):
    assert detect_format(Path("x.CSV.gz")) == "csv"
    assert detect_format(Path("x.tsv.age")) == "tsv"
    assert detect_format(Path("x.jsonl.xz")) == "jsonl"
    assert detect_format(tmp_path) == "folder"
    with pytest.raises(DataError, match=r"cannot tell the format of x\.parquet"):
        detect_format(Path("x.parquet"))
    p = tmp_path / "d.txt"
    p.write_bytes(_csv_bytes())
    assert _read(p, fmt="csv") == ROWS


def test_age_source_is_decrypted_in_memory(tmp_path, plaintext_leaks):
    """An age source (here gzip inside age) is read with no plaintext copy anywhere: no file in
    the test's folders, HOME, XDG and temp folders or /dev/shm holds a row's text."""
    pub = keys.init_identity(None)
    canary = "zqcanary" + uuid.uuid4().hex[:12]
    rows = [*ROWS, (f"a review naming {canary}", "pos")]
    p = tmp_path / "secret.csv.gz.age"
    p.write_bytes(
        pyrage.encrypt(gzip.compress(_csv_bytes(rows)), [pyrage.x25519.Recipient.from_str(pub)])
    )
    assert _read(p) == rows
    assert plaintext_leaks(canary) == []
    other = pyrage.x25519.Identity.generate().to_public()
    p.write_bytes(pyrage.encrypt(_csv_bytes(), [other]))
    with pytest.raises(DecryptError) as e:
        _read(p)
    assert str(e.value).startswith(
        "cannot decrypt source secret.csv.gz.age: wrong key, or not an edge_tl vault."
    )


def test_file_encrypted_by_stock_age_cli_imports(tmp_path, age_cli):
    pub = keys.init_identity(None)
    plain = tmp_path / "reviews.csv"
    plain.write_bytes(_csv_bytes())
    enc = tmp_path / "reviews.csv.age"
    run_child([age_cli, "-r", pub, "-o", enc, plain], check=True)
    assert _read(enc) == ROWS
    armored = tmp_path / "armored.csv.age"
    run_child([age_cli, "-a", "-r", pub, "-o", armored, plain], check=True)
    assert _read(armored) == ROWS


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(blob=st.binary(max_size=400), fmt=st.sampled_from(["csv", "tsv", "jsonl"]))
def test_fuzzed_sources_give_rows_or_data_error(tmp_path, blob, fmt):
    if not keys.has_identity():
        keys.init_identity(None)
    p = tmp_path / f"fuzz.{fmt}"
    for content in (blob, b"text,label\n" + blob, b'{"text": "a"}\n' + blob):
        p.write_bytes(content)
        try:
            rows = _read(p)
        except (DataError, DecryptError):  # a fuzzed "age" header fails to decrypt
            continue
        assert all(isinstance(t, str) and t.strip() for t, _ in rows)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.tuples(
            st.text(min_size=1).filter(lambda s: s.strip() and "\r" not in s and "\x00" not in s),
            st.one_of(
                st.none(),
                st.text(min_size=1).filter(
                    lambda s: s == s.strip() and "\r" not in s and "\x00" not in s
                ),
            ),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_csv_written_by_the_csv_module_reads_back(tmp_path, rows):
    p = tmp_path / "rt.csv"
    p.write_bytes(_csv_bytes(rows))
    assert _read(p) == rows


def test_progress_bar_on_a_compressed_source(tmp_path, capsys):
    p = tmp_path / "p.csv.gz"
    p.write_bytes(gzip.compress(_csv_bytes(ROWS * 2000)))
    assert len(_read(p, progress=True)) == 6000
    assert "100.00%" in capsys.readouterr().out  # the bar runs to the end
    assert len(_read(p, progress=False)) == 6000
    assert capsys.readouterr().out == ""
