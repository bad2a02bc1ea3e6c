"""The semi learning curve on a lent GPU: the shared LM on all 75k texts semi may use unlabelled.

Runs on the device machine through bench/gpu_semi.sh (wheels, data and the bench home's device
key travel with it; nothing is downloaded). It is compare_imdb.py with three differences:

- every unlabelled review (50k) plus the 25k train texts for the shared LM, and as many LM epochs
  as fit `--lm-minutes` at the measured throughput (the choice is printed and lands in the setup);
- the tokenizer is edge_tl's pure-Python port of fastai + spaCy (edge_tl.deploy.tokenizer,
  100% token
  agreement on 25k IMDb reviews, bench/results/tokenize.json): that machine has no spaCy;
- several plans in a row into one results file (small sizes with 3 seeds first), so whatever the
  lease allows is kept, unit by unit.

The shared LM is encrypted for the bench home's key, so its results continue on the CPU here:

    .venv/bin/python bench/compare_imdb.py --protocol semi --unsup-rows 50000 --config '<setup>'
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

_TOK: Any = None
# The classifier recipe of bench/results/compare-semi-flat10 (bs 64 as the CPU planner picked),
# with fastai's LM batch for IMDb.
BASE_CONFIG = {
    "max_vocab": 15000,
    "stages": [0, 0, 0, 10],
    "lr": 0.01,
    "discriminative": "off",
    "bs": 64,
    "lm_bs": 128,
}
TEXTS_PER_LM_EPOCH = 75000 * 0.9  # 25k train + 50k unsup, less the LM's 10% validation


def _tok_one(text: str) -> list[str]:
    global _TOK
    if _TOK is None:
        from edge_tl.deploy.tokenizer import TextTokenizer

        _TOK = TextTokenizer()
    return _TOK(text)


def port_tokenize(texts: Any, workers: int = 0) -> list[list[str]]:
    """edge_tl.train.engine.tokenize through edge_tl's pure-Python tokenizer (same tokens)."""
    texts = list(texts)
    if workers > 0 and len(texts) >= 2000:
        # spawn: this process holds CUDA and torch's threads, which a fork must not inherit
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex:
            return list(ex.map(_tok_one, texts, chunksize=64))
    return [_tok_one(t) for t in texts]


def smoke_run(imdb: Path, cfg_over: dict[str, Any], tmp: Path) -> float:
    """A tiny semi comparison on this device (every arm); returns its seconds."""
    from compare_imdb import read_rows

    from edge_tl.compare.plan import ComparePlan
    from edge_tl.compare.run import run_compare
    from edge_tl.store import keys
    from edge_tl.store.datasets import save_dataset
    from edge_tl.train.settings import resolve_config

    t0 = time.perf_counter()
    os.environ["EDGE_TL_HOME"] = str(tmp / "home")
    keys.init_identity(None)
    rows = read_rows(imdb, "train")[::50]  # both labels (the file is sorted by label)
    texts, labels = [r["text"] for r in rows], [r["label"] for r in rows]
    save_dataset("s-train", texts[::2], labels[::2], source="smoke")
    save_dataset("s-test", texts[1::2], labels[1::2], source="smoke")
    save_dataset("s-unsup", texts[1::2], [None] * len(texts[1::2]), source="smoke")
    cfg = resolve_config(None, {**cfg_over, "lm_epochs": 1, "stages": [0, 0, 0, 1]})
    plan = ComparePlan(
        data="s-train",
        test="s-test",
        sizes=(100,),
        seeds=(0,),
        protocols=("semi",),
        arms=("transfer", "scratch", "tfidf"),
        base="default",
        lm_data=("s-unsup",),
        test_rows=0,
        references="imdb",
    )
    doc = run_compare(plan, cfg, tmp / "out", echo=lambda m: print("smoke:", m, flush=True))
    for k, r in doc["runs"].items():
        print(f"smoke: {k} accuracy {r['accuracy']:.3f} ({r['seconds']:.1f} s)", flush=True)
    return time.perf_counter() - t0


