"""Plain fastai vs edge_tl's training path, like for like, in the same run.

Both arms take their recipe from one `TrainConfig` (`--recipe flat10`, what `train` ships:
every layer, 10 epochs at one flat lr; or `--recipe ulmfit`: gradual unfreezing, stages
1,1,1,2 with discriminative lrs), the same base, tokenization rules, LM validation documents,
classifier split, seed and test reviews. The bench counts the epochs and tokens each arm
actually trained on and stops with an error when they differ, so a changed default can never
skew it silently. Phases alternate (plain LM, ours LM, plain clas, ours clas) so background
load hits both arms alike. Beside the ratios it reports the achieved GFLOP/s (the matmul work
each arm really does) against this CPU's peak, measured with a large matmul in fp32 and bf16.

    nice -n 5 .venv/bin/python bench/bench_train.py --recipe flat10 --base default \
        --train 1000 --test 2000 --threads 2 --fresh

Resumable: finished phases are kept in bench/results/train-<recipe>.partial.json."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gzip
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "imdb"
RESULTS = ROOT / "bench" / "results"
TOKEN_TOLERANCE = 0.01  # the arms' tokenizers follow the same rules; 1 % allows batch rounding
MOMS = (0.8, 0.7, 0.8)


class NotLikeForLike(SystemExit):
    """The two arms did different work: the ratios would mean nothing."""


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


def recipe(args: argparse.Namespace, cfg: Any) -> Any:
    """The one TrainConfig both arms follow (network only: no TF-IDF head)."""
    from edge_tl.train.config import ULMFIT_RECIPE, TrainConfig

    extra = ULMFIT_RECIPE if args.recipe == "ulmfit" else {}
    return TrainConfig(
        arch=cfg,
        bptt=args.bptt,
        max_len=args.max_len,
        seed=args.seed,
        dtype=args.dtype,
        checkpoint_minutes=1e9,
        tfidf_head=False,
        **extra,
    )


def lm_valid_index(n_docs: int, tc: Any) -> list[int]:
    """The documents edge_tl's LM stage holds out (recipe.finetune_lm's draw)."""
    import torch

    perm = torch.randperm(n_docs, generator=torch.Generator().manual_seed(tc.seed)).tolist()
    return perm[: max(1, int(n_docs * tc.lm_valid_pct))]


def epoch_counter() -> Any:
    """A fastai callback counting the training epochs that really ran (get_preds fires
    before/after_epoch too, so it counts after_train)."""
    from fastai.callback.core import Callback

    class Count(Callback):
        n = 0

        def after_train(self) -> None:
            Count.n += 1

    return Count


def plain_lm(texts, tc, args, state):
    """fastai's documented path: DataBlock(TextBlock.from_df) + language_model_learner."""
    import pandas as pd
    import torch
    from fastai.text.all import (
        AWD_LSTM,
        ColReader,
        DataBlock,
        IndexSplitter,
        TextBlock,
        accuracy,
        language_model_learner,
        set_seed,
    )

    from edge_tl.awd_lstm import fastai_config
    from edge_tl.config import LM_DROPOUTS

    torch.set_num_threads(args.threads)
    df = pd.DataFrame({"text": texts})
    fnames, path = None, Path("/tmp/edge_tl_bench")
    if args.base:  # the stock fastai route: weights + vocab files, pretrained_fnames
        from edge_tl.bases.store import load_base
        from edge_tl.bases.wt103 import unpack_to_fastai

        wgts, itos = unpack_to_fastai(load_base(args.base), path / "models")
        fnames = [wgts.stem, itos.stem]
    t0 = time.perf_counter()
    set_seed(tc.seed)
    dls = DataBlock(
        blocks=TextBlock.from_df("text", is_lm=True, min_freq=tc.min_freq),
        get_x=ColReader("text"),
        splitter=IndexSplitter(lm_valid_index(len(texts), tc)),
    ).dataloaders(df, bs=args.bs, seq_len=tc.bptt)
    prep = time.perf_counter() - t0
    set_seed(tc.seed)
    count = epoch_counter()
    learn = language_model_learner(
        dls,
        AWD_LSTM,
        config=fastai_config(tc.arch, LM_DROPOUTS, True),
        pretrained=fnames is not None,
        pretrained_fnames=fnames,
        drop_mult=tc.lm_drop_mult,
        metrics=[accuracy],
        path=path,
        cbs=[count()],
    )
    t0 = time.perf_counter()
    learn.freeze()
    learn.fit_one_cycle(tc.lm_frozen_epochs, tc.lm_lr, moms=MOMS)
    learn.unfreeze()
    learn.fit_one_cycle(tc.lm_epochs, tc.lm_lr_unfrozen, moms=MOMS)
    wall = time.perf_counter() - t0
    state["plain_enc"] = {k: v.clone() for k, v in learn.model[0].state_dict().items()}
    state["plain_vocab"] = list(dls.vocab)
    tokens = len(dls.train) * args.bs * tc.bptt * count.n
    return {
        "prep_s": prep,
        "wall_s": wall,
        "epochs": count.n,
        "tokens": tokens,
        "tokens_per_s": tokens / wall,
        "vocab": len(dls.vocab),
        "valid_loss": float(learn.recorder.values[-1][1]),
    }


