"""The external-data export layout (docs/onnx-format.md): graph + page-aligned weights file."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from test_export import random_seqs, tiny_model

from edge_tl.errors import ExportError


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=3)


@pytest.fixture()
def pair(model, tmp_path: Path) -> tuple[Path, Path]:
    """One model exported both ways: (single file, external-data graph)."""
    from edge_tl.deploy.export import export_onnx

    single = export_onnx(model, tmp_path / "single.onnx", vocab="full")
    (tmp_path / "ext").mkdir()
    ext = export_onnx(model, tmp_path / "ext" / "m.onnx", external_data=True, vocab="full")
    return single, ext


def test_data_header_known_answer() -> None:
    from edge_tl.deploy.export import data_header

    digest = hashlib.sha256(b"edge_tl").digest()
    # Spelled out from the spec: magic, u32 LE version 1, 4 zero bytes, digest, zeros to 4096.
    want = b"ETLXDAT1" + b"\x01\x00\x00\x00" + b"\x00" * 4 + digest + b"\x00" * (4096 - 48)
    assert data_header(digest) == want
    with pytest.raises(ValueError):
        data_header(digest[:31])


def test_layout_matches_the_spec(pair) -> None:
    single, ext = pair
    data = ext.with_name("m.onnx.data")
    raw = data.read_bytes()
    proto = onnx.load(ext, load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    desc = json.loads(meta["edge_tl.external_data"])
    assert desc == {
        "location": "m.onnx.data",
        "size": len(raw),
        "sha256": hashlib.sha256(raw[4096:]).hexdigest(),
    }
    assert raw[16:48].hex() == desc["sha256"]
    moved = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert moved, "no initializer went to the data file"
    ref = {t.name: t.raw_data for t in onnx.load(single).graph.initializer}
    for t in moved:
        kv = {e.key: e.value for e in t.external_data}
        off, n = int(kv["offset"]), int(kv["length"])
        assert kv["location"] == "m.onnx.data" and off % 4096 == 0 and off >= 4096
        assert raw[off : off + n] == ref[t.name]  # the same bytes the single file holds inline
    # Every other metadata key is the single file's, byte for byte, but for the export time.
    single_meta = {p.key: p.value for p in onnx.load(single).metadata_props}
    assert set(meta) - set(single_meta) == {"edge_tl.external_data"}
    assert onnx.load(ext).graph.initializer  # the stock onnx loader reads the pair too
    assert ext.stat().st_size < single.stat().st_size
    assert oct(data.stat().st_mode & 0o777) == "0o600"


def test_predictions_equal_the_single_file(model, pair) -> None:
    from edge_tl.deploy.predict import Classifier

    single, ext = pair
    a, b = Classifier(single), Classifier(ext)
    seqs = random_seqs(model, [1, 3, 7, 19, 25], seed=4)
    np.testing.assert_array_equal(a.proba_ids(seqs), b.proba_ids(seqs))
    assert b.meta.external_data["location"] == "m.onnx.data"


def test_int8_external(model, tmp_path: Path) -> None:
    from edge_tl.deploy.export import export_onnx
    from edge_tl.deploy.predict import Classifier

    p = export_onnx(model, tmp_path / "q.onnx", quantize="int8", external_data=True, vocab="full")
    probs = Classifier(p).proba_ids(random_seqs(model, [4, 9]))
    assert probs.shape == (2, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    "damage", ["missing", "truncated", "magic", "version", "digest", "other_export", "extended"]
)
def test_reader_rejects_a_data_file_that_is_not_this_graphs(model, pair, damage: str) -> None:
    from edge_tl.deploy.export import export_onnx
    from edge_tl.deploy.predict import Classifier

    _, ext = pair
    data = ext.with_name("m.onnx.data")
    if damage == "missing":
        data.unlink()
    elif damage == "truncated":
        data.write_bytes(data.read_bytes()[:-1])
    elif damage == "magic":
        _flip(data, 0)
    elif damage == "version":
        _flip(data, 9)
    elif damage == "digest":
        _flip(data, 20)
    elif damage == "extended":
        data.write_bytes(data.read_bytes() + b"\0" * 4096)
    else:  # same shapes, other weights: another export's data file copied over this one's
        other = export_onnx(
            tiny_model(seed=4), ext.with_name("o.onnx"), external_data=True, vocab="full"
        )
        shutil.copyfile(other.with_name("o.onnx.data"), data)
    with pytest.raises(ExportError) as e:
        Classifier(ext)
    assert "m.onnx" in str(e.value) and "export" in str(e.value)


@pytest.mark.parametrize("location", ["../m.onnx.data", "/tmp/x.data", "", "a\\b"])
def test_reader_rejects_a_location_outside_the_folder(pair, location: str) -> None:
    from edge_tl.deploy.artefact import read_metadata

    _, ext = pair
    proto = onnx.load(ext, load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    desc = json.loads(meta["edge_tl.external_data"])
    with pytest.raises(ExportError, match="external_data"):
        read_metadata({**meta, "edge_tl.external_data": json.dumps({**desc, "location": location})})
    for bad in ({**desc, "size": "12"}, {**desc, "sha256": "xyz"}, {**desc, "size": 10}):
        with pytest.raises(ExportError, match="external_data"):
            read_metadata({**meta, "edge_tl.external_data": json.dumps(bad)})


def test_killed_between_the_two_writes_is_caught(model, pair, monkeypatch) -> None:
    """Weights are written first; a kill before the graph leaves a pair predict rejects."""
    import edge_tl.deploy.export
    from edge_tl.deploy.predict import Classifier

    _, ext = pair
    real = edge_tl.deploy.export.atomic_write

    def die_on_graph(path, data, mode=0o600):
        if Path(path).suffix == ".onnx":
            raise KeyboardInterrupt  # the process dies after the .data rename
        real(path, data, mode)

    monkeypatch.setattr(edge_tl.deploy.export, "atomic_write", die_on_graph)
    with pytest.raises(KeyboardInterrupt):
        edge_tl.deploy.export.export_onnx(tiny_model(seed=5), ext, external_data=True, vocab="full")
    with pytest.raises(ExportError, match="does not belong"):
        Classifier(ext)


def test_cli_external_data_and_its_conflicts(model, tmp_path: Path, monkeypatch) -> None:
    import edge_tl.store.models
    from edge_tl.cli import cli
    from edge_tl.store import keys

    monkeypatch.setattr(edge_tl.store.models, "load_model", lambda name: model, raising=False)
    out = tmp_path / "m.onnx"
    res = CliRunner().invoke(
        cli, ["export", "tiny", "--out", str(out), "--external-data", "--vocab", "full"]
    )
    assert res.exit_code == 0, res.output
    assert "weights in m.onnx.data" in res.output
    res = CliRunner().invoke(cli, ["predict", str(out), "the movie was great", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)[0]["label"] in model.labels

    out.with_name("m.onnx.data").unlink()
    res = CliRunner().invoke(cli, ["predict", str(out), "the movie was great"])
    assert res.exit_code == 1
    assert res.output.startswith("Error: ") and "Traceback" not in res.output

    keys.init_identity(None)
    res = CliRunner().invoke(
        cli, ["export", "tiny", "--out", str(tmp_path / "e.onnx"), "--external-data", "--encrypt"]
    )
    assert res.exit_code == 1 and "do not go together" in res.output
    assert not list(tmp_path.glob("e.onnx*"))


def test_default_layout_follows_the_size(model, tmp_path: Path, monkeypatch) -> None:
    """Default: one file for a small model; two files above EXTERNAL_ABOVE (their start is
    the fast one), unless encrypted or --one-file asks for one."""
    import edge_tl.deploy.export
    import edge_tl.store.models
    from edge_tl.cli import cli
    from edge_tl.store import keys

    monkeypatch.setattr(edge_tl.store.models, "load_model", lambda name: model, raising=False)

    def export(name: str, *flags: str) -> list[str]:
        out = tmp_path / name
        res = CliRunner().invoke(
            cli, ["export", "tiny", "--out", str(out), "--vocab", "full", *flags]
        )
        assert res.exit_code == 0, res.output
        ok = CliRunner().invoke(cli, ["predict", str(out), "the movie was great", "--json"])
        assert ok.exit_code == 0, ok.output
        return sorted(p.name for p in tmp_path.glob(f"{name}*"))

    assert export("small.onnx") == ["small.onnx"]
    monkeypatch.setattr(edge_tl.deploy.export, "EXTERNAL_ABOVE", 1000)
    assert export("big.onnx") == ["big.onnx", "big.onnx.data"]
    assert export("one.onnx", "--one-file") == ["one.onnx"]
    keys.init_identity(None)
    assert export("enc.onnx", "--encrypt") == ["enc.onnx"]
