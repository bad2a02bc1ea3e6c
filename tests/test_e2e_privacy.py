"""The whole pipeline, offline: keys -> import -> train -> compare -> export -> predict.

Every socket is blocked (the autouse `no_network` fixture fails the test on any attempt) and
no proxy is set. A canary word planted in the imported texts must appear in no file under
EDGE_TL_HOME, the working directory, the temp directory, the export directory, HOME and the
XDG and library folders the conftest points into the test's sandbox, or /dev/shm, except inside
age-encrypted files; the `--vocab base` export must hold no private-only token.
"""

from __future__ import annotations

import csv
import json
import os
import random
import stat
import string
import tempfile
from pathlib import Path

import onnx
import torch
from click.testing import CliRunner
from tinydata import FILLER, NEG, POS, TRANSFER_TOML, tiny_base

from edge_tl.cli import cli
from edge_tl.store.models import load_model

AGE_MAGIC = b"age-encryption.org/v1"


def _write_csv(path: Path, n: int, canary: str, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(n):
            lab = ("pos", "neg")[i % 2]
            words = rng.choices(FILLER, k=10) + rng.choices(POS if lab == "pos" else NEG, k=3)
            words += [canary] * 2  # frequent enough to enter the fine-tuned vocabulary
            rng.shuffle(words)
            w.writerow([" ".join(words), lab])


def _scan(roots: list[Path], needles: list[bytes], skip: list[Path]) -> tuple[list[str], int]:
    """Files (outside `skip`) whose bytes contain a needle; age files must be age files."""
    hits, age_files = [], 0
    for root in roots:
        for dirpath, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if Path(dirpath, d) not in skip]
            for fn in files:
                p = Path(dirpath, fn)
                if not p.is_file() or p.is_symlink():
                    continue
                blob = p.read_bytes()
                if blob.startswith(AGE_MAGIC):
                    age_files += 1  # ciphertext: the needles cannot show, but check anyway
                hits += [f"{p}: {n!r}" for n in needles if n in blob]
    return hits, age_files


def test_whole_pipeline_offline_leaves_no_plaintext(
    tmp_path, monkeypatch, edge_tl_home, no_network, plaintext_leaks
):
    # Letters only, no character twice in a row: one token (digits split, "ccc" -> xxrep).
    canary = "zq" + "".join(random.SystemRandom().sample(string.ascii_lowercase, 12)) + "zq"
    src, cwd, scratch, exports = (tmp_path / d for d in ("src", "cwd", "tmp", "exports"))
    for d in (src, cwd, scratch, exports):
        d.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    for var in ("ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    _write_csv(src / "train.csv", 60, canary, seed=1)
    _write_csv(src / "test.csv", 30, canary, seed=2)
    bundle = tiny_base(src / "tiny.etlb")
    (src / "tiny.toml").write_text(TRANSFER_TOML, encoding="utf-8")
    threads = torch.get_num_threads()
    runner = CliRunner()

    def ok(*args: str) -> str:
        r = runner.invoke(cli, [str(a) for a in args])
        assert r.exit_code == 0, (args, r.output)
        return r.output

    try:
        ok("keys", "init", "--no-passphrase")
        ok("base", "import", bundle, "--allow-unsigned")
        ok("data", "import", src / "train.csv", "--name", "reviews")
        ok("data", "import", src / "test.csv", "--name", "reviews-test")
        ok(
            "train",
            "--data",
            "reviews",
            "--base",
            "tiny",
            "--out",
            "m1",
            "--config",
            src / "tiny.toml",
            "--quiet",
        )
        ev = json.loads(ok("evaluate", "m1", "--data", "reviews-test", "--json"))
        assert 0.0 <= ev["accuracy"] <= 1.0
        ok(
            "compare",
            "--data",
            "reviews",
            "--test",
            "reviews-test",
            "--base",
            "tiny",
            "--config",
            src / "tiny.toml",
            "--sizes",
            "12,24",
            "--seeds",
            "1",
            "--quiet",
        )
        onnx_path = exports / "m1.onnx"
        ok("export", "m1", "--out", onnx_path, "--vocab", "base", "--quantize", "int8")
        ok("export", "m1", "--out", exports / "m1-full.onnx.age", "--encrypt")
        pred = json.loads(ok("predict", onnx_path, "a good great movie", "--json"))
    finally:
        torch.set_num_threads(threads)

    assert no_network == []  # zero connection or DNS attempts, not merely blocked ones
    assert pred[0]["label"] in {"neg", "pos"} and abs(sum(pred[0]["probs"].values()) - 1) < 1e-4
    assert (cwd / "compare-reviews" / "results.json").exists()  # compare wrote into the cwd
    # The stored model holds the canary as a token (so the scans below can fail) ...
    assert canary in load_model("m1").vocab
    # ... but the base-vocabulary export does not, in its graph or its metadata.
    proto = onnx.load(str(onnx_path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert canary not in json.dumps(meta)
    skip = [src]  # the user's own plaintext source files (import never deletes them)
    hits, age_files = _scan([edge_tl_home, cwd, scratch, exports], [canary.encode()], skip)
    assert hits == []
    # Everywhere else a library could write (HOME, XDG, fastai's and matplotlib's folders, the
    # temp folder, /dev/shm), in any common encoding, the whole canary or its core.
    for secret in (canary, canary[2:-2]):
        assert plaintext_leaks(secret, skip=tuple(skip)) == []
    assert age_files >= 4  # identity-protected vault, index, model and the encrypted export
    # Permissions: keys, vault and models are 0600 files in 0700 folders.
    for sub in ("keys", "vault", "models"):
        folder = edge_tl_home / sub
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        for p in folder.iterdir():
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