def plain_clas(texts, labels, test, tc, args, state):
    """fastai's text_classifier_learner, stage by stage as the recipe says."""
    import pandas as pd
    import torch
    from fastai.text.all import (
        AWD_LSTM,
        CategoryBlock,
        ColReader,
        ColSplitter,
        DataBlock,
        SaveModelCallback,
        TextBlock,
        accuracy,
        set_seed,
        text_classifier_learner,
    )

    from edge_tl.awd_lstm import fastai_config
    from edge_tl.config import CLAS_DROPOUTS
    from edge_tl.train.prepare import stratified_split

    torch.set_num_threads(args.threads)
    y = [0 if lab == "neg" else 1 for lab in labels]
    _, va = stratified_split(y, tc.valid_share(len(y)), tc.seed)  # edge_tl's split rule
    is_valid = [False] * len(texts)
    for i in va:
        is_valid[i] = True
    df = pd.DataFrame({"text": texts, "label": labels, "is_valid": is_valid})
    t0 = time.perf_counter()
    tb = TextBlock.from_df("text", vocab=state["plain_vocab"], seq_len=tc.bptt)
    dls = DataBlock(
        blocks=(tb, CategoryBlock),
        get_x=ColReader("text"),
        get_y=ColReader("label"),
        splitter=ColSplitter(),
    ).dataloaders(df, bs=args.bs)
    prep = time.perf_counter() - t0
    set_seed(tc.seed)
    count = epoch_counter()
    learn = text_classifier_learner(
        dls,
        AWD_LSTM,
        config=fastai_config(tc.arch, CLAS_DROPOUTS, False),
        pretrained=False,
        drop_mult=tc.clas_drop_mult,
        metrics=accuracy,
        seq_len=tc.bptt,
        max_len=tc.max_len,
        lin_ftrs=list(tc.lin_ftrs),
        cbs=[count()],
    )
    # edge_tl keeps the epoch with the lowest validation loss: fastai's way of doing the same
    best = [SaveModelCallback(monitor="valid_loss", fname="bench_best")] if tc.best_epoch else []
    learn.path = Path("/tmp/edge_tl_bench")
    learn.model[0].module.load_state_dict(state["plain_enc"])
    pretrained = args.base is not None
    t0 = time.perf_counter()
    stages = []
    for k, n in enumerate(tc.stages):  # the same freezing and lrs as recipe._fit_stages
        if n == 0:
            continue
        s0 = time.perf_counter()
        learn.freeze_to(-(k + 1)) if k < 3 and k + 1 < tc.arch.n_layers + 2 else learn.unfreeze()
        lr = tc.stage_lr(k, pretrained)
        disc = k > 0 and tc.use_discriminative(pretrained)
        learn.fit_one_cycle(n, slice(lr / tc.lr_div**4, lr) if disc else lr, moms=MOMS, cbs=best)
        stages.append(time.perf_counter() - s0)
    wall = time.perf_counter() - t0
    tokens = sum(len(x) for x, _ in dls.train_ds) * count.n
    tdl = learn.dls.test_dl(pd.DataFrame({"text": test[0]}))
    preds, _ = learn.get_preds(dl=tdl)
    want = torch.tensor([0 if lab == "neg" else 1 for lab in test[1]])
    return {
        "prep_s": prep,
        "wall_s": wall,
        "epochs": count.n,
        "tokens": tokens,
        "tokens_per_s": tokens / wall,
        "stage_s": stages,
        "test_accuracy": float((preds.argmax(1) == want).float().mean()),
    }


