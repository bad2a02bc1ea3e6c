"""The base store and `edge-tl base` CLI: import, list, info, verify, rm, builtins, crashes."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tinydata import popen_child

from edge_tl.awd_lstm import lm_state_keys
from edge_tl.bases import store as bases
from edge_tl.bases.bundle import (
    FASTAI_TOKENIZER,
    build_bundle,
    file_sha256,
    key_fingerprint,
    read_card,
)
from edge_tl.bases.store import base_info, import_base, list_bases, load_base, remove_base
from edge_tl.cli import cli
from edge_tl.config import SPECIAL_TOKENS, ModelConfig
from edge_tl.errors import BundleError, StoreError
from edge_tl.store.home import subdir

CFG = ModelConfig(vocab_size=20, emb_sz=4, n_hid=6, n_layers=2)
KEY = Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)
FP = key_fingerprint(KEY.public_key())
CORRUPT = "do not use this file; copy it again from its source"


def tiny(path: Path, name: str = "tiny", key=None, seed: int = 0) -> Path:
    g = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(s, generator=g) for k, s in lm_state_keys(CFG).items()}
    vocab = SPECIAL_TOKENS + [f"w{i}" for i in range(CFG.vocab_size - len(SPECIAL_TOKENS))]
    path.write_bytes(
        build_bundle(
            name=name,
            model_cfg=CFG,
            vocab=vocab,
            state_dict=sd,
            tokenizer=FASTAI_TOKENIZER,
            corpus={"description": "random", "license": "CC0-1.0"},
            description="a tiny base",
            private_key=key,
            created="2024-01-01T00:00:00Z",
            tool="edge_tl test",
        )
    )
    return path


def run(*args: str):
    return CliRunner().invoke(cli, ["base", *map(str, args)])


def store_entries() -> list[str]:
    return sorted(p.name for p in subdir("bases").iterdir())


@pytest.fixture
def pub(tmp_path) -> Path:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    p = tmp_path / "packer.pub"
    p.write_bytes(KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return p


def test_cli_import_list_info_load_rm(tmp_path, pub):
    b = tiny(tmp_path / "t.etlb", key=KEY)
    res = run("list")
    assert res.exit_code == 0
    assert res.output == "No bases installed. Import one with `edge-tl base import FILE`.\n"
    res = run("import", b, "--trust", pub)
    assert (res.exit_code, res.output) == (0, f"Imported base tiny (signature by {FP} verified)\n")
    res = run("import", b, "--allow-unsigned", "--name", "copy2")
    assert (
        res.output == f"Imported base copy2 (hashes verified; signed by {FP} but not checked "
        "(no --trust))\n"
    )
    res = run("list")
    lines = res.output.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "SHAPE", "DTYPE", "SIZE", "SIGNATURE"]
    assert lines[1].split()[:2] == ["copy2", "imported"] and lines[1].endswith("(not checked)")
    assert lines[2].split()[:7] == ["tiny", "imported", "20v", "4e", "6h", "2l", "fp16"]
    assert lines[2].endswith(f"{FP} (verified)")
    data = json.loads(run("list", "--json").output)
    assert [d["name"] for d in data] == ["copy2", "tiny"]
    assert data[1]["model_config"]["vocab_size"] == 20 and data[1]["signature_verified"] is True
    assert data[1]["sha256"] == file_sha256(b) and data[1]["corpus"]["license"] == "CC0-1.0"
    info = run("info", "tiny").output
    assert "kind:         imported\n" in info and f"signature:    {FP} (verified)\n" in info
    assert json.loads(run("info", "tiny", "--json").output)["source"] == "t.etlb"
    assert load_base("tiny").vocab[1] == "xxpad"
    assert run("rm", "tiny").output == "Removed base tiny\n"
    assert [i.name for i in list_bases()] == ["copy2"]
    res = run("rm", "tiny")
    assert (res.exit_code, res.output) == (
        1,
        "Error: base 'tiny' not found. run `edge-tl base list` to see the installed bases\n",
    )
    res = run("info", "nope")
    assert res.output.startswith("Error: base 'nope' not found.")


def test_import_refusals_leave_the_store_empty(tmp_path, pub):
    unsigned = tiny(tmp_path / "u.etlb")
    trust_hint = (
        "pass --trust PUBKEY_FILE with the packer's public key, or --allow-unsigned if "
        "you trust where the file came from"
    )
    res = run("import", unsigned)
    assert (res.exit_code, res.output) == (1, f"Error: bundle u.etlb: not signed. {trust_hint}\n")
    res = run("import", unsigned, "--trust", pub)
    assert res.output == (
        "Error: bundle u.etlb: not signed, but a trusted key was given. get a "
        "signed bundle from the packer, or import with --allow-unsigned\n"
    )
    other = tiny(tmp_path / "o.etlb", key=Ed25519PrivateKey.from_private_bytes(b"\x02" * 32))
    res = run("import", other, "--trust", pub)
    assert res.output.startswith("Error: bundle o.etlb: signed by ed25519:")
    assert res.output.endswith(
        f", not by the trusted key {FP}. pass the packer's public key with --trust\n"
    )
    flipped = bytearray(unsigned.read_bytes())
    flipped[-3] ^= 0xFF
    (tmp_path / "f.etlb").write_bytes(bytes(flipped))
    res = run("import", tmp_path / "f.etlb", "--allow-unsigned")
    assert res.output == (
        "Error: bundle f.etlb: member weights.safetensors sha256 mismatch "
        f"(corrupted or tampered with). {CORRUPT}\n"
    )
    res = run("import", tmp_path / "missing.etlb", "--allow-unsigned")
    assert res.output == "Error: bundle missing.etlb: file not found. check the path\n"
    res = run("import", unsigned, "--allow-unsigned", "--name", "../evil")
    assert res.exit_code == 1 and "name '../evil' is not allowed" in res.output
    assert store_entries() == []
    assert run("import", unsigned, "--allow-unsigned").exit_code == 0
    res = run("import", unsigned, "--allow-unsigned")
    assert res.output == (
        "Error: base 'tiny' already exists. remove it with `edge-tl base rm "
        "tiny` or import under another --name\n"
    )
    assert store_entries() == ["tiny"]


def test_verify_cli(tmp_path, pub):
    b = tiny(tmp_path / "t.etlb", key=KEY)
    res = run("verify", b, "--allow-unsigned")
    assert res.output == (
        "OK t.etlb: base tiny, 20 tokens, emb 4, hidden 6, 2 layers, fp16; "
        "hashes verified, signature not checked\n"
    )
    (tmp_path / "cut.etlb").write_bytes(b.read_bytes()[:-10])
    res = run("verify", tmp_path / "cut.etlb", "--trust", pub)
    size = b.stat().st_size
    assert (res.exit_code, res.output) == (
        1,
        f"Error: bundle cut.etlb: truncated (file is "
        f"{size - 10} bytes, layout needs {size}). {CORRUPT}\n",
    )
    assert store_entries() == []


def test_interrupted_import_leaves_nothing(tmp_path, monkeypatch):
    b = tiny(tmp_path / "t.etlb")

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(bases, "verify_bundle", boom)
    with pytest.raises(KeyboardInterrupt):
        import_base(b, allow_unsigned=True)
    assert store_entries() == []


def test_killed_import_is_invisible_and_cleaned(tmp_path):
    """SIGKILL a real import mid-way: nothing is listed, and the next store call cleans up."""
    b = tiny(tmp_path / "t.etlb")
    code = (
        "import time, edge_tl.bases.store as b\n"
        "b.verify_bundle = lambda *a, **k: time.sleep(60)\n"  # hold the import after copying
        f"b.import_base({str(b)!r}, allow_unsigned=True)\n"
    )
    proc = popen_child([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 20
        while not any(n.endswith(".part") for n in store_entries()):
            assert time.monotonic() < deadline and proc.poll() is None, "import never started"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert list_bases() == []
    assert store_entries() == []


def test_store_copy_is_rechecked_on_load(tmp_path):
    import_base(tiny(tmp_path / "t.etlb"), allow_unsigned=True)
    stored = base_info("tiny").path
    data = bytearray(stored.read_bytes())
    data[-1] ^= 1
    stored.write_bytes(bytes(data))
    with pytest.raises(BundleError) as e:
        load_base("tiny")
    assert str(e.value) == (
        "bundle tiny (store): member weights.safetensors sha256 mismatch "
        f"(corrupted or tampered with). {CORRUPT}"
    )
    stored.write_bytes(b"junk" + bytes(data[4:]))
    line = run("list").output.splitlines()[1]
    assert (
        line.startswith("tiny")
        and "BROKEN: bundle tiny (store): not an edge_tl base bundle" in line
    )


@pytest.fixture(autouse=True)
def assets(tmp_path, monkeypatch) -> Path:
    """Isolate every test from the builtin bases the package ships (an empty assets folder)."""
    folder = tmp_path / "assets"
    folder.mkdir(exist_ok=True)
    monkeypatch.setattr(bases, "ASSETS_DIR", folder)
    return folder


def test_no_default_base_is_a_clear_error(assets):
    with pytest.raises(BundleError) as e:
        load_base()
    assert str(e.value) == (
        "no default base is installed (this edge_tl ships none). import one "
        "with `edge-tl base import FILE` and pass its name"
    )


def test_builtin_default_is_pinned_listed_and_read_only(tmp_path, assets):
    d = tiny(assets / "default.etlb", name="default")
    (assets / "bases.sha256").write_text(f"{file_sha256(d)}  default.etlb\n")
    base = load_base()
    assert base.name == "default" and base.model_cfg == CFG
    [info] = list_bases()
    assert info.builtin and info.problem is None and info.sha256 == file_sha256(d)
    assert run("list").output.splitlines()[1].endswith("pinned builtin")
    res = run("rm", "default")
    assert res.output == "Error: base 'default' is built into edge_tl and cannot be removed.\n"
    res = run("import", tiny(tmp_path / "x.etlb", name="default"), "--allow-unsigned")
    assert res.output == (
        "Error: base name 'default' belongs to a builtin base. pass another --name to import it\n"
    )
    # A re-packed (even valid) file no longer matches its pin.
    tiny(assets / "default.etlb", name="default", seed=1)
    with pytest.raises(BundleError) as e:
        load_base()
    assert str(e.value) == (
        "builtin base default: sha256 does not match the pin in "
        "edge_tl/assets/bases.sha256. the installed package is corrupted; "
        "reinstall edge_tl"
    )
    (assets / "bases.sha256").unlink()
    with pytest.raises(BundleError, match="default.etlb is not pinned"):
        load_base("default")
    assert list_bases()[0].problem == "not pinned in edge_tl/assets/bases.sha256"


def test_remove_is_atomic_rename(tmp_path):
    import_base(tiny(tmp_path / "t.etlb"), allow_unsigned=True)
    remove_base("tiny")
    assert store_entries() == []
    with pytest.raises(StoreError):
        remove_base("tiny")
    with pytest.raises(StoreError):
        remove_base("../bases")


def test_keygen_cli(tmp_path):
    res = run("keygen")
    assert res.exit_code == 0 and res.output.startswith("Signing key ed25519:")
    key = subdir("keys") / "base-signing.key"
    assert key.is_file() and (key.stat().st_mode & 0o777) == 0o600
    res = run("keygen")
    assert res.output == f"Error: {key} already exists. choose another --out or pass --force\n"
    assert run("keygen", "--force").exit_code == 0


def test_shipped_default_base_loads_offline(monkeypatch):
    """The base that ships inside the package is pinned, verifies and loads (network blocked)."""
    monkeypatch.setattr(bases, "ASSETS_DIR", Path(bases.__file__).parent.parent / "assets")
    base = load_base("default")
    assert base.vocab[:2] == ["xxunk", "xxpad"] and len(base.vocab) == base.model_cfg.vocab_size
    assert set(base.state_dict) == set(lm_state_keys(base.model_cfg))
    assert base.manifest["corpus"]["license"].startswith("Public domain")
    assert "perplexity" in (read_card(bases.base_path("default")) or "").lower()
