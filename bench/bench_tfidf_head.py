"""What the TF-IDF head costs and whether the graph computes scikit-learn's model.

    nice .venv/bin/python bench/bench_tfidf_head.py [--sizes 500,5000] [--n-test 1000]

For each training size: fit the head on that many IMDb train reviews (time, n-grams), put it on
a classifier of the shipped base's shape (random network weights: only sizes and speed matter
here), export with and without it (file size), run `Classifier.predict_proba` on --n-test IMDb
test reviews both ways (texts/s, same run, so the ratio is the fair reading), and compare the
graph's `probs_tfidf` with scikit-learn's `predict_proba` (max abs difference) and accuracy.
Writes bench/results/tfidf_head.json and prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_export import load_reviews  # noqa: E402


def base_shaped_model():
    """A 2-class classifier with the default base's vocabulary and shape, random weights."""
    import torch

    from edge_tl.awd_lstm import build_classifier
    from edge_tl.bases.store import load_base
    from edge_tl.store.models import TrainedModel

    base = load_base("default")
    torch.manual_seed(0)
    clf = build_classifier(base.model_cfg, 2)
    return TrainedModel(
        name="bench",
        model_cfg=base.model_cfg,
        vocab=list(base.vocab),
        labels=["neg", "pos"],
        state_dict=clf.state_dict(),
        train_config={},
        created="2026-01-01T00:00:00Z",
    )


def timed_proba(path: Path, texts: list[str], threads: int) -> tuple[np.ndarray, float]:
    """Probabilities and wall seconds of Classifier.predict_proba (model load excluded)."""
    from edge_tl.deploy.predict import Classifier

    c = Classifier(path, threads=threads)
    c.predict_proba(texts[:8])  # warm-up
    t0 = time.perf_counter()
    p = c.predict_proba(texts)
    return p, time.perf_counter() - t0


def main() -> None:
    """Measure every size, print the table, write the JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="500,5000")
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tfidf_head.json")
    a = ap.parse_args()
    import os

    os.environ.setdefault("EDGE_TL_HOME", tempfile.mkdtemp(prefix="edge_tl_bench_"))
    from edge_tl.deploy.export import to_onnx_bytes
    from edge_tl.deploy.predict import Classifier
    from edge_tl.train.baseline import train_tfidf
    from edge_tl.train.head import fit_head

    train, test = load_reviews("train"), load_reviews("test")[: a.n_test]
    t_texts, t_gold = [t for t, _ in test], [lab for _, lab in test]
    net = base_shaped_model()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        v1 = Path(tmp) / "v1.onnx"
        v1.write_bytes(to_onnx_bytes(net, vocab="full"))
        p1, s1 = timed_proba(v1, t_texts, a.threads)
        for n in (int(x) for x in a.sizes.split(",")):
            texts, labels = [t for t, _ in train[:n]], [lab for _, lab in train[:n]]
            t0 = time.perf_counter()
            head = fit_head(texts, labels, net.labels, seed=0)
            fit_s = time.perf_counter() - t0
            sk = train_tfidf(texts, labels, 0)  # the same deterministic model, for parity
            cols = [sk.labels.index(x) for x in net.labels]
            want = np.asarray(sk.predict_proba(t_texts))[:, cols]
            v2 = Path(tmp) / f"v2-{n}.onnx"
            v2.write_bytes(to_onnx_bytes(dataclasses.replace(net, tfidf_head=head), vocab="full"))
            p2, s2 = timed_proba(v2, t_texts, a.threads)
            c = Classifier(v2)
            got = np.concatenate(
                [
                    c.outputs(t_texts[i : i + 64], ["probs_tfidf"])[0]
                    for i in range(0, len(t_texts), 64)
                ]
            )
            gold = np.array([net.labels.index(x) for x in t_gold])
            rows.append(
                {
                    "train_rows": n,
                    "ngrams": len(head.features),
                    "fit_seconds": round(fit_s, 2),
                    "c": head.c,
                    "onnx_mb_without": round(v1.stat().st_size / 1e6, 2),
                    "onnx_mb_with": round(v2.stat().st_size / 1e6, 2),
                    "texts_per_s_without": round(len(t_texts) / s1, 1),
                    "texts_per_s_with": round(len(t_texts) / s2, 1),
                    "speed_ratio": round(s1 / s2, 3),
                    "max_abs_diff_vs_sklearn": float(np.abs(got - want).max()),
                    "head_accuracy": float((got.argmax(1) == gold).mean()),
                    "sklearn_accuracy": float((want.argmax(1) == gold).mean()),
                    "mix_rows_sum_to_1": bool(np.allclose(p2.sum(1), 1, atol=1e-5)),
                }
            )
            print(rows[-1], flush=True)
    doc = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "threads": a.threads,
        "n_test": len(t_texts),
        "network": "default base shape, random weights",
        "rows": rows,
        "v1_rows_sum_to_1": bool(np.allclose(p1.sum(1), 1, atol=1e-5)),
    }
    a.out.write_text(json.dumps(doc, indent=1))
    print(
        "| train rows | n-grams | fit s | ONNX MB without → with | texts/s without → with | "
        "max |graph − sklearn| | head acc |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['train_rows']:,} | {r['ngrams']:,} | {r['fit_seconds']} | "
            f"{r['onnx_mb_without']} → {r['onnx_mb_with']} | {r['texts_per_s_without']} → "
            f"{r['texts_per_s_with']} | {r['max_abs_diff_vs_sklearn']:.1e} | "
            f"{r['head_accuracy']:.3f} |"
        )


if __name__ == "__main__":
    main()
