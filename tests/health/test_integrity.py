"""`edge-tl doctor --check-store`: a healthy store passes; each kind of damage is named by file."""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyrage
import pytest
import torch
from click.testing import CliRunner

from edge_tl.awd_lstm import build_classifier, lm_state_keys
from edge_tl.bases.bundle import FASTAI_TOKENIZER, build_bundle
from edge_tl.bases.store import import_base
from edge_tl.cli import cli
from edge_tl.config import SPECIAL_TOKENS, ModelConfig
from edge_tl.health.integrity import KINDS, check_store
from edge_tl.store import keys
from edge_tl.store.checkpoints import Checkpoint, Position, save_checkpoint
from edge_tl.store.datasets import save_dataset
from edge_tl.store.home import home
from edge_tl.store.models import TrainedModel, save_model

CANARY = "zqx-canary-7f3a"  # plaintext that must never appear in any output
BASE_CFG = ModelConfig(vocab_size=20, emb_sz=4, n_hid=6, n_layers=2)
CLAS_CFG = ModelConfig(vocab_size=16, emb_sz=8, n_hid=12, n_layers=2)
PROBLEM = re.compile(r"^Problem     (.+?): (.*)$")


def bundle_bytes(seed: int) -> bytes:
    """A tiny unsigned base bundle (as tests/test_bases.py builds one)."""
    g = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(s, generator=g) for k, s in lm_state_keys(BASE_CFG).items()}
    vocab = SPECIAL_TOKENS + [f"w{i}" for i in range(BASE_CFG.vocab_size - len(SPECIAL_TOKENS))]
    return build_bundle(
        name="tiny",
        model_cfg=BASE_CFG,
        vocab=vocab,
        state_dict=sd,
        tokenizer=FASTAI_TOKENIZER,
        corpus={"description": "random", "license": "CC0-1.0"},
        description="a tiny base",
        created="2024-01-01T00:00:00Z",
        tool="edge_tl test",
    )


def tiny_model(name: str) -> TrainedModel:
    """An untrained classifier with the store's full format (as tests/test_models.py makes)."""
    torch.manual_seed(0)
    net = build_classifier(CLAS_CFG, 2, lin_ftrs=[6])
    vocab = SPECIAL_TOKENS + [f"w{i}" for i in range(CLAS_CFG.vocab_size - len(SPECIAL_TOKENS))]
    return TrainedModel(
        name=name,
        model_cfg=CLAS_CFG,
        vocab=vocab,
        labels=["neg", "pos"],
        state_dict={k: v.clone() for k, v in net.state_dict().items()},
        lin_ftrs=[6],
    )


def tiny_checkpoint(name: str) -> Checkpoint:
    """A small checkpoint (a linear layer's state, no optimizer or RNG state)."""
    torch.manual_seed(0)
    return Checkpoint(
        name=name,
        data="reviews",
        base=None,
        lm_data=[],
        dataset_fingerprint="fp",
        train_config={"seed": 1},
        position=Position("clas", 1, 0, 7),
        vocab=["xxunk", "xxpad"],
        labels=["neg", "pos"],
        model_state=torch.nn.Linear(3, 2).state_dict(),
    )


@dataclass
class Store:
    """Paths of the healthy store built by the `store` fixture."""

    root: Path
    vault_file: Path
    index: Path
    base: Path
    model: Path
    checkpoint: Path


def rows(n: int, tag: str) -> tuple[list[str], list[str]]:
    texts = [f"{tag} review {i} says {CANARY} and more" for i in range(n)]
    return texts, [("neg", "pos")[i % 2] for i in range(n)]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """keys init, one dataset, one imported base, one model and one checkpoint."""
    keys.init_identity(None)
    info = save_dataset("reviews", *rows(6, "first"))
    src = tmp_path / "tiny.etlb"
    src.write_bytes(bundle_bytes(seed=0))
    import_base(src, allow_unsigned=True)
    root = home()
    return Store(
        root=root,
        vault_file=root / "vault" / f"{info.id}.age",
        index=root / "vault" / "index.age",
        base=root / "bases" / "tiny" / "base.etlb",
        model=save_model(tiny_model("m1")),
        checkpoint=save_checkpoint(tiny_checkpoint("r")),
    )