def pick_lm_epochs(cfg_over: dict[str, Any], minutes: float) -> tuple[int, float]:
    """Unfrozen LM epochs that fit `minutes` at this device's measured LM throughput."""
    from edge_tl.bases.store import base_info
    from edge_tl.compare.plan import measure_speed
    from edge_tl.compare.run import runtime
    from edge_tl.train.settings import resolve_config

    cfg = resolve_config(None, cfg_over)
    shape = base_info("default").model_cfg
    run, dev = runtime(cfg, shape, None, False, print)
    lm_tps = measure_speed(shape, run, cfg, 300, steps=20)[0]
    # fastai's loop (weight dropout, AR/TAR, callbacks) ran at 0.38 of the bare step on an H200
    epoch_s = TEXTS_PER_LM_EPOCH * 300 / (0.4 * lm_tps)
    epochs = max(1, min(9, int(minutes * 60 / epoch_s) - 1))
    print(
        f"device {dev}; bare LM step {lm_tps:,.0f} tokens/s -> ~{epoch_s:.0f} s per LM epoch; "
        f"lm_epochs {epochs} (+1 frozen) for {minutes:g} min",
        flush=True,
    )
    return epochs, lm_tps


def main() -> None:
    """Smoke-test the GPU path, pick the LM epochs, run the plans in order."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--imdb", type=Path, required=True)
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--lm-minutes", type=float, default=3.0)
    ap.add_argument("--lm-epochs", type=int, default=0, help="0: pick from --lm-minutes")
    ap.add_argument("--workers", type=int, default=14)
    ap.add_argument("--no-smoke", action="store_true")
    ap.add_argument("--smoke-only", action="store_true", help="check this machine and stop")
    a = ap.parse_args()

    import edge_tl.train.engine as fastcpu

    fastcpu.tokenize = port_tokenize  # spaCy is not on that machine; same tokens
    over = {**BASE_CONFIG, "workers": a.workers, "threads": 8}
    if not a.no_smoke:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"smoke test passed in {smoke_run(a.imdb, over, Path(tmp)):.0f} s", flush=True)
    if a.smoke_only:
        pick_lm_epochs(over, a.lm_minutes)
        return

    os.environ["EDGE_TL_HOME"] = str(a.home)
    from compare_imdb import ensure_datasets

    from edge_tl.compare.plan import ComparePlan
    from edge_tl.compare.run import run_compare
    from edge_tl.train.settings import resolve_config

    t0 = time.perf_counter()
    unsup = ensure_datasets(50000, a.imdb)
    print(f"datasets ready in {time.perf_counter() - t0:.0f} s", flush=True)
    epochs = a.lm_epochs or pick_lm_epochs(over, a.lm_minutes)[0]
    cfg = resolve_config(None, {**over, "lm_epochs": epochs})
    print(
        "config for a CPU continuation:",
        json.dumps({**BASE_CONFIG, "lm_epochs": epochs}),
        flush=True,
    )
    plans = [  # what matters most first: every small size with 3 seeds, then 10k/20k, scratch
        ((500, 1000, 2500, 5000), (0, 1, 2), ("transfer", "tfidf")),
        ((10000, 20000), (0,), ("transfer", "tfidf")),
        ((500, 1000, 2500, 5000), (0,), ("scratch",)),
        ((10000, 20000), (1, 2), ("transfer", "tfidf")),
    ]
    for sizes, seeds, arms in plans:
        plan = ComparePlan(
            data="imdb-train",
            test="imdb-test",
            sizes=sizes,
            seeds=seeds,
            protocols=("semi",),
            arms=arms,
            base="default",
            lm_data=(unsup,),
            test_rows=5000,
            references="imdb",
        )
        try:
            run_compare(plan, cfg, a.out, echo=lambda m: print(m, flush=True), work=a.work)
        except Exception:  # a bench driver: log it and try the next plan
            traceback.print_exc()
            sys.stdout.flush()


if __name__ == "__main__":
    main()
