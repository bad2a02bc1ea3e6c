"""Pretrain a base on the Gutenberg corpus on a lent GPU, then pack it as a bundle.

Runs on the device machine through bench/gpu_pretrain.sh: the corpus shards travel as they are
(.jsonl.xz), the tokenizer is edge_tl's pure-Python port of fastai + spaCy (that machine has no
spaCy; identical token ids on 25k IMDb reviews, bench/results/tokenize.json), and the schedule
ends after `--minutes` of training (the LR schedule is stretched to fit). Same loop, model and
config fields as bench/pretrain_base.py, which made the shipped base on this CPU.

    python3 bench/gpu_pretrain.py --corpus .gpu/corpus --workdir /tmp/pt --minutes 2 --device cuda
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

# The shipped base's recipe (edge_tl/assets/default.card.md) with fastai's LM batch of 128.
CONFIG: dict[str, Any] = {
    "size": "small",
    "max_tokens": 10**10,
    "valid_tokens": 200000,
    "batch_size": 128,
    "bptt": 70,
    "lr": 0.002,
    "weight_decay": 0.01,
    "clip": 0.25,
    "drop_mult": 0.1,
    "alpha": 2.0,
    "beta": 1.0,
    "min_freq": 3,
    "bf16": True,
    "checkpoint_minutes": 1.0,
    "seed": 42,
}


def main() -> None:
    """Tokenize the carried shards, pretrain for --minutes on --device, report perplexity."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=Path, required=True, help="gutenberg_*.jsonl.xz folder")
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--minutes", type=float, required=True, help="training time (LR schedule)")
    ap.add_argument("--words", type=int, default=20_000_000, help="corpus words to read")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--workers", type=int, default=14)
    ap.add_argument("--config", default="{}", help="JSON overrides of CONFIG")
    a = ap.parse_args()

    import gpu_semi

    import edge_tl.bases.pretrain as pretrain_mod
    from edge_tl.config import from_dict

    pretrain_mod.tokenize = lambda texts, n_workers=1: gpu_semi.port_tokenize(texts, a.workers)
    over = {
        **CONFIG,
        "max_corpus_words": a.words,
        "time_budget_minutes": a.minutes,
        **json.loads(a.config),
    }
    cfg = from_dict(pretrain_mod.PretrainConfig, over, "--config")
    shards = sorted(a.corpus.glob("gutenberg_train_*.jsonl.xz"))
    valid = sorted(a.corpus.glob("gutenberg_valid*.jsonl.xz"))
    print(
        f"shards {[p.name for p in shards]}, valid {[p.name for p in valid]}; config "
        f"{json.dumps(over)}",
        flush=True,
    )
    t0 = time.time()
    res = pretrain_mod.pretrain(
        shards, a.workdir, cfg, valid=valid, device=a.device, log=lambda m: print(m, flush=True)
    )
    if res is not None:
        print(
            f"finished in {(time.time() - t0) / 60:.1f} min: "
            f"{json.dumps({k: v for k, v in res.stats.items() if k != 'history'})}",
            flush=True,
        )


if __name__ == "__main__":
    main()
