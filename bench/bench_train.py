"""Plain fastai vs edge_tl's training path, in the same run, on the same IMDb subset.

Both arms: same AWD-LSTM shape and init seed, same tokenization rules, same epochs and
learning rates (LM: 1 frozen + 1 unfrozen epoch; classifier stages 1,1,1,2 with
slice(lr/2.6**4, lr)), same test reviews. Phases alternate (plain LM, ours LM, plain clas,
ours clas) so a change in background load hits both arms alike. Resumable: finished phases
are kept in bench/results/train.json.partial.json and skipped.

    nohup nice -n 5 .venv/bin/python bench/bench_train.py > /tmp/bench_train.log 2>&1 &

Also measures peak RSS of a few full-size (WT103-shaped) classifier steps under the
jetson-nano-4gb profile, in a subprocess (--rss-only runs just that)."""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "imdb"
OUT = ROOT / "bench" / "results" / "train.json"
PARTIAL = OUT.with_suffix(".partial.json")
STAGE_LRS = (2e-2, 1e-2, 5e-3, 1e-3)


def load(split: str, n: int, seed: int) -> tuple[list[str], list[str]]:
    """A class-balanced random subset of an IMDb split."""
    with gzip.open(DATA / f"{split}.csv.gz", "rt", encoding="utf-8", newline="") as f:
        rows = [(r["text"], r["label"]) for r in csv.DictReader(f)]
    rng = random.Random(seed)
    rng.shuffle(rows)
    pos, neg = [r for r in rows if r[1] == "pos"], [r for r in rows if r[1] == "neg"]
    out = pos[: n // 2] + neg[: n // 2]
    rng.shuffle(out)
    return [t for t, _ in out], [lab for _, lab in out]


def plain_lm(texts, cfg, args, state):
    """fastai's documented path: DataBlock(TextBlock.from_df) + language_model_learner."""
    import pandas as pd
    from fastai.text.all import (
        AWD_LSTM,
        ColReader,
        DataBlock,
        RandomSplitter,
        TextBlock,
        accuracy,
        language_model_learner,
        set_seed,
    )

    from edge_tl.awd_lstm import fastai_config
    from edge_tl.config import LM_DROPOUTS

    df = pd.DataFrame({"text": texts})
    fnames, path = None, Path("/tmp/edge_tl_bench")
    if args.base:  # the stock fastai route: weights + vocab files, pretrained_fnames
        from edge_tl.bases.store import load_base
        from edge_tl.bases.wt103 import unpack_to_fastai

        wgts, itos = unpack_to_fastai(load_base(args.base), path / "models")
        fnames = [wgts.stem, itos.stem]
    t0 = time.perf_counter()
    set_seed(args.seed)
    dls = DataBlock(
        blocks=TextBlock.from_df("text", is_lm=True, min_freq=3),
        get_x=ColReader("text"),
        splitter=RandomSplitter(0.1, seed=args.seed),
    ).dataloaders(df, bs=args.bs, seq_len=args.bptt)
    prep = time.perf_counter() - t0
    set_seed(args.seed)
    learn = language_model_learner(
        dls,
        AWD_LSTM,
        config=fastai_config(cfg, LM_DROPOUTS, True),
        pretrained=fnames is not None,
        pretrained_fnames=fnames,
        drop_mult=0.3,
        metrics=[accuracy],
        path=path,
    )
    tokens = len(dls.train) * args.bs * args.bptt
    t0 = time.perf_counter()
    learn.freeze()
    learn.fit_one_cycle(1, 2e-2, moms=(0.8, 0.7, 0.8))
    learn.unfreeze()
    learn.fit_one_cycle(1, 2e-3, moms=(0.8, 0.7, 0.8))
    wall = time.perf_counter() - t0
    state["plain_enc"] = {k: v.clone() for k, v in learn.model[0].state_dict().items()}
    state["plain_vocab"] = list(dls.vocab)
    return {
        "prep_s": prep,
        "wall_s": wall,
        "tokens": 2 * tokens,
        "tokens_per_s": 2 * tokens / wall,
        "vocab": len(dls.vocab),
        "valid_loss": float(learn.recorder.values[-1][1]),
    }


def plain_clas(texts, labels, test, cfg, args, state):
    """fastai's text_classifier_learner, gradual unfreezing with the same lrs and epochs."""
    import pandas as pd
    import torch
    from fastai.text.all import (
        AWD_LSTM,
        CategoryBlock,
        ColReader,
        ColSplitter,
        DataBlock,
        TextBlock,
        accuracy,
        set_seed,
        text_classifier_learner,
    )

    from edge_tl.awd_lstm import fastai_config
    from edge_tl.config import CLAS_DROPOUTS
    from edge_tl.train.prepare import stratified_split

    y = [0 if lab == "neg" else 1 for lab in labels]
    _, va = stratified_split(y, 0.1, args.seed)
    is_valid = [False] * len(texts)
    for i in va:
        is_valid[i] = True
    df = pd.DataFrame({"text": texts, "label": labels, "is_valid": is_valid})
    t0 = time.perf_counter()
    tb = TextBlock.from_df("text", vocab=state["plain_vocab"], seq_len=args.bptt)
    dls = DataBlock(
        blocks=(tb, CategoryBlock),
        get_x=ColReader("text"),
        get_y=ColReader("label"),
        splitter=ColSplitter(),
    ).dataloaders(df, bs=args.bs)
    prep = time.perf_counter() - t0
    set_seed(args.seed)
    learn = text_classifier_learner(
        dls,
        AWD_LSTM,
        config=fastai_config(cfg, CLAS_DROPOUTS, False),
        pretrained=False,
        drop_mult=0.5,
        metrics=accuracy,
        seq_len=args.bptt,
        max_len=args.max_len,
    )
    learn.path = Path("/tmp/edge_tl_bench")
    learn.model[0].module.load_state_dict(state["plain_enc"])
    t0 = time.perf_counter()
    stages = []
    for k, n in enumerate((1, 1, 1, 2)):
        s0 = time.perf_counter()
        if k < 3:
            learn.freeze_to(-(k + 1))
        else:
            learn.unfreeze()
        lr = STAGE_LRS[k]
        learn.fit_one_cycle(n, lr if k == 0 else slice(lr / 2.6**4, lr), moms=(0.8, 0.7, 0.8))
        stages.append(time.perf_counter() - s0)
    wall = time.perf_counter() - t0
    tokens = sum(len(x) for x, _ in dls.train_ds) * 5
    tdl = learn.dls.test_dl(pd.DataFrame({"text": test[0]}))
    preds, _ = learn.get_preds(dl=tdl)
    want = torch.tensor([0 if lab == "neg" else 1 for lab in test[1]])
    acc = float((preds.argmax(1) == want).float().mean())
    return {
        "prep_s": prep,
        "wall_s": wall,
        "tokens": tokens,
        "tokens_per_s": tokens / wall,
        "stage_s": stages,
        "test_accuracy": acc,
    }


def ours_lm(texts, cfg, args, state):
    """edge_tl.train.recipe.finetune_lm (bf16 autocast where native, in-memory data)."""
    from edge_tl.train.config import TrainConfig
    from edge_tl.train.engine import tokenize
    from edge_tl.train.recipe import finetune_lm
    from edge_tl.train.settings import Run, pick_dtype

    t0 = time.perf_counter()
    docs = tokenize(texts, workers=2)
    prep = time.perf_counter() - t0
    import torch

    from edge_tl.train.engine import auto_threads

    plain_threads = torch.get_num_threads()
    threads = args.threads or auto_threads(plain_threads)
    torch.set_num_threads(threads)
    tc = TrainConfig(
        arch=cfg,
        bptt=args.bptt,
        max_len=args.max_len,
        seed=args.seed,
        dtype=args.dtype,
        checkpoint_minutes=1e9,
    )
    run = Run(dtype=pick_dtype(tc, "cpu"), bs=args.bs, lm_bs=args.bs, progress=True)
    base = None
    if args.base:
        from edge_tl.bases.store import load_base

        base = load_base(args.base)
    lm = finetune_lm(texts, base, tc, run=run, docs=docs)
    state["ours_lm"], state["ours_docs"] = lm, docs
    torch.set_num_threads(plain_threads)
    return {
        "prep_s": prep,
        "wall_s": lm.seconds,
        "tokens": lm.tokens,
        "threads": threads,
        "tokens_per_s": lm.tokens_per_s,
        "vocab": len(lm.vocab),
        "dtype": run.dtype,
        "valid_loss": lm.metrics["lm_valid_loss"],
    }


def ours_clas(texts, labels, test, cfg, args, state):
    """edge_tl.train.recipe.train_classifier (cached head features, bf16, same schedule)."""
    import torch

    from edge_tl.train.config import TrainConfig
    from edge_tl.train.engine import auto_threads
    from edge_tl.train.evaluate import evaluate_texts
    from edge_tl.train.recipe import train_classifier
    from edge_tl.train.settings import Run, pick_dtype

    plain_threads = torch.get_num_threads()
    threads = args.threads or auto_threads(plain_threads)
    torch.set_num_threads(threads)
    tc = TrainConfig(
        arch=cfg,
        bptt=args.bptt,
        max_len=args.max_len,
        seed=args.seed,
        dtype=args.dtype,
        checkpoint_minutes=1e9,
    )
    run = Run(dtype=pick_dtype(tc, "cpu"), bs=args.bs, lm_bs=args.bs, progress=True)
    m = train_classifier(
        texts, labels, state["ours_lm"], tc, run=run, docs=state["ours_docs"][: len(texts)]
    )
    r = evaluate_texts(m, test[0], test[1], dtype=run.dtype)
    torch.set_num_threads(plain_threads)
    return {
        "wall_s": m.metrics["clas_seconds"],
        "tokens": m.metrics["clas_tokens"],
        "tokens_per_s": m.metrics["clas_tokens_per_s"],
        "stage_s": [s["seconds"] for s in m.metrics["stages"]],
        "test_accuracy": r["accuracy"],
        "dtype": run.dtype,
        "threads": threads,
    }


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
    ap.add_argument("--train", type=int, default=1000)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--emb", type=int, default=200)
    ap.add_argument("--hid", type=int, default=600)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--bptt", type=int, default=72)
    ap.add_argument("--max-len", type=int, default=1440)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=0, help="ours: 0 = auto_threads()")
    ap.add_argument("--base", default=None, help="start both arms from this base (its shape)")
    ap.add_argument("--rss-profile", default="jetson-nano-4gb")
    ap.add_argument("--rss-steps", type=int, default=3)
    ap.add_argument("--rss-only", action="store_true")
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--skip-rss", action="store_true")
    args = ap.parse_args()
    if args.rss_only:
        print(json.dumps(rss_probe(args.rss_profile, args.rss_steps)))
        return
    import torch

    from edge_tl.config import ModelConfig

    os.makedirs("/tmp/edge_tl_bench", exist_ok=True)
    res = {} if args.fresh or not PARTIAL.exists() else json.loads(PARTIAL.read_text())
    keys = (
        "train",
        "test",
        "emb",
        "hid",
        "layers",
        "bs",
        "bptt",
        "max_len",
        "dtype",
        "seed",
        "threads",
        "base",
    )
    setup = {k: getattr(args, k) for k in keys}
    if res.get("setup") != setup:
        res = {"setup": setup}
    texts, labels = load("train", args.train, args.seed)
    test = load("test", args.test, args.seed + 1)
    cfg = ModelConfig(vocab_size=8, emb_sz=args.emb, n_hid=args.hid, n_layers=args.layers)
    if args.base:
        from dataclasses import replace

        from edge_tl.bases.store import base_info

        cfg = replace(base_info(args.base).model_cfg, vocab_size=8)
    state: dict = {}
    res["threads"] = torch.get_num_threads()
    phases = [
        ("plain_lm", lambda: plain_lm(texts, cfg, args, state)),
        ("ours_lm", lambda: ours_lm(texts, cfg, args, state)),
        ("plain_clas", lambda: plain_clas(texts, labels, test, cfg, args, state)),
        ("ours_clas", lambda: ours_clas(texts, labels, test, cfg, args, state)),
    ]
    # A later phase needs its arm's LM in memory, so a resumed run redoes the LMs it needs.
    need = {p for p, _ in phases if p not in res}
    if "plain_clas" in need:
        need.add("plain_lm")
    if "ours_clas" in need:
        need.add("ours_lm")
    for name, fn in phases:
        if name not in need:
            continue
        print(f"== {name}", flush=True)
        load0 = os.getloadavg()[0]
        out = fn()
        out["loadavg_before"] = load0
        out["loadavg_after"] = os.getloadavg()[0]
        res[name] = out
        PARTIAL.write_text(json.dumps(res, indent=2))
        print(json.dumps(out), flush=True)
    if "rss" not in res and not args.skip_rss:
        r = subprocess.run(
            [
                sys.executable,
                __file__,
                "--rss-only",
                "--rss-profile",
                args.rss_profile,
                "--rss-steps",
                str(args.rss_steps),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        res["rss"] = json.loads(r.stdout.strip().splitlines()[-1])
        PARTIAL.write_text(json.dumps(res, indent=2))
    res["ratio"] = {
        "lm_throughput": res["ours_lm"]["tokens_per_s"] / res["plain_lm"]["tokens_per_s"],
        "clas_throughput": res["ours_clas"]["tokens_per_s"] / res["plain_clas"]["tokens_per_s"],
        "accuracy_diff_points": 100
        * (res["ours_clas"]["test_accuracy"] - res["plain_clas"]["test_accuracy"]),
    }
    OUT.write_text(json.dumps(res, indent=2))
    PARTIAL.unlink(missing_ok=True)
    print_table(res)


def print_table(res: dict) -> None:
    """Markdown table of the figures."""
    s = res["setup"]
    shape = (
        f"base {s['base']!r} (its shape)"
        if s.get("base")
        else f"AWD-LSTM emb {s['emb']}, hidden {s['hid']}, {s['layers']} layers, random init"
    )
    print(
        f"\nIMDb {s['train']} train / {s['test']} test reviews; {shape}; bs {s['bs']}, "
        f"bptt {s['bptt']}"
    )
    print(
        "| phase | plain fastai tok/s | edge_tl tok/s | speed-up | plain wall s | edge_tl wall s |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for ph in ("lm", "clas"):
        p, o = res[f"plain_{ph}"], res[f"ours_{ph}"]
        print(
            f"| {ph} | {p['tokens_per_s']:,.0f} | {o['tokens_per_s']:,.0f} | "
            f"{o['tokens_per_s'] / p['tokens_per_s']:.2f}x | {p['wall_s']:.0f} | "
            f"{o['wall_s']:.0f} |"
        )
    print(
        f"| test accuracy | {res['plain_clas']['test_accuracy']:.4f} | "
        f"{res['ours_clas']['test_accuracy']:.4f} | "
        f"{res['ratio']['accuracy_diff_points']:+.1f} pts | | |"
    )
    r = res.get("rss")
    if r is None:
        return
    print(
        f"\npeak RSS, WT103-shaped classifier, {r['profile']} (bs {r['batch_size']}, "
        f"{r['max_len']} tokens, {r['dtype']}): {r['peak_rss_gib']:.2f} GiB "
        f"(planner {r['planner_estimate_gib']:.2f} GiB)"
    )


if __name__ == "__main__":
    main()
