"""Pretrain the shipped default base on the Gutenberg corpus (resumable; rerun to continue).

nohup nice -n 5 .venv/bin/python bench/pretrain_base.py --workdir /work/pretrain-small &
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge_tl.bases.pretrain import PretrainConfig, pretrain
from edge_tl.config import from_dict

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus"


def main() -> None:
    """Parse flags and run or resume pretraining."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--max-minutes", type=float, default=None)
    ap.add_argument("--config", type=str, default="{}", help="JSON overrides of PretrainConfig")
    a = ap.parse_args()
    cfg = from_dict(PretrainConfig, json.loads(a.config), "--config")
    corpus = [CORPUS / f"gutenberg_train_{i:02d}.jsonl.xz" for i in range(a.shards)]
    pretrain(
        corpus,
        a.workdir,
        cfg,
        valid=[CORPUS / "gutenberg_valid.jsonl.xz"],
        max_minutes=a.max_minutes,
        log=lambda m: print(m, flush=True),
    )


if __name__ == "__main__":
    main()
