"""Vault record format and store: known answers, tampering, truncation, swaps, crashes, leaks."""

from __future__ import annotations

import csv
import errno
import gzip
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pyrage
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_tl.cli import cli
from edge_tl.errors import DataError, DecryptError, EdgeTLError
from edge_tl.health.integrity import check_store
from edge_tl.store import datasets as data
from edge_tl.store import keys, vault

DOC = Path(__file__).resolve().parents[2] / "docs" / "vault-format.md"
KAT_ID = "000102030405060708090a0b0c0d0e0f"
KAT_HEADER = (
    '{"schema":1,"kind":"dataset","id":"000102030405060708090a0b0c0d0e0f","name":"kat",'
    '"columns":["text","label"],"labels":["neg","pos"],"rows":3,"records_bytes":52,'
    '"content_sha256":"c2606db7ae6734ae8b975ed17a05a6f7bda1bc68dbd898a31552e657ab81282c",'
    '"compression":"none","created":"2025-01-01T00:00:00Z","source":"kat.csv"}'
)
KAT_SECRET = "AGE-SECRET-KEY-1VZN3FC6GTNQNF997YXH032HNRXATR3PDG57YDDGVE4SUYQ6YSK3QNP780Z"


@pytest.fixture
def device() -> str:
    """A device identity without passphrase (no scrypt: fast)."""
    return keys.init_identity(None)


def _kat() -> tuple[vault.VaultHeader, bytes]:
    return vault.encode_records(
        ["good film", "bad film", "Straße ☃"],
        ["pos", "neg", None],
        id=KAT_ID,
        name="kat",
        created="2025-01-01T00:00:00Z",
        source="kat.csv",
        compression="none",
    )


def test_known_answer_vector_matches_independent_encoding():
    texts = [t.encode() for t in ["good film", "bad film", "Straße ☃"]]
    r = (
        b"".join(texts)
        + struct.pack("<3I", *map(len, texts))
        + struct.pack("<3I", 1, 0, 0xFFFFFFFF)
    )
    digest = hashlib.sha256(r + b'["neg","pos"]\n3\n').hexdigest()
    assert digest == "c2606db7ae6734ae8b975ed17a05a6f7bda1bc68dbd898a31552e657ab81282c"
    expected = b"edge_tl-vault/1\n" + KAT_HEADER.encode() + b"\n" + r
    h, pt = _kat()
    assert pt == expected
    assert hashlib.sha256(pt).hexdigest() == (
        "60b87f1907e4928c487c8d3d33b1ea87b68300a400ccb6d26e49ee0e84fac2e8"
    )
    assert h.content_sha256 == digest
    _, texts_out, labels_out = vault.decode_vault(pt, "kat")
    assert texts_out == ["good film", "bad film", "Straße ☃"]
    assert labels_out == ["pos", "neg", None]


def test_doc_vector_decrypts_with_the_documented_key():
    doc = DOC.read_text(encoding="utf-8")
    assert KAT_HEADER in doc
    armored = doc[doc.rindex("-----BEGIN AGE") : doc.index("-----END AGE ENCRYPTED FILE-----") + 32]
    pt = pyrage.decrypt(armored.encode(), [pyrage.x25519.Identity.from_str(KAT_SECRET)])
    assert pt == _kat()[1]


