"""The TF-IDF head's variants on IMDb, alone: plain TF-IDF + LR against NB-LR (NB-scaled).

Same rows as bench/tfidf_imdb.py and `edge-tl compare`: nested stratified training subsets of
the 25k training reviews (edge_tl.store.datasets.stratified_nested_subsets over all six sizes,
seeds 0, 1, 2; one seed above 5k) and the fixed stratified 5,000-review test subset (seed 0).
C is chosen by 5-fold CV on the training rows only. Each unit reports the head as scikit-learn
predicts it, the head as the default private export ships it (n-grams of the shipped base's
words held by >= 5 training texts, scored by the pure-Python reference of the ONNX graph), and
that exported head on short texts (each test review cut to its first two sentences). Resumable:
each unit is written to the JSON as it finishes.

    nice -n 10 .venv/bin/python bench/bench_head_levers.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from tfidf_imdb import IMDB, read_csv  # noqa: E402

from edge_tl.compare.shipped import first_sentences  # noqa: E402
from edge_tl.store.datasets import stratified_nested_subsets  # noqa: E402
from edge_tl.store.files import atomic_write  # noqa: E402
from edge_tl.tfidf_head import MIN_DOCS, head_proba  # noqa: E402
from edge_tl.train.baseline import DEFAULT_CS, NB_CS, TfidfConfig, train_tfidf  # noqa: E402
from edge_tl.train.head import head_of  # noqa: E402

OUT = ROOT / "bench" / "results" / "levers" / "head.json"
SIZES = (500, 1000, 2500, 5000, 10000, 20000)
VARIANTS = {"plain": TfidfConfig(), "nb": TfidfConfig(nb=True)}


def base_words() -> set[str]:
    """The shipped base's vocabulary: the words the default export may write."""
    os.environ.setdefault("EDGE_TL_HOME", tempfile.mkdtemp(prefix="edge_tl_bench_"))
    from edge_tl.bases.store import load_base

    return set(load_base("default").vocab)


def _commit() -> str:
    """The checkout's short commit (with '+' when the tree has changes)."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    return git("rev-parse", "--short", "HEAD").strip() + (
        "+" if git("status", "--porcelain") else ""
    )


def _setting(cfg: TfidfConfig) -> dict:
    """A variant's settings as JSON, with the C grid it really searches."""
    return {**cfg.__dict__, "cs": list(NB_CS if cfg.nb and cfg.cs == DEFAULT_CS else cfg.cs)}


def accuracy(probs: np.ndarray, gold: np.ndarray) -> float:
    """Share of rows whose argmax is the gold column."""
    return float((np.asarray(probs).argmax(1) == gold).mean())


def run_unit(variant: str, texts, labels, test, words: set[str], seed: int) -> dict:
    """Fit one head; its accuracy in full, as exported and on short texts."""
    te_x, te_short, gold = test
    t0 = time.perf_counter()
    m = train_tfidf(texts, labels, seed, VARIANTS[variant])
    fit_s = time.perf_counter() - t0
    names = ["neg", "pos"]
    full = np.asarray(m.predict_proba(te_x))[:, [m.labels.index(n) for n in names]]
    head = head_of(m, names).restricted(words, MIN_DOCS)
    return {
        "accuracy": accuracy(full, gold),
        "exported_accuracy": accuracy(head_proba(head, te_x), gold),
        "short_accuracy": accuracy(head_proba(head, te_short), gold),
        "c": m.c,
        "cv_accuracy": m.cv_accuracy,
        "n_features": len(m.vectorizer.vocabulary_),
        "exported_features": len(head.features),
        "fit_seconds": fit_s,
        "seconds": time.perf_counter() - t0,
    }


