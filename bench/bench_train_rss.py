"""Peak RSS of a few full-size (WT103-shaped) classifier steps under a device profile.

    nice -n 5 .venv/bin/python bench/bench_train_rss.py --steps 1

Prints one JSON line (bench/results/train_rss.json holds the quoted run)."""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_probe(profile_name: str, steps: int) -> dict:
    """A few full-size classifier steps (all layers unfrozen) under a device profile."""
    import torch
    from fastai.text.models.awdlstm import awd_lstm_clas_split

    from edge_tl.awd_lstm import build_classifier
    from edge_tl.config import ModelConfig
    from edge_tl.hardware.device import detect
    from edge_tl.hardware.planner import plan
    from edge_tl.hardware.profiles import load_profile
    from edge_tl.train import engine as fastcpu
    from edge_tl.train.config import TrainConfig
    from edge_tl.train.fit import learner as _learner
    from edge_tl.train.settings import Run, pick_dtype

    cfg = ModelConfig()  # WT103 shape: 60k vocab, emb 400, hidden 1152, 3 layers
    hw, prof = detect(), load_profile(profile_name)
    p = plan(hw, prof, cfg, "clas_train")
    tc = TrainConfig(bptt=prof.bptt, max_len=prof.max_seq_len, dtype=prof.dtype)
    run = Run(dtype=pick_dtype(tc, "cpu"), bs=p.batch_size, progress=False)
    torch.manual_seed(0)
    model = build_classifier(cfg, 2, seq_len=tc.bptt, max_len=tc.max_len)
    g = torch.Generator().manual_seed(0)
    n = run.bs * steps
    ids = [torch.randint(9, cfg.vocab_size, (tc.max_len,), generator=g) for _ in range(n)]
    y = [i % 2 for i in range(n)]
    dls = fastcpu.dls(
        fastcpu.clas_loader(ids, y, run.bs, tc.bptt, True),
        fastcpu.clas_loader(ids[: run.bs], y[: run.bs], run.bs, tc.bptt, False),
    )
    learn = _learner(dls, model, run, False, tc, awd_lstm_clas_split)
    learn.unfreeze()
    t0 = time.perf_counter()
    learn.fit(1, 1e-3)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "profile": profile_name,
        "batch_size": run.bs,
        "max_len": tc.max_len,
        "bptt": tc.bptt,
        "dtype": run.dtype,
        "steps": steps,
        "wall_s": wall,
        "tokens_per_s": n * tc.max_len / wall,
        "peak_rss_bytes": peak,
        "peak_rss_gib": peak / 2**30,
        "planner_estimate_gib": p.estimate.total / 2**30,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="jetson-nano-4gb")
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    print(json.dumps(rss_probe(args.profile, args.steps)))


if __name__ == "__main__":
    main()
