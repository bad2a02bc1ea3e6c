"""Validate the memory planner: measured peak RSS of real training steps vs the estimate.

Each configuration runs in a fresh, niced subprocess (so peaks do not leak between runs): it
imports torch + fastai, builds the fastai AWD-LSTM (edge_tl.awd_lstm), and runs a few steps of
forward + AR/TAR-regularised loss + backward + fastai Adam on random tokens, then reports
`ru_maxrss`. The parent compares it with `edge_tl.hardware.planner.estimate_memory` and writes
bench/results/planner.json plus a table.

    nice .venv/bin/python bench/planner_validate.py            # all configurations
    nice .venv/bin/python bench/planner_validate.py --only fit  # only the fitting set
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_tl.config import ModelConfig  # noqa: E402
from edge_tl.hardware.planner import Coefficients, estimate_memory  # noqa: E402

SMALL = {"vocab_size": 8000, "emb_sz": 128, "n_hid": 256, "n_layers": 2}
MEDIUM = {"vocab_size": 30000, "emb_sz": 300, "n_hid": 768, "n_layers": 3}
WT103 = {"vocab_size": 60000, "emb_sz": 400, "n_hid": 1152, "n_layers": 3}
WIDE = {"vocab_size": 15000, "emb_sz": 256, "n_hid": 1024, "n_layers": 2}
DEEP = {"vocab_size": 40000, "emb_sz": 400, "n_hid": 512, "n_layers": 4}

PROBE = {"vocab_size": 2000, "emb_sz": 256, "n_hid": 1024, "n_layers": 3}

# (set, name, model, mode, seq_len, batch_size). The "fit" rows calibrate the constants in
# edge_tl/hardware/planner.py (`--fit`); the "check" rows were never used for fitting.
CONFIGS = [
    ("fit", "small-lm", SMALL, "lm_train", 70, 32),
    ("fit", "medium-lm-bs16", MEDIUM, "lm_train", 70, 16),
    ("fit", "medium-lm-bs48", MEDIUM, "lm_train", 70, 48),
    ("fit", "probe-lm", PROBE, "lm_train", 70, 32),
    ("fit", "wt103-lm-bs8", WT103, "lm_train", 70, 8),
    ("fit", "wt103-lm-bs24", WT103, "lm_train", 70, 24),
    ("fit", "small-clas", SMALL, "clas_train", 288, 16),
    ("fit", "probe-clas", PROBE, "clas_train", 144, 32),
    ("fit", "medium-clas", MEDIUM, "clas_train", 288, 8),
    ("fit", "wt103-clas-bs4", WT103, "clas_train", 576, 4),
    ("fit", "wt103-clas-long", WT103, "clas_train", 1440, 2),  # BatchNorm needs bs >= 2
    ("check", "wide-lm", WIDE, "lm_train", 70, 48),
    ("check", "deep-lm", DEEP, "lm_train", 70, 12),
    ("check", "wt103-lm-bs16", WT103, "lm_train", 70, 16),
    ("check", "wide-clas", WIDE, "clas_train", 432, 12),
    ("check", "deep-clas", DEEP, "clas_train", 720, 6),
    ("check", "wt103-clas-bs8", WT103, "clas_train", 288, 8),
    ("check", "wt103-infer", WT103, "inference", 1440, 8),
]


def child(spec: dict) -> dict:
    """Run the training steps described by `spec` in this process; return measurements."""
    import psutil
    import torch
    from fastai.optimizer import Adam

    from edge_tl.awd_lstm import build_classifier, build_lm

    torch.manual_seed(0)
    torch.set_num_threads(spec["threads"])
    base_rss = psutil.Process().memory_info().rss
    cfg = ModelConfig(**spec["model"])
    bs, sl, mode = spec["batch_size"], spec["seq_len"], spec["mode"]
    if mode == "lm_train":
        model = build_lm(cfg)
    else:
        model = build_classifier(cfg, n_class=2, seq_len=72, max_len=72 * 20)
    t0 = time.perf_counter()
    if mode == "inference":
        model.eval()
        with torch.inference_mode():
            for _ in range(spec["steps"]):
                model[0].reset()
                x = torch.randint(2, cfg.vocab_size, (bs, sl))
                model(x)
    else:
        model.train()
        opt = Adam(list(model.parameters()), lr=1e-3)
        for _ in range(spec["steps"]):
            x = torch.randint(2, cfg.vocab_size, (bs, sl))
            if mode == "lm_train":
                y = torch.randint(2, cfg.vocab_size, (bs, sl))
                out, raw, dropped = model(x)  # (bs, sl, vocab)
                loss = torch.nn.functional.cross_entropy(out.view(-1, out.shape[-1]), y.view(-1))
            else:
                model[0].reset()
                y = torch.randint(0, 2, (bs,))
                out, raw, dropped = model(x)  # (bs, n_class)
                loss = torch.nn.functional.cross_entropy(out, y)
            # fastai's RNNRegularizer (AR alpha=2, TAR beta=1) as language_model_learner adds it.
            loss = loss + 2 * dropped[-1].float().pow(2).mean()
            loss = loss + (raw[-1][:, 1:] - raw[-1][:, :-1]).float().pow(2).mean()
            loss.backward()
            opt.step()
            opt.zero_grad()
            del out, raw, dropped, loss
    secs = (time.perf_counter() - t0) / spec["steps"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {"peak_rss": peak, "import_rss": base_rss, "sec_per_step": secs}


def run_one(name: str, model: dict, mode: str, seq_len: int, bs: int, steps: int) -> dict:
    """Measure one configuration in a fresh niced subprocess."""
    spec = {
        "model": model,
        "mode": mode,
        "seq_len": seq_len,
        "batch_size": bs,
        "steps": steps,
        "threads": os.cpu_count() or 1,
    }
    out = subprocess.run(
        ["nice", "-n", "10", sys.executable, __file__, "--child", json.dumps(spec)],
        check=True,
        capture_output=True,
        text=True,
    )
    meas = json.loads(out.stdout.strip().splitlines()[-1])
    row = {
        "name": name,
        "model": model,
        "mode": mode,
        "seq_len": seq_len,
        "batch_size": bs,
        "steps": steps,
        **meas,
    }
    return {**row, **reestimate(row)}


def reestimate(r: dict) -> dict:
    """The estimate fields of a stored row, recomputed with the current constants."""
    est = estimate_memory(
        ModelConfig(**r["model"]), r["seq_len"], "fp32", r["mode"], r["batch_size"]
    )
    err = (est.total - r["peak_rss"]) / r["peak_rss"]
    return {"estimate": est.total, "breakdown": est.breakdown, "rel_error": round(err, 4)}


def markdown(rows: list[dict]) -> str:
    """The estimate-vs-measured table for docs/planner.md."""
    mib = 2**20
    lines = [
        "| set | name | vocab/emb/hid/layers | mode | seq | bs | measured MiB | "
        "estimate MiB | error | s/step |",
        "|" + "---|" * 10,
    ]
    for r in rows:
        m = r["model"]
        shape = f"{m['vocab_size']}/{m['emb_sz']}/{m['n_hid']}/{m['n_layers']}"
        lines.append(
            f"| {r['set']} | {r['name']} | {shape} | {r['mode']} | {r['seq_len']} | "
            f"{r['batch_size']} | {r['peak_rss'] / mib:.0f} | {r['estimate'] / mib:.0f} "
            f"| {r['rel_error']:+.1%} | {r['sec_per_step']:.1f} |"
        )
    return "\n".join(lines)


def fit(rows: list[dict]) -> Coefficients:
    """Least-squares fit of the planner's coefficients on relative error over the fit rows."""
    import numpy as np

    names = [f.name for f in dataclasses.fields(Coefficients)]
    zero = Coefficients(*[0.0] * len(names))

    def est(r: dict, c: Coefficients) -> float:
        cfg = ModelConfig(**r["model"])
        return estimate_memory(cfg, r["seq_len"], "fp32", r["mode"], r["batch_size"], c).total

    a, y = [], []
    for r in rows:
        base = est(r, zero)  # the part that no coefficient scales (weights, grads, Adam)
        feats = [est(r, dataclasses.replace(zero, **{n: 1.0})) - base for n in names]
        a.append([f / r["peak_rss"] for f in feats])
        y.append((r["peak_rss"] - base) / r["peak_rss"])
    sol, *_ = np.linalg.lstsq(np.array(a), np.array(y), rcond=None)
    return Coefficients(*[float(v) for v in sol])


