"""TF-IDF + logistic regression on IMDb: the issue's cheap baseline, on compare's exact splits.

Train subsets: stratified, nested, fixed by seed (edge_tl.store.datasets.stratified_nested_subsets,
seeds
0, 1, 2) of the 25k training reviews; test: a fixed stratified 5,000-review subset of the 25k test
reviews (seed 0), the same rows `edge-tl compare --test-rows 5000` evaluates on. Resumable: each
(size, seed) is written to bench/results/tfidf.json as it finishes.

    nice -n 10 .venv/bin/python bench/tfidf_imdb.py
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import platform
import statistics
import time
from pathlib import Path

from edge_tl.store.datasets import stratified_nested_subsets
from edge_tl.store.files import atomic_write
from edge_tl.train.baseline import TfidfConfig, tfidf_accuracy

ROOT = Path(__file__).resolve().parents[1]
IMDB = ROOT.parent / "shared" / "data" / "imdb"
OUT = ROOT / "bench" / "results" / "tfidf.json"
SIZES = (500, 1000, 2500, 5000, 10000, 20000)
REFERENCE = dict(zip(SIZES, (0.811, 0.841, 0.866, 0.879, 0.894, 0.901), strict=True))


def read_csv(path: Path) -> tuple[list[str], list[str]]:
    """Texts and labels of an IMDb csv.gz (file order, as `edge-tl data import` keeps it)."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def summarize(runs: dict) -> dict:
    """Mean, std and the distance to the issue's reference at every size."""
    out = {}
    for size in SIZES:
        accs = [r["accuracy"] for r in runs.values() if r["size"] == size]
        if not accs:
            continue
        mean = statistics.fmean(accs)
        out[str(size)] = {
            "seeds": len(accs),
            "mean": mean,
            "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "reference": REFERENCE[size],
            "minus_reference": mean - REFERENCE[size],
            "c": sorted({r["c"] for r in runs.values() if r["size"] == size}),
        }
    return out


def main() -> None:
    """Run every missing (size, seed) unit, then print the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--test-rows", type=int, default=5000)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    cfg = TfidfConfig()
    doc = json.loads(a.out.read_text()) if a.out.exists() else {}
    setup = {
        "test_rows": a.test_rows,
        "test_seed": 0,
        "config": {**cfg.__dict__, "cs": list(cfg.cs)},
        "subsets": "edge_tl.store.datasets.stratified_nested_subsets",
    }
    if doc.get("setup", setup) != setup:
        raise SystemExit(f"{a.out} was made with other settings; move it away first")
    runs = doc.get("runs", {})
    tr_x, tr_y = read_csv(IMDB / "train.csv.gz")
    te_x, te_y = read_csv(IMDB / "test.csv.gz")
    test = stratified_nested_subsets(te_y, [a.test_rows], 0)[a.test_rows]
    te_x, te_y = [te_x[i] for i in test], [te_y[i] for i in test]
    import sklearn

    for seed in range(a.seeds):
        subsets = stratified_nested_subsets(tr_y, sizes, seed)
        for size in sizes:
            key = f"{size}/{seed}"
            if key in runs:
                continue
            rows = subsets[size]
            t0 = time.perf_counter()
            r = tfidf_accuracy(
                [tr_x[i] for i in rows], [tr_y[i] for i in rows], te_x, te_y, seed, cfg
            )
            runs[key] = {
                "size": size,
                "seed": seed,
                "accuracy": r["accuracy"],
                "c": r["c"],
                "cv_accuracy": r["cv_accuracy"],
                "n_features": r["n_features"],
                "fit_seconds": r["fit_seconds"],
                "predict_seconds": r["predict_seconds"],
                "seconds": time.perf_counter() - t0,
            }
            print(
                f"size {size:>6} seed {seed}: accuracy {r['accuracy']:.4f} (C {r['c']:g}, "
                f"{runs[key]['seconds']:.0f} s)",
                flush=True,
            )
            doc = {
                "setup": setup,
                "runs": runs,
                "summary": summarize(runs),
                "versions": {"sklearn": sklearn.__version__, "python": platform.python_version()},
                "command": "nice -n 10 .venv/bin/python bench/tfidf_imdb.py",
            }
            atomic_write(a.out, (json.dumps(doc, indent=1) + "\n").encode(), 0o644)
    print("\n| size | accuracy (mean ± std, 3 seeds) | issue reference | difference |")
    print("| ---: | :---: | :---: | ---: |")
    for size, s in summarize(runs).items():
        print(
            f"| {size} | {s['mean']:.3f} ± {s['std']:.3f} | {s['reference']:.3f} | "
            f"{s['minus_reference']:+.3f} |"
        )


if __name__ == "__main__":
    main()