def run(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["doctor", *args])


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Relative path -> (mode, sha256) of every file under `root`."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            mode = stat.S_IMODE(p.stat().st_mode)
            out[str(p.relative_to(root))] = (mode, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def flip(path: Path, pos: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[pos] ^= 0x01
    path.write_bytes(bytes(raw))


# ---------------------------------------------------------------- healthy


def test_healthy_store_passes_and_is_left_unchanged(store: Store) -> None:
    before = snapshot(store.root)
    report = check_store()
    assert report.ok, report.problems
    # 2 key files (identity, recipient); index + 1 vault file; 1 base; 1 model; 1 checkpoint.
    assert report.checked == {"keys": 2, "vault": 2, "bases": 1, "models": 1, "checkpoints": 1}
    r = run("--check-store")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == f"Store       {store.root}"
    assert "  vault       2 files checked, ok" in lines
    assert "  bases       1 file checked, ok" in lines
    assert lines[-1] == "Store OK: every file checked is intact and private"
    assert not any(line.startswith("Problem") for line in lines)
    assert CANARY not in r.output
    assert snapshot(store.root) == before  # the check reads; it never writes or deletes


def test_empty_home_and_fresh_identity_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGE_TL_HOME", str(tmp_path / "not-yet"))
    report = check_store()
    assert report.ok and sum(report.checked.values()) == 0
    assert not home().exists()  # checking creates nothing
    keys.init_identity(None)
    report = check_store()
    assert report.ok and report.checked["keys"] == 2


# ---------------------------------------------------------------- damage


def _flip_vault(s: Store) -> Path:
    flip(s.vault_file, s.vault_file.stat().st_size // 2)
    return s.vault_file


def _delete_vault(s: Store) -> Path:
    s.vault_file.unlink()
    return s.vault_file


def _flip_index(s: Store) -> Path:
    flip(s.index, s.index.stat().st_size - 5)
    return s.index


def _truncate(attr: str) -> Callable[[Store], Path]:
    def damage(s: Store) -> Path:
        path: Path = getattr(s, attr)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return path

    return damage


def _tamper_base(s: Store) -> Path:
    flip(s.base, s.base.stat().st_size - 3)  # inside the weights member
    return s.base


def _replace_base(s: Store) -> Path:
    mode = s.base.stat().st_mode
    s.base.write_bytes(bundle_bytes(seed=1))  # valid on its own, but not what was imported
    os.chmod(s.base, mode)
    return s.base


def _stray_part(s: Store) -> Path:
    part = s.vault_file.parent / f".{s.vault_file.name}.k1x9q2.part"
    part.write_bytes(b"half a file")
    os.chmod(part, 0o600)
    return part


def _base_import_leftover(s: Store) -> Path:
    leftover = s.root / "bases" / ".tiny.abc123.part"
    leftover.mkdir(mode=0o700)
    (leftover / "base.etlb").write_bytes(b"\x89ETL")
    return leftover


def _loose_vault_file(s: Store) -> Path:
    os.chmod(s.vault_file, 0o644)
    return s.vault_file


def _loose_models_folder(s: Store) -> Path:
    os.chmod(s.model.parent, 0o755)
    return s.model.parent


def _other_recipient(s: Store) -> Path:
    rec = s.root / "keys" / "recipient.txt"
    rec.write_text(f"{pyrage.x25519.Identity.generate().to_public()}\n")
    return rec


def _unlisted_vault_file(s: Store) -> Path:
    old_index = s.index.read_bytes()
    before = set((s.root / "vault").glob("*.age"))
    save_dataset("second", *rows(4, "second"))
    s.index.write_bytes(old_index)  # as if the index were restored from an older backup
    (new,) = set((s.root / "vault").glob("*.age")) - before
    return new


def _missing_identity(s: Store) -> Path:
    ident = s.root / "keys" / "identity.txt"
    ident.unlink()
    return ident


def _garbled_identity(s: Store) -> Path:
    ident = s.root / "keys" / "identity.txt"
    ident.write_bytes(ident.read_bytes().replace(b"AGE-SECRET-KEY-1", b"AGE-SECRET-KEY-2"))
    return ident


DAMAGE = {
    "vault byte flipped": (_flip_vault, "cannot decrypt dataset 'reviews'", ()),
    "vault file deleted": (_delete_vault, "listed in the index but its vault file is missing", ()),
    "index byte flipped": (_flip_index, "cannot decrypt the vault index", ()),
    "model truncated": (_truncate("model"), "cannot decrypt model m1", ()),
    "checkpoint truncated": (_truncate("checkpoint"), "cannot decrypt checkpoint r", ()),
    "base tampered": (_tamper_base, "sha256 mismatch", ()),
    "base replaced": (_replace_base, "differs from the one recorded at import", ()),
    "stray part file": (_stray_part, "interrupted write", ()),
    "base import leftover": (_base_import_leftover, "interrupted base import", ()),
    "vault file 0644": (_loose_vault_file, "file mode 0644", ()),
    "models folder 0755": (_loose_models_folder, "folder mode was 0755", ()),
    "recipient swapped": (_other_recipient, "does not hold the identity's recipient", ()),
    "unlisted vault file": (_unlisted_vault_file, "dataset 'second' is not listed", ()),
    "identity deleted": (_missing_identity, "identity is missing", ("vault", "models", "runs")),
    "identity garbled": (_garbled_identity, "not an age identity", ("vault", "models", "runs")),
}


def problems_via(via: str, root: Path) -> dict[str, str]:
    """Relative path -> problem text, from the library or from the CLI's output."""
    if via == "api":
        report = check_store()
        assert not report.ok
        return {report.relative(p.path): p.what for p in report.problems}
    r = run("--check-store")
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and CANARY not in r.output
    n = sum(line.startswith("Problem ") for line in r.output.splitlines())
    plural = "s" if n != 1 else ""
    assert f"Error: the store {root} has {n} problem{plural}. fix each as" in r.stderr
    found = {}
    for line in r.stdout.splitlines():
        m = PROBLEM.match(line)
        if m:
            found[m.group(1)] = m.group(2)
    assert len(found) == n
    return found


@pytest.mark.parametrize("via", ["api", "cli"])
@pytest.mark.parametrize("case", list(DAMAGE))
def test_each_damage_is_named_by_file(store: Store, case: str, via: str) -> None:
    damage, text, extra = DAMAGE[case]
    path = damage(store)
    rel = str(path.relative_to(store.root))
    found = problems_via(via, store.root)
    assert set(found) == {rel, *extra}, found
    assert text in found[rel]
    if "leftover" in case or "part" in case:
        assert path.exists()  # reported, never deleted


def test_many_problems_at_once_each_with_a_fix(store: Store) -> None:
    together = (
        _flip_vault,
        _truncate("model"),
        _truncate("checkpoint"),
        _tamper_base,
        _stray_part,
        _base_import_leftover,
        _loose_models_folder,
        _other_recipient,
    )
    damaged = {str(d(store).relative_to(store.root)) for d in together}
    report = check_store()
    assert {report.relative(p.path) for p in report.problems} == damaged
    for p in report.problems:
        assert p.fix and p.what and p.kind in KINDS, p
    r = run("--check-store")
    assert r.exit_code == 1 and CANARY not in r.output
    lines = r.output.splitlines()
    assert "  keys        2 files checked, 1 problem" in lines
    assert "  vault       2 files checked, 2 problems" in lines
    problems = [i for i, line in enumerate(lines) if line.startswith("Problem ")]
    # The first check opened models/ and so reset it to 0700, as every command does.
    assert stat.S_IMODE(store.model.parent.stat().st_mode) == 0o700
    assert len(problems) == len(damaged) - 1 and "Problem     models: " not in r.output
    assert all(lines[i + 1].startswith("  fix       ") for i in problems)


def test_loose_folder_that_no_loader_opens_stays_reported(store: Store) -> None:
    store.checkpoint.unlink()  # runs/ then holds nothing to load, so nothing reopens it
    os.chmod(store.checkpoint.parent, 0o750)
    for _ in range(2):
        (p,) = check_store().problems
        assert p.path == store.checkpoint.parent and p.kind == "checkpoints"
        assert p.what == "folder mode 0750 lets other users in, expected 0700"
        assert p.fix == f"run `chmod 700 {store.checkpoint.parent}`"


# ---------------------------------------------------------------- passphrase and flags


def test_passphrase_protected_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys.init_identity("correct horse")
    monkeypatch.setenv(keys.PASSPHRASE_ENV, "correct horse")
    save_dataset("reviews", *rows(4, "pw"))
    monkeypatch.delenv(keys.PASSPHRASE_ENV)
    keys._cache.clear()
    r = run("--check-store")
    assert r.exit_code == 1
    assert "Error: the device identity is passphrase-protected and no passphrase" in r.output
    wrong, right = tmp_path / "wrong.txt", tmp_path / "right.txt"
    wrong.write_text("battery staple\n")
    right.write_text("correct horse\n")
    r = run("--check-store", "--passphrase-file", str(wrong))
    assert r.exit_code == 1
    assert "Problem     keys/identity.txt: cannot be unlocked: wrong passphrase" in r.output
    assert "Problem     vault: 2 encrypted files not checked" in r.output
    r = run("--check-store", "--passphrase-file", str(right))
    assert r.exit_code == 0, r.output
    assert "  vault       2 files checked, ok" in r.output.splitlines()


def test_check_store_runs_alone() -> None:
    r = run("--check-store", "--json")
    assert r.exit_code == 1
    assert r.output.startswith("Error: --check-store runs on its own.")