def main() -> None:
    """Run all configurations, print the table, write bench/results/planner.json."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--child")
    ap.add_argument("--only", choices=["fit", "check"])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "planner.json"))
    ap.add_argument("--fit", action="store_true", help="refit constants from --out's fit rows")
    ap.add_argument(
        "--reestimate",
        action="store_true",
        help="keep --out's measurements, recompute the estimates with the current "
        "planner constants",
    )
    ap.add_argument("--markdown", action="store_true", help="print --out as a markdown table")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads(Path(args.out).read_text())["rows"]))
        return
    if args.fit:
        rows = json.loads(Path(args.out).read_text())["rows"]
        coef = fit([r for r in rows if r["set"] == "fit"])
        print(coef)
        for r in rows:
            cfg = ModelConfig(**r["model"])
            e = estimate_memory(cfg, r["seq_len"], "fp32", r["mode"], r["batch_size"], coef)
            print(f"{r['set']:5} {r['name']:16} {(e.total - r['peak_rss']) / r['peak_rss']:+.1%}")
        return
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    out = Path(args.out)
    # Rows are merged into --out by name after every run, so an interrupted run keeps its
    # measurements; --reestimate only recomputes the estimates of the stored measurements.
    old = {r["name"]: r for r in json.loads(out.read_text())["rows"]} if out.exists() else {}
    rows = dict(old)
    mib = 2**20
    print(
        f"{'set':5} {'name':16} {'mode':10} {'seq':>5} {'bs':>3} {'measured MiB':>12} "
        f"{'estimate MiB':>12} {'error':>7}"
    )
    for subset, name, model, mode, sl, bs in CONFIGS:
        if args.only and subset != args.only:
            continue
        if args.reestimate:
            if name not in old:
                continue
            r = {**old[name], **reestimate(old[name])}
        else:
            r = {"set": subset, **run_one(name, model, mode, sl, bs, args.steps)}
        rows[name] = r
        print(
            f"{subset:5} {name:16} {mode:10} {sl:>5} {bs:>3} {r['peak_rss'] / mib:>12.0f} "
            f"{r['estimate'] / mib:>12.0f} {r['rel_error']:>+7.1%}",
            flush=True,
        )
        order = [c[1] for c in CONFIGS]
        ordered = sorted(rows.values(), key=lambda r: order.index(r["name"]))
        worst = max(abs(r["rel_error"]) for r in ordered)
        result = {
            "command": "nice .venv/bin/python bench/planner_validate.py",
            "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
            "metric": "peak RSS (ru_maxrss) of a fresh process vs planner.estimate_memory",
            "worst_abs_rel_error": worst,
            "rows": ordered,
        }
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"worst |error| {worst:.1%}")


if __name__ == "__main__":
    main()
