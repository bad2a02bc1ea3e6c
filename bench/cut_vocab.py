"""Give a pretraining workdir the token stream of another with its vocabulary cut to N words.

    .venv/bin/python bench/cut_vocab.py --src ../pretrain-v2 --dst ../pt-tiny --vocab 2000

The size ablation (bench/results/tiny-base) trains a smaller base on exactly the default base's
tokens: fastai's vocabulary is ordered by frequency after the special tokens, so its first N
entries are the N-word vocabulary and every other id becomes xxunk (0). `bench/pretrain_base.py
--workdir DST` then finds the cache and skips tokenizing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    """Write DST/tokens.npz and DST/vocab.json."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", type=Path, required=True)
    ap.add_argument("--dst", type=Path, required=True)
    ap.add_argument("--vocab", type=int, required=True)
    a = ap.parse_args()
    a.dst.mkdir(parents=True, exist_ok=True)
    vocab = json.loads((a.src / "vocab.json").read_text())[: a.vocab]
    z = np.load(a.src / "tokens.npz")
    cut = {k: np.where(z[k] < a.vocab, z[k], 0).astype(z[k].dtype) for k in ("train", "valid")}
    np.savez(a.dst / "tokens.npz", **cut)
    (a.dst / "vocab.json").write_text(json.dumps(vocab))
    unk = float((z["train"] >= a.vocab).mean())
    print(f"{len(cut['train']):,} train tokens, {unk:.1%} now xxunk")


if __name__ == "__main__":
    main()