def _ours_run(tc: Any, args: argparse.Namespace) -> Any:
    """edge_tl's runtime settings, with the bench's threads and batch size."""
    import torch

    from edge_tl.train.settings import Run, pick_dtype

    torch.set_num_threads(args.threads)
    return Run(dtype=pick_dtype(tc, "cpu"), bs=args.bs, lm_bs=args.bs, progress=True)


def ours_lm(texts, tc, args, state):
    """edge_tl.train.recipe.finetune_lm (bf16 autocast where native, in-memory data)."""
    from edge_tl.train.engine import tokenize
    from edge_tl.train.recipe import finetune_lm

    t0 = time.perf_counter()
    docs = tokenize(texts, workers=2)
    prep = time.perf_counter() - t0
    run = _ours_run(tc, args)
    base = None
    if args.base:
        from edge_tl.bases.store import load_base

        base = load_base(args.base)
    lm = finetune_lm(texts, base, tc, run=run, docs=docs)
    state["ours_lm"], state["ours_docs"] = lm, docs
    return {
        "prep_s": prep,
        "wall_s": lm.seconds,
        "epochs": lm.metrics["lm_epochs_run"],
        "tokens": lm.tokens,
        "tokens_per_s": lm.tokens_per_s,
        "vocab": len(lm.vocab),
        "dtype": run.dtype,
        "valid_loss": lm.metrics["lm_valid_loss"],
    }


def ours_clas(texts, labels, test, tc, args, state):
    """edge_tl.train.recipe.train_classifier (bf16, the same recipe)."""
    from edge_tl.train.evaluate import evaluate_texts
    from edge_tl.train.recipe import train_classifier

    run = _ours_run(tc, args)
    m = train_classifier(
        texts, labels, state["ours_lm"], tc, run=run, docs=state["ours_docs"][: len(texts)]
    )
    r = evaluate_texts(m, test[0], test[1], dtype=run.dtype)
    return {
        "wall_s": m.metrics["clas_seconds"],
        "epochs": sum(s["epochs"] for s in m.metrics["stages"]),
        "tokens": m.metrics["clas_tokens"],
        "tokens_per_s": m.metrics["clas_tokens_per_s"],
        "stage_s": [s["seconds"] for s in m.metrics["stages"]],
        "test_accuracy": r["accuracy"],
        "dtype": run.dtype,
    }