def summarize(runs: dict) -> dict:
    """variant -> size -> mean / std / seeds of each accuracy."""
    out: dict = {}
    for r in runs.values():
        out.setdefault(r["variant"], {}).setdefault(str(r["size"]), []).append(r)
    for by_size in out.values():
        for size, rs in by_size.items():
            cell = {"seeds": len(rs), "c": sorted({r["c"] for r in rs})}
            for k in ("accuracy", "exported_accuracy", "short_accuracy"):
                v = [r[k] for r in rs]
                cell[k] = statistics.fmean(v)
                cell[f"{k}_std"] = statistics.stdev(v) if len(v) > 1 else 0.0
            by_size[size] = cell
    return out


def table(summary: dict) -> str:
    """Markdown: each variant's mean accuracy at each size (full / exported / short texts)."""
    sizes = sorted({int(s) for v in summary.values() for s in v})
    lines = [
        "| head | " + " | ".join(f"{s:,}" for s in sizes) + " |",
        "| --- |" + " ---: |" * len(sizes),
    ]
    for key, what in (
        ("accuracy", "full"),
        ("exported_accuracy", "exported"),
        ("short_accuracy", "short"),
    ):
        for variant, by_size in summary.items():
            cells = []
            for s in sizes:
                c = by_size.get(str(s))
                cells.append(f"{c[key]:.4f} ± {c[key + '_std']:.4f} [{c['seeds']}]" if c else "–")
            lines.append(f"| {variant}, {what} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    """Run every missing (variant, size, seed) unit, then print the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--big-seeds", type=int, default=1, help="seeds above 5k labels")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--test-rows", type=int, default=5000)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    doc = json.loads(a.out.read_text()) if a.out.exists() else {}
    runs = doc.get("runs", {})
    tr_x, tr_y = read_csv(IMDB / "train.csv.gz")
    te_x, te_y = read_csv(IMDB / "test.csv.gz")
    keep = stratified_nested_subsets(te_y, [a.test_rows], 0)[a.test_rows]
    te_x = [te_x[i] for i in keep]
    gold = np.array([["neg", "pos"].index(te_y[i]) for i in keep])
    test = (te_x, [first_sentences(t) for t in te_x], gold)
    words = base_words()
    import sklearn

    for seed in range(a.seeds):
        subsets = stratified_nested_subsets(tr_y, list(SIZES), seed)
        for size in sizes:
            if size > 5000 and seed >= a.big_seeds:
                continue
            rows = subsets[size]
            texts, labels = [tr_x[i] for i in rows], [tr_y[i] for i in rows]
            for variant in a.variants.split(","):
                key = f"{variant}/{size}/{seed}"
                if key in runs:
                    continue
                r = run_unit(variant, texts, labels, test, words, seed)
                runs[key] = {"variant": variant, "size": size, "seed": seed, **r}
                print(
                    f"{key}: {r['accuracy']:.4f} (exported {r['exported_accuracy']:.4f}, short "
                    f"{r['short_accuracy']:.4f}; C {r['c']:g}, {r['seconds']:.0f} s)",
                    flush=True,
                )
                doc = {
                    "setup": {
                        "test_rows": a.test_rows,
                        "test_seed": 0,
                        "subsets": "stratified_nested_subsets(train labels, all six sizes, seed)",
                        "variants": {
                            k: {**v.__dict__, "cs": list(v.cs)} for k, v in VARIANTS.items()
                        },
                        "exported": f"base vocabulary words, min_docs {MIN_DOCS}",
                        "short": "first two sentences of each test review",
                    },
                    "runs": runs,
                    "summary": summarize(runs),
                    "versions": {
                        "sklearn": sklearn.__version__,
                        "python": platform.python_version(),
                    },
                    "machine": platform.processor() or platform.machine(),
                    "date": time.strftime("%Y-%m-%d", time.gmtime()),
                    "commit": _commit(),
                    "command": "nice -n 10 .venv/bin/python bench/bench_head_levers.py",
                }
                a.out.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(a.out, (json.dumps(doc, indent=1) + "\n").encode(), 0o644)
    print(table(summarize(runs)))


if __name__ == "__main__":
    main()
