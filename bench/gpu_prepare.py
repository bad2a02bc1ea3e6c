"""Make the git-ignored files the GPU drivers carry to a lent device machine (the device tool).

A fresh checkout has neither: `.whl/` holds cp312 wheels of what the device's CUDA image lacks
(fastai and friends, pyrage, cryptography), at the versions of this repo's `.venv`; `.gpu/` holds
IMDb as `.csv.xz`, the 5,000 unlabelled reviews `compare_imdb.ensure_datasets(5000)` samples (in
its order, so the dataset fingerprint matches this CPU's `imdb-unsup-5000`), two Gutenberg shards
and the bench home's device key (so what the GPU encrypts continues here). Both are added to
`.git/info/exclude`. Then it prints each driver's `carry` list and its size.

    .venv/bin/python bench/gpu_prepare.py                   # wheels + data, home ../compare-home
    .venv/bin/python bench/gpu_prepare.py --skip-wheels     # data only (no registry needed)
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import io
import lzma
import random
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_imdb import HOME, IMDB, read_rows  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "corpus"
# Not in the device image (its package list: /work/.library/device/KINDS.md); spaCy is not
# needed there, the drivers tokenize with edge_tl's pure-Python port.
WHEELS = (
    "fastai",
    "fastcore",
    "fastprogress",
    "fasttransform",
    "fastdownload",
    "plum-dispatch",
    "beartype",
    "python-fasthtml",
    "starlette",
    "itsdangerous",
    "python-multipart",
    "pyrage",
    "cryptography",
    "cffi",
)
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux_2_34_x86_64",
    "manylinux_2_31_x86_64",
)
CARRY = {
    "bench/gpu_semi.sh, bench/gpu_curve.sh": [".whl", ".gpu/imdb", ".gpu/keys"],
    "bench/gpu_size.sh": [
        ".whl",
        ".gpu/imdb/train.csv.xz",
        ".gpu/imdb/test.csv.xz",
        ".gpu/unsup5k",
        ".gpu/corpus/gutenberg_train_00.jsonl.xz",
        ".gpu/corpus/gutenberg_valid.jsonl.xz",
        ".gpu/keys",
    ],
    "bench/gpu_pretrain.sh": [".whl", ".gpu/corpus", ".gpu/keys"],
}


def exclude(*patterns: str) -> None:
    """Add patterns to .git/info/exclude once (the carried files never go into a commit)."""
    path = ROOT / ".git" / "info" / "exclude"
    path.parent.mkdir(parents=True, exist_ok=True)
    have = path.read_text().splitlines() if path.exists() else []
    with path.open("a") as f:
        for p in patterns:
            if p not in have:
                f.write(p + "\n")


def wheels(dest: Path) -> None:
    """Download cp312 manylinux wheels of WHEELS at this venv's versions (no dependencies)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir()
    plats = [a for p in PLATFORMS for a in ("--platform", p)]
    for name in WHEELS:
        version = importlib.metadata.version(name)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            *plats,
            "-d",
            str(dest),
            f"{name}=={version}",
        ]
        subprocess.run(cmd, check=True)


def _write_xz_csv(path: Path, rows: list[dict[str, str]], fields: list[str]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lzma.compress(buf.getvalue().encode("utf-8"), preset=6))


def data(gpu: Path, home: Path) -> None:
    """IMDb as .csv.xz, the 5k unlabelled sample, two corpus shards and the home's keys."""
    for name in ("train", "test", "unsup"):
        rows = read_rows(IMDB, name)
        _write_xz_csv(gpu / "imdb" / f"{name}.csv.xz", rows, list(rows[0]))
        if name == "unsup":
            # The exact draw of compare_imdb.ensure_datasets(5000): same seed, same order.
            texts = random.Random(0).sample([r["text"] for r in rows], 5000)
            _write_xz_csv(gpu / "unsup5k" / "unsup.csv.xz", [{"text": t} for t in texts], ["text"])
    (gpu / "corpus").mkdir(parents=True, exist_ok=True)
    for shard in ("gutenberg_train_00.jsonl.xz", "gutenberg_valid.jsonl.xz"):
        shutil.copyfile(CORPUS / shard, gpu / "corpus" / shard)
    keys = home / "keys"
    if not any(keys.glob("*")):
        raise SystemExit(f"no device key in {keys}: run bench/compare_imdb.py --dry-run first")
    shutil.copytree(keys, gpu / "keys", dirs_exist_ok=True)


def _size(rel: str) -> int:
    p = ROOT / rel
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def main() -> None:
    """Parse flags, write .whl/ and .gpu/, print the carry lists."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", type=Path, default=HOME, help="the bench's EDGE_TL_HOME (its keys)")
    ap.add_argument("--skip-wheels", action="store_true")
    ap.add_argument("--skip-data", action="store_true")
    a = ap.parse_args()
    exclude("/.whl/", "/.gpu/")
    if not a.skip_wheels:
        wheels(ROOT / ".whl")
    if not a.skip_data:
        data(ROOT / ".gpu", a.home)
    for driver, carry in CARRY.items():
        mb = sum(_size(c) for c in carry if (ROOT / c).exists()) / 1e6
        print(f"{driver}: carry {carry} ({mb:.1f} MB + the working tree)")


if __name__ == "__main__":
    main()
