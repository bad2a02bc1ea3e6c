"""Probe behind the classifier-recipe choice for small N: fine-tune the classifier
on the semi curve's shared LM with several recipes and score each on a dev set of IMDb
*train* reviews outside the curve's subsets (never the test set, so picking a recipe here does
not tune on the numbers we report).

    EDGE_TL_HOME=../compare-home nice .venv/bin/python bench/probes/clas_recipe.py \
        --size 500 --recipes default,long > ../recipe.log 2>&1 &

With --scratch the classifier starts from random weights of the same shape (no LM), which is
the compare scratch arm; the `scratch*` recipes ask whether a schedule made for random
initialisation gets it off chance (the README's "scratch arm stays at chance"):

    nice .venv/bin/python bench/probes/clas_recipe.py --scratch --size 2500 \
        --recipes default,scratch10 > ../scratch.log 2>&1 &

Prints one line per recipe and appends it to --out (JSON lines).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time
from pathlib import Path

from edge_tl.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT.parent / "compare-home" / "compare-semi"

RECIPES: dict[str, dict] = {
    "default": {},
    "last6": {"stages": [1, 1, 1, 6]},
    "long": {"stages": [2, 2, 2, 8]},
    "head4": {"stages": [4, 1, 1, 2]},
    "last6_drop1": {"stages": [1, 1, 1, 6], "clas_drop_mult": 1.0},
    "last6_lr1": {"stages": [1, 1, 1, 6], "lr": 1e-2},
    "last12": {"stages": [1, 1, 1, 12]},
    "flat8": {"stages": [1, 1, 1, 8], "stage_lr_mults": [1.0, 0.5, 0.25, 0.1]},
    # for --scratch: every layer trains from the first epoch (nothing to protect), longer
    "scratch10": {"stages": [0, 0, 0, 10], "lr": 1e-2},
    "scratch10_drop02": {"stages": [0, 0, 0, 10], "lr": 1e-2, "clas_drop_mult": 0.2},
    # the scratch10 schedule on the pretrained encoder: no gradual unfreezing, one flat lr
    "flat10": {"stages": [0, 0, 0, 10], "lr": 1e-2, "discriminative": "off"},
    # is flat10 at the edge of its lr / epochs / dropout range?
    "flat15": {"stages": [0, 0, 0, 15], "lr": 1e-2, "discriminative": "off"},
    "flat10_lr2": {"stages": [0, 0, 0, 10], "lr": 2e-2, "discriminative": "off"},
    "flat10_drop1": {
        "stages": [0, 0, 0, 10],
        "lr": 1e-2,
        "discriminative": "off",
        "clas_drop_mult": 1.0,
    },
}


def main() -> None:
    """Train one classifier per recipe on the shared semi LM; dev accuracy of each."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--dev-rows", type=int, default=2000)
    ap.add_argument("--scratch", action="store_true", help="random init of the LM's shape, no LM")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 where fast), fp32 or bf16")
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "clas_recipe.jsonl")
    a = ap.parse_args()

    from edge_tl.awd_lstm import build_classifier
    from edge_tl.compare.lm import LM_MAGIC, SEMI_LM, load_lm
    from edge_tl.compare.run import runtime
    from edge_tl.compare.unit import VALID_ROWS
    from edge_tl.metrics import metrics_from_predictions
    from edge_tl.store.datasets import open_dataset, stratified_nested_subsets
    from edge_tl.store.keys import decrypt_on_device
    from edge_tl.store.models import unpack_container
    from edge_tl.train import recipe as _train
    from edge_tl.train.engine import numericalize, tokenize
    from edge_tl.train.evaluate import predict_ids

    path = a.work / SEMI_LM
    header, _ = unpack_container(LM_MAGIC, decrypt_on_device(path.read_bytes(), "lm"), "lm")
    lm = load_lm(path, header["digest"])
    texts, labels = open_dataset("imdb-train").labelled()
    names = sorted(set(labels))
    # The curve's nested subsets go up to 20k; the dev rows come from the other 5k.
    sub = stratified_nested_subsets(labels, [a.size, 20000], a.seed)
    rest = sorted(set(range(len(texts))) - set(sub[20000]))
    dev = random.Random(123).sample(rest, a.dev_rows)
    rows = sub[a.size]
    tr_texts, tr_labels = [texts[i] for i in rows], [labels[i] for i in rows]
    base_cfg = TrainConfig(max_vocab=15000, seed=a.seed, dtype=a.dtype, threads=2)
    if a.scratch:
        base_cfg = dataclasses.replace(base_cfg, scratch=True, arch=lm.model_cfg)
    run, dev_info = runtime(base_cfg, lm.model_cfg, None, False, lambda s: None)
    docs = tokenize(tr_texts, 0)
    dev_docs = tokenize([texts[i] for i in dev], 0)
    dev_y = [names.index(labels[i]) for i in dev]
    step = max(1, len(rows) // VALID_ROWS)
    valid = (tr_texts[::step][:VALID_ROWS], tr_labels[::step][:VALID_ROWS])
    for name in a.recipes.split(","):
        over = RECIPES[name]
        cfg = dataclasses.replace(
            base_cfg, **{k: tuple(v) if isinstance(v, list) else v for k, v in over.items()}
        )
        t0 = time.perf_counter()
        m = _train.train_classifier(
            tr_texts,
            tr_labels,
            None if a.scratch else lm,
            cfg,
            valid=valid,
            label_names=names,
            run=run,
            docs=docs,
            name="probe",
            scratch=a.scratch,
        )
        secs = time.perf_counter() - t0
        model = build_classifier(
            m.model_cfg,
            len(names),
            seq_len=cfg.bptt,
            max_len=cfg.max_len,
            lin_ftrs=list(m.lin_ftrs),
        )
        model.load_state_dict(m.state_dict)
        dtype = m.metrics["dtype"]  # what it trained in
        pred = predict_ids(
            model, numericalize(dev_docs, m.vocab), run.bs, cfg.bptt, dtype, run.device
        )
        acc = metrics_from_predictions(dev_y, pred, names)["accuracy"]
        rec = {
            "size": a.size,
            "seed": a.seed,
            "recipe": name,
            "scratch": a.scratch,
            "overrides": over,
            "dev_accuracy": round(acc, 4),
            "dev_rows": a.dev_rows,
            "valid_accuracy": round(m.metrics["accuracy"], 4),
            "train_seconds": round(secs, 1),
            "bs": run.bs,
            "dtype": dtype,
        }
        print(json.dumps(rec), flush=True)
        with a.out.open("a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