rows_strategy = st.lists(
    st.tuples(
        st.text(min_size=1, max_size=40),
        st.one_of(st.none(), st.sampled_from(["a", "b", "ü", "long label"])),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(rows=rows_strategy, compression=st.sampled_from(["none", "zlib-blocks"]))
def test_encode_decode_round_trip(rows, compression):
    texts = [t for t, _ in rows]
    labels = [lab for _, lab in rows]
    h, pt = vault.encode_records(
        texts, labels, id=KAT_ID, name="x", created="t", source="s", compression=compression
    )
    h2, t2, l2 = vault.decode_vault(pt, "x")
    assert (t2, l2) == (texts, labels)
    assert h2 == h
    assert h.labels == sorted({lab for lab in labels if lab is not None})


def test_fingerprint_ignores_compression_and_name_but_not_labels():
    a = vault.encode_records(["x", "y"], ["p", "q"], id=KAT_ID, name="a", created="1", source="s")
    b = vault.encode_records(
        ["x", "y"], ["p", "q"], id="f" * 32, name="b", created="2", source="t", compression="none"
    )
    c = vault.encode_records(["x", "y"], ["p", "r"], id=KAT_ID, name="a", created="1", source="s")
    assert a[0].content_sha256 == b[0].content_sha256 != c[0].content_sha256


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blob=st.binary(max_size=600))
def test_decoder_rejects_garbage_with_data_error_only(blob):
    for candidate in (blob, vault.MAGIC + blob, _kat()[1][:200] + blob):
        try:
            vault.decode_vault(candidate, "fuzz")
        except DataError:
            pass


def test_every_plaintext_flip_is_rejected_or_harmless():
    """Age authenticates the file; the record layer alone still rejects every meaningful flip."""
    for compression in ("none", "zlib-blocks"):
        _, pt = vault.encode_records(
            ["good film", "bad film", "Straße ☃"],
            ["pos", "neg", None],
            id=KAT_ID,
            name="kat",
            created="2025-01-01T00:00:00Z",
            source="kat.csv",
            compression=compression,
        )
        header_end = pt.index(b"\n", len(vault.MAGIC))
        for i in range(len(pt)):
            for mask in (0x01, 0x80):
                bad = bytearray(pt)
                bad[i] ^= mask
                try:
                    _, t, lab = vault.decode_vault(bytes(bad), "kat")
                except DataError:
                    continue
                # What decodes must be the same rows: informational header text (created, source)
                # or deflate's ignored padding bits. Anything in R is covered by the hash.
                assert i < header_end or compression == "zlib-blocks", (compression, i)
                assert (t, lab) == (["good film", "bad film", "Straße ☃"], ["pos", "neg", None])


def test_unsupported_version_is_named():
    _, pt = _kat()
    with pytest.raises(DataError, match="unsupported vault format version '2'"):
        vault.decode_vault(b"edge_tl-vault/2" + pt[15:], "kat")


def _small_dataset() -> Path:
    data.save_dataset("small", ["a fine film", "awful", "meh"], ["pos", "neg", None])
    info = data.dataset_info("small")
    return keys.identity_path().parent.parent / "vault" / f"{info.id}.age"


def test_every_byte_flip_and_truncation_of_a_small_vault_is_rejected(device):
    path = _small_dataset()
    good = path.read_bytes()
    assert data.open_dataset("small").texts == ["a fine film", "awful", "meh"]
    rejected = 0
    cases = [good[:n] for n in range(len(good))] + [good + b"\x00"]
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 0x01 if i % 2 else 0x80
        cases.append(bytes(bad))
    for bad in cases:
        path.write_bytes(bad)
        with pytest.raises((DecryptError, DataError)) as e:
            data.open_dataset("small")
        assert "small" in str(e.value)  # the damaged dataset is named
        rejected += 1
    assert rejected == 2 * len(good) + 1
    path.write_bytes(good)
    assert data.open_dataset("small").labels == ["pos", "neg", None]


def test_swapped_vault_files_are_detected(device):
    data.save_dataset("one", ["x one", "y one"], ["a", "b"])
    data.save_dataset("two", ["x two", "y two"], ["a", "b"])
    folder = keys.identity_path().parent.parent / "vault"
    p1 = folder / f"{data.dataset_info('one').id}.age"
    p2 = folder / f"{data.dataset_info('two').id}.age"
    b1, b2 = p1.read_bytes(), p2.read_bytes()
    p1.write_bytes(b2)
    p2.write_bytes(b1)
    for name in ("one", "two"):
        with pytest.raises(DataError, match=f"dataset '{name}' .* holds another dataset"):
            data.open_dataset(name)


def test_vault_file_of_another_device_is_rejected(device):
    path = _small_dataset()
    other = pyrage.x25519.Identity.generate().to_public()
    _, pt = _kat()
    path.write_bytes(pyrage.encrypt(pt, [other]))
    result = CliRunner().invoke(cli, ["data", "head", "small"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: cannot decrypt dataset 'small' ({path.name}): wrong key, or not an edge_tl vault."
        " check that it was encrypted for this device (`edge-tl keys show`) and is intact"
    )


def test_names_are_not_in_file_names_and_index_is_encrypted(device):
    data.save_dataset("secret project", ["hello there", "bye now"], ["topsecretlabel", "other"])
    folder = keys.identity_path().parent.parent / "vault"
    names = sorted(p.name for p in folder.iterdir())
    assert all("secret" not in n for n in names)
    for p in folder.iterdir():
        blob = p.read_bytes()
        assert b"secret" not in blob and b"topsecretlabel" not in blob
        if p.suffix == ".age":
            assert blob.startswith(b"age-encryption.org/v1\n")


def test_lost_index_is_rebuilt_and_restored_files_are_adopted(device):
    data.save_dataset("keep", ["one text", "two text"], ["a", "b"])
    data.save_dataset("restored", ["three", "four"], ["a", "b"])
    fp = data.dataset_info("keep").fingerprint
    folder = keys.identity_path().parent.parent / "vault"
    (folder / "index.age").unlink()
    assert [i.name for i in data.list_datasets()] == ["keep", "restored"]
    assert data.rebuild_index() == 2
    assert data.dataset_info("keep").fingerprint == fp
    # A file restored from a backup while the index no longer lists it: kept, then adopted.
    restored = folder / f"{data.dataset_info('restored').id}.age"
    blob = restored.read_bytes()
    data.remove_dataset("restored")
    restored.write_bytes(blob)
    data.save_dataset("other", ["five", "six"], ["a", "b"])  # a write must not delete it
    assert restored.exists()
    result = CliRunner().invoke(cli, ["data", "reindex"])
    assert result.output == "The index lists 3 datasets\n"
    assert data.open_dataset("restored").texts == ["three", "four"]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_disk_full_leaves_no_partial_vault(device, monkeypatch):
    data.save_dataset("before", ["x", "y"], ["a", "b"])
    folder = keys.identity_path().parent.parent / "vault"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    real_fsync = os.fsync
    for target in ("vault file", "index"):  # the dataset's file, or the index written after it

        def full_disk(fd: int, target=target) -> None:
            name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
            is_index = name.startswith(".index.age.")
            if name.endswith(".part") and is_index == (target == "index"):
                raise OSError(errno.ENOSPC, "No space left on device")
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", full_disk)
        with pytest.raises(EdgeTLError, match="no space left on the device"):
            data.save_dataset("after", ["p", "q"], ["a", "b"])
        monkeypatch.setattr(os, "fsync", real_fsync)
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
        assert [i.name for i in data.list_datasets()] == ["before"]


def _synthetic_csv(path: Path, rows: int, canary: str = "") -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(rows):
            w.writerow(
                [f"review {i} {canary} " + "lorem ipsum dolor " * 30, "pos" if i % 3 else "neg"]
            )


def test_kill_9_during_import_leaves_no_partial_vault(device, tmp_path):
    src = tmp_path / "big.csv"
    _synthetic_csv(src, 40_000)  # ~22 MB
    folder = keys.identity_path().parent.parent / "vault"
    code = (
        "import sys; from pathlib import Path; from edge_tl.store.datasets import import_source;"
        "import_source(Path(sys.argv[1]), 'big', progress=False)"
    )
    killed = 0
    # From "still starting up" to "mid-write": a quiet machine imports this file in ~0.3 s.
    for delay in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.9, 1.9):
        proc = subprocess.Popen([sys.executable, "-c", code, str(src)], env=os.environ.copy())
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed += 1
        proc.wait()
        names = [i.name for i in data.list_datasets()]
        assert names in ([], ["big"])
        for p in folder.glob("*.age"):  # every finished vault file decrypts completely
            keys.decrypt_on_device(p.read_bytes(), p.name)
        # `doctor --check-store` finds at most what the kill left in the vault folder: the
        # writer's temp file, or a finished vault file the index does not list yet.
        assert all(
            p.path.parent == folder and p.path.suffix in (".part", ".age")
            for p in check_store().problems
        )
        if names:
            assert len(data.open_dataset("big")) == 40_000
            data.remove_dataset("big")
    assert killed >= 1
    data.import_source(src, "big", progress=False)  # the next import cleans up after a kill
    assert not list(folder.glob(".*.part"))
    assert data.open_dataset("big").fingerprint == data.dataset_info("big").fingerprint


def _scan(
    roots: list[Path], needles: list[bytes], since: float | None = None, skip: Path | None = None
) -> list[str]:
    hits = []
    for root in roots:
        for dirpath, dirs, files in os.walk(root):
            if skip is not None:
                dirs[:] = [d for d in dirs if Path(dirpath, d) != skip]
            for fn in files:
                p = Path(dirpath) / fn
                try:
                    st_ = p.lstat()
                    if not p.is_file() or st_.st_size > 300_000_000:
                        continue
                    if since is not None and st_.st_mtime < since:
                        continue
                    blob = p.read_bytes()
                except OSError:
                    continue
                hits.extend(f"{p}: {n!r}" for n in needles if n in blob)
    return hits


def test_canary_never_reaches_the_disk(
    device, tmp_path, tmp_path_factory, monkeypatch, edge_tl_home
):
    system_tmp = Path(tempfile.gettempdir())
    canary = "CANARY" + uuid.uuid4().hex
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    src = src_dir / "reviews.csv"
    with open(src, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(300):
            w.writerow([f"text {i} {canary} café", f"{canary}-{'pos' if i % 2 else 'neg'}"])
    scratch = tmp_path / "scratch_tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    start = time.time() - 1
    runner = CliRunner()
    name = f"ds-{canary}"
    sealed = src_dir / "reviews.csv.age"  # the same source, age-encrypted for this device
    sealed.write_bytes(keys.encrypt_for_device(src.read_bytes()))
    for args in (
        ["data", "import", str(src), "--name", name],
        ["data", "import", str(sealed), "--name", f"sealed-{canary}"],
        ["data", "head", f"sealed-{canary}"],
        ["data", "list"],
        ["data", "info", name],
        ["data", "head", name, "-n", "3"],
        ["data", "split", name, "--sizes", "10,20", "--seed", "1"],
    ):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
    assert canary in runner.invoke(cli, ["data", "head", name, "-n", "1"]).output
    ds = data.open_dataset(name)
    assert len(ds.labelled()[0]) == 300 and canary in ds.texts[0]
    needles = [canary.encode(), canary.encode("utf-16-le"), canary[6:].encode()]
    assert _scan([edge_tl_home, scratch], needles) == []
    # Nothing new anywhere in the system temp folder either (pytest's own folder holds the source).
    basetemp = tmp_path_factory.getbasetemp()
    assert _scan([system_tmp], needles, since=start, skip=basetemp) == []


def test_full_imdb_train_round_trip(device, shared_data):
    src = shared_data / "imdb" / "train.csv.gz"
    report = data.import_source(src, "imdb-train", progress=False)
    with gzip.open(src, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    ds = data.open_dataset("imdb-train")
    assert ds.texts == [r["text"] for r in rows]
    assert ds.labels == [r["label"] for r in rows]
    assert ds.label_names == ("neg", "pos")
    assert report.info.label_counts == {"pos": 12_500, "neg": 12_500}
    # The fingerprint is the documented hash, recomputed here from the CSV alone.
    enc = [r["text"].encode() for r in rows]
    idx = [1 if r["label"] == "pos" else 0 for r in rows]
    h = hashlib.sha256(b"".join(enc))
    h.update(struct.pack(f"<{len(enc)}I", *map(len, enc)))
    h.update(struct.pack(f"<{len(idx)}I", *idx))
    h.update(b'["neg","pos"]\n25000\n')
    assert ds.fingerprint == h.hexdigest()


@pytest.mark.skipif(shutil.which("age") is None, reason="the `age` CLI is not installed")
def test_stock_age_cli_decrypts_a_vault_file(device):
    path = _small_dataset()
    out = subprocess.run(
        ["age", "-d", "-i", str(keys.identity_path()), str(path)], capture_output=True, check=True
    ).stdout
    assert out.startswith(b"edge_tl-vault/1\n")
    header = json.loads(out.split(b"\n")[1])
    assert header["name"] == "small" and header["rows"] == 3
    _, texts, _ = vault.decode_vault(out, "age output")
    assert texts == ["a fine film", "awful", "meh"]
    index = subprocess.run(
        ["age", "-d", "-i", str(keys.identity_path()), str(path.parent / "index.age")],
        capture_output=True,
        check=True,
    ).stdout
    assert json.loads(index.split(b"\n")[1])["datasets"]["small"]["id"] == path.stem


@settings(max_examples=200, deadline=None)
@given(blob=st.binary(max_size=300), cut=st.integers(0, 400), flip=st.integers(0, 400))
def test_index_parser_rejects_garbage_cleanly(blob, cut, flip):
    good = (
        b'edge_tl-index/1\n{"datasets": {"d": {"id": "' + b"a" * 32 + b'", "rows": 2, "labels": '
        b'["x", "y"], "label_counts": {"x": 1, "y": 1}, "unlabelled": 0, "fingerprint": "'
        + b"b" * 64
        + b'", "records_bytes": 20, "file_bytes": 300, "created": "t", "source": "s"}}}\n'
    )
    assert data._parse_index(good)["d"].rows == 2
    mutated = bytearray(good)
    mutated[flip % len(good)] ^= 0x20
    for candidate in (blob, data.INDEX_MAGIC + blob, good[:cut], bytes(mutated)):
        try:
            data._parse_index(candidate)
        except (ValueError, TypeError, KeyError, RecursionError):
            pass  # exactly what _load_index turns into "the vault index is damaged"