def check_same_work(res: dict) -> None:
    """Stop when the arms trained a different number of epochs or tokens."""
    for ph in ("lm", "clas"):
        p, o = res[f"plain_{ph}"], res[f"ours_{ph}"]
        if p["epochs"] != o["epochs"]:
            raise NotLikeForLike(f"{ph}: plain ran {p['epochs']} epochs, edge_tl {o['epochs']}")
        if abs(p["tokens"] - o["tokens"]) > TOKEN_TOLERANCE * p["tokens"]:
            raise NotLikeForLike(
                f"{ph}: plain trained on {p['tokens']:,} tokens, edge_tl on {o['tokens']:,}"
            )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", choices=("flat10", "ulmfit"), default="flat10")
    ap.add_argument("--train", type=int, default=1000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--emb", type=int, default=200)
    ap.add_argument("--hid", type=int, default=600)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--bptt", type=int, default=72)
    ap.add_argument("--max-len", type=int, default=1440)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2, help="both arms")
    ap.add_argument("--base", default=None, help="start both arms from this base (its shape)")
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from flops import peak_gflops, phase_gflop

    from edge_tl.config import ModelConfig

    out = RESULTS / f"train-{args.recipe}.json"
    partial = out.with_suffix(".partial.json")
    os.makedirs("/tmp/edge_tl_bench", exist_ok=True)
    res = {} if args.fresh or not partial.exists() else json.loads(partial.read_text())
    setup = {k.replace("-", "_"): v for k, v in vars(args).items() if k != "fresh"}
    if res.get("setup") != setup:
        res = {"setup": setup}
    texts, labels = load("train", args.train, args.seed)
    test = load("test", args.test, args.seed + 1)
    cfg = ModelConfig(vocab_size=8, emb_sz=args.emb, n_hid=args.hid, n_layers=args.layers)
    if args.base:
        from edge_tl.bases.store import base_info

        cfg = dataclasses.replace(base_info(args.base).model_cfg, vocab_size=8)
    tc = recipe(args, cfg)
    res["recipe"] = {
        "stages": list(tc.stages),
        "lr": tc.lr,
        "discriminative": tc.discriminative,
        "lm_epochs": [tc.lm_frozen_epochs, tc.lm_epochs],
    }
    state: dict = {}
    phases = [
        ("plain_lm", lambda: plain_lm(texts, tc, args, state)),
        ("ours_lm", lambda: ours_lm(texts, tc, args, state)),
        ("plain_clas", lambda: plain_clas(texts, labels, test, tc, args, state)),
        ("ours_clas", lambda: ours_clas(texts, labels, test, tc, args, state)),
    ]
    # A later phase needs its arm's LM in memory, so a resumed run redoes the LMs it needs.
    need = {p for p, _ in phases if p not in res}
    need |= {f"{arm}_lm" for arm in ("plain", "ours") if f"{arm}_clas" in need}
    for name, fn in phases:
        if name not in need:
            continue
        print(f"== {name}", flush=True)
        load0 = os.getloadavg()[0]
        ph = fn()
        ph.update(loadavg_before=load0, loadavg_after=os.getloadavg()[0])
        res[name] = ph
        partial.write_text(json.dumps(res, indent=2))
        print(json.dumps(ph), flush=True)
    check_same_work(res)
    res["peak_gflops"] = peak_gflops(args.threads)
    for name in ("plain_lm", "ours_lm", "plain_clas", "ours_clas"):
        r, (arm, ph) = res[name], name.split("_")
        gflop = phase_gflop(tc, ph, res[f"{arm}_lm"]["vocab"], r["tokens"], r["epochs"])
        r["gflop_per_s"] = gflop / r["wall_s"]
    res["ratio"] = {
        "lm_throughput": res["ours_lm"]["tokens_per_s"] / res["plain_lm"]["tokens_per_s"],
        "clas_throughput": res["ours_clas"]["tokens_per_s"] / res["plain_clas"]["tokens_per_s"],
        "accuracy_diff_points": 100
        * (res["ours_clas"]["test_accuracy"] - res["plain_clas"]["test_accuracy"]),
    }
    res["command"] = "bench/bench_train.py " + " ".join(sys.argv[1:])
    out.write_text(json.dumps(res, indent=2))
    partial.unlink(missing_ok=True)
    print_table(res)


def print_table(res: dict) -> None:
    """Markdown table of the figures."""
    s, pk = res["setup"], res["peak_gflops"]
    print(
        f"\nIMDb {s['train']} train / {s['test']} test reviews; base {s['base']!r}; recipe "
        f"{s['recipe']} {res['recipe']}; bs {s['bs']}, bptt {s['bptt']}, {s['threads']} threads; "
        f"matmul peak {pk['fp32']:.0f} GFLOP/s fp32, {pk['bf16']:.0f} bf16"
    )
    print(
        "| phase | plain fastai tok/s | edge_tl tok/s | speed-up | epochs | tokens "
        "(plain / edge_tl) | wall s (plain → edge_tl) | GFLOP/s (plain / edge_tl) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for ph in ("lm", "clas"):
        p, o = res[f"plain_{ph}"], res[f"ours_{ph}"]
        print(
            f"| {ph} | {p['tokens_per_s']:,.0f} | {o['tokens_per_s']:,.0f} | "
            f"{o['tokens_per_s'] / p['tokens_per_s']:.2f}× | {p['epochs']} | "
            f"{p['tokens']:,} / {o['tokens']:,} | {p['wall_s']:.0f} → {o['wall_s']:.0f} | "
            f"{p['gflop_per_s']:.1f} / {o['gflop_per_s']:.1f} |"
        )
    print(
        f"| test accuracy | {res['plain_clas']['test_accuracy']:.4f} | "
        f"{res['ours_clas']['test_accuracy']:.4f} | "
        f"{res['ratio']['accuracy_diff_points']:+.1f} pts | | | | |"
    )


if __name__ == "__main__":
    main()
