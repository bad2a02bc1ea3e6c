"""Export benchmark: fastai eager vs plain PyTorch wrapper vs ORT fp32 vs ORT int8.

    nice .venv/bin/python bench/bench_export.py [--model NAME] [--n-parity 1000] [--n-acc 5000]

Without --model: a WT103-shaped classifier (vocab 60000, emb 400, hidden 1152, 3 layers,
2 classes) with random weights and a vocabulary built from IMDb train reviews. With --model: a
trained model from the store (then int8 vs fp32 accuracy is measured on --n-acc test reviews).
Writes bench/results/export.json and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IMDB = ROOT.parent / "shared" / "data" / "imdb"
sys.path.insert(0, str(ROOT / "bench"))


def load_reviews(split: str) -> list[tuple[str, str]]:
    """(text, label) of an IMDb split, shuffled with a fixed seed."""
    with gzip.open(IMDB / f"{split}.csv.gz", "rt", encoding="utf-8", newline="") as f:
        rows = [(r["text"], r["label"]) for r in csv.DictReader(f)]
    random.Random(0).shuffle(rows)
    return rows


def random_wt103_model():
    """A WT103-shaped classifier with random weights and an IMDb-derived vocabulary."""
    import torch
    from bench_tokenize import make_vocab

    from edge_tl.config import ModelConfig
    from edge_tl.model import build_classifier
    from edge_tl.models import TrainedModel
    from edge_tl.tokenize import TextTokenizer

    tok = TextTokenizer()
    counts = Counter(t for text, _ in load_reviews("train")[:5000] for t in tok(text))
    vocab = make_vocab(counts, min_freq=2)
    vocab += [f"xxfake{i}" for i in range(60000 - len(vocab))]  # WT103 size, never hit
    cfg = ModelConfig(vocab_size=60000)
    torch.manual_seed(0)
    clf = build_classifier(cfg, 2)
    return TrainedModel(name="random-wt103", model_cfg=cfg, vocab=vocab, labels=["neg", "pos"],
                        state_dict=clf.state_dict(), created="bench")


def timeit(fns: dict, n: int, warmup: int = 2) -> dict[str, dict[str, float]]:
    """p50/p95 wall time in ms of each fn, run round-robin so machine load hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    ts: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(n):
        for k, fn in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            ts[k].append((time.perf_counter() - t0) * 1000)
            cpu[k].append((time.process_time() - c0) * 1000)
    out = {}
    for k, v in ts.items():
        v.sort()
        # CPU time is a load-independent proxy for wall time on an idle machine (1 thread).
        out[k] = {"p50_ms": round(statistics.median(v), 2),
                  "p95_ms": round(v[min(len(v) - 1, int(0.95 * len(v)))], 2),
                  "cpu_p50_ms": round(statistics.median(cpu[k]), 2)}
    return out


def padded(seqs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded (batch, seq) ids and (batch,) lengths."""
    ids = np.ones((len(seqs), max(len(s) for s in seqs)), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
    return ids, np.array([len(s) for s in seqs], dtype=np.int64)


def main() -> None:
    """Run every measurement and write the JSON report."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="trained model name in the store")
    ap.add_argument("--n-parity", type=int, default=1000)
    ap.add_argument("--n-acc", type=int, default=5000)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--parity-only", action="store_true", help="only the parity checks")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "export.json")
    args = ap.parse_args()

    import onnxruntime as ort
    import torch

    from edge_tl.config import to_dict
    from edge_tl.export import fastai_classifier, stateless_wrapper, to_onnx_bytes
    from edge_tl.predict import Classifier

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.model:
        from edge_tl.models import load_model

        model = load_model(args.model)
    else:
        model = random_wt103_model()
    print(f"model ready in {time.perf_counter() - t0:.0f}s", flush=True)
    res: dict = {"command": " ".join(["bench/bench_export.py", *sys.argv[1:]]),
                 "model": model.name, "model_cfg": to_dict(model.model_cfg),
                 "threads": args.threads, "machine": platform.processor() or platform.machine()}

    tmp = Path(tempfile.mkdtemp(prefix="edge_tl_bench"))
    paths = {}
    for q in (None, "int8"):
        t0 = time.perf_counter()
        data = to_onnx_bytes(model, quantize=q)
        p = tmp / f"model_{q or 'fp32'}.onnx"
        p.write_bytes(data)
        paths[q or "fp32"] = p
        res[f"export_s_{q or 'fp32'}"] = round(time.perf_counter() - t0, 1)
    res["file_mb"] = {k: round(p.stat().st_size / 1e6, 1) for k, p in paths.items()}
    # The same models in the external-data layout (graph + page-aligned weights file).
    from edge_tl.export import split_external

    ext_paths = {}
    for k, p in paths.items():
        (tmp / f"ext_{k}").mkdir()
        q = tmp / f"ext_{k}" / p.name
        graph, weights = split_external(p.read_bytes(), f"{q.name}.data")
        q.with_name(f"{q.name}.data").write_bytes(weights)
        q.write_bytes(graph)
        ext_paths[f"{k}_external"] = q
    print("sizes", res["file_mb"], flush=True)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    sess = {k: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
            for k, p in paths.items()}
    clf = Classifier(paths["fp32"], threads=args.threads)
    fa = fastai_classifier(model)
    wrapper = stateless_wrapper(model)

    test = load_reviews("test")
    enc = [(clf.encode([t])[0], lab) for t, lab in test[: max(args.n_parity, 2000)]]
    review256 = min(enc, key=lambda e: abs(len(e[0]) - 256))[0][:256]
    res["latency_review_tokens"] = len(review256)

    def fa_one(seq: list[int]):
        fa.reset()
        return torch.softmax(fa(torch.tensor([seq]))[0], -1)[0]  # (n_class,)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not args.parity_only:
        speed(args, res, paths, sess, fa, fa_one, wrapper, enc, review256, ext_paths)
        args.out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    if args.n_parity:
        parity(args, res, model, paths, sess, clf, fa_one, enc, test)
        args.out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")


def speed(args, res, paths, sess, fa, fa_one, wrapper, enc, review256, ext_paths) -> None:
    """Batch-1 latency, batch-32 throughput and cold start of `edge-tl predict`."""
    import torch

    x1, l1 = padded([review256])
    fns = {
        "fastai_eager": lambda: fa_one(review256),
        "torch_wrapper": lambda: wrapper(torch.from_numpy(x1), torch.from_numpy(l1)),
        **{f"ort_{k}": (lambda s=s: s.run(None, {"input_ids": x1, "lengths": l1}))
           for k, s in sess.items()},
    }
    with torch.no_grad():
        lat = timeit(fns, args.reps)
    res["latency_batch1"] = lat
    print("latency", lat, flush=True)

    # Throughput at batch 32 on 320 reviews in length-sorted batches (as predict does).
    seqs = sorted((e[0] for e in enc[:320]), key=len)
    batches = [padded(seqs[i : i + 32]) for i in range(0, len(seqs), 32)]
    thr = {}

    def rate(fn) -> float:
        t0 = time.perf_counter()
        for ids, lens in batches:
            fn(ids, lens)
        return round(len(seqs) / (time.perf_counter() - t0), 1)

    with torch.no_grad():
        # fastai's own batches are sorted longest-first; its padding choice does not matter here.
        thr["fastai_eager"] = rate(lambda i, ln: (fa.reset(), fa(torch.from_numpy(i[::-1].copy()))))
        thr["torch_wrapper"] = rate(
            lambda i, ln: wrapper(torch.from_numpy(i), torch.from_numpy(ln)))
    for k, s in sess.items():
        thr[f"ort_{k}"] = rate(lambda i, ln, s=s: s.run(None, {"input_ids": i, "lengths": ln}))
    res["throughput_batch32_reviews_per_s"] = thr
    print("throughput", thr, flush=True)

    # Cold start: process start to first answer, through the real console script.
    exe = Path(sys.executable).with_name("edge-tl")
    cold = {}
    for k, p in {**paths, **ext_paths}.items():
        ts, cpu = [], []
        for _ in range(7):
            r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
            subprocess.run([str(exe), "predict", str(p), "A great film, I loved it."],
                           check=True, capture_output=True)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            ts.append(time.perf_counter() - t0)
            cpu.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
        cold[k] = {"wall_s": round(statistics.median(ts), 3),
                   "cpu_s": round(statistics.median(cpu), 3)}
    res["cold_start_s"] = cold

    base = lat["fastai_eager"]["p50_ms"]
    res["speedup_vs_fastai_batch1"] = {k: round(base / v["p50_ms"], 2) for k, v in lat.items()}
    cbase = lat["fastai_eager"]["cpu_p50_ms"]
    res["speedup_vs_fastai_batch1_cpu"] = {k: round(cbase / v["cpu_p50_ms"], 2)
                                           for k, v in lat.items()}
    head = ("engine", "p50 ms", "p95 ms", "cpu ms", "speedup", "cpu spd", "rev/s@32", "MB")
    print(f"\n{head[0]:<15}" + "".join(f"{h:>10}" for h in head[1:]))
    for k in lat:
        mb = res["file_mb"].get(k.removeprefix("ort_"), "")
        row = (lat[k]["p50_ms"], lat[k]["p95_ms"], lat[k]["cpu_p50_ms"],
               res["speedup_vs_fastai_batch1"][k], res["speedup_vs_fastai_batch1_cpu"][k],
               thr[k], mb)
        print(f"{k:<15}" + "".join(f"{v:>10}" for v in row))
    print(f"cold start (edge-tl predict, median of 7): {cold}", flush=True)


def parity(args, res, model, paths, sess, clf, fa_one, enc, test) -> None:
    """ORT fp32 in padded batches vs fastai one text at a time; int8 agreement/accuracy."""
    import torch

    from edge_tl.predict import Classifier

    seqs = [e[0] for e in enc[: args.n_parity]]
    clf_int8 = Classifier(paths["int8"], threads=args.threads)
    worst = {f"batch{bs}_max_abs": 0.0 for bs in (1, 8, 32)}
    worst["int8_vs_fastai_max_abs"] = 0.0
    agree = done = 0
    rng = random.Random(1)
    t0 = time.perf_counter()
    # In chunks of 96, writing the figures so far: the fastai reference is slow on a busy machine.
    for start in range(0, len(seqs), 96):
        chunk = seqs[start : start + 96]
        with torch.no_grad():
            ref = np.stack([fa_one(s).numpy() for s in chunk])  # (chunk, n_class)
        for bs in (1, 8, 32):
            order = list(range(len(chunk)))
            rng.shuffle(order)  # mixed lengths in a batch: the hard case for padding
            got = np.zeros_like(ref)
            for i in range(0, len(order), bs):
                idx = order[i : i + bs]
                ids, lens = padded([chunk[j] for j in idx])
                got[idx] = sess["fp32"].run(None, {"input_ids": ids, "lengths": lens})[0]
            key = f"batch{bs}_max_abs"
            worst[key] = max(worst[key], float(np.abs(got - ref).max()))
        p8 = clf_int8.proba_ids(chunk)
        worst["int8_vs_fastai_max_abs"] = max(worst["int8_vs_fastai_max_abs"],
                                              float(np.abs(p8 - ref).max()))
        agree += int((p8.argmax(1) == ref.argmax(1)).sum())
        done += len(chunk)
        res["parity_n"] = done
        res["parity"] = {**worst, "int8_label_agreement": round(agree / done, 4),
                         "lengths": {"min": min(map(len, seqs[:done])),
                                     "max": max(map(len, seqs[:done]))}}
        res["parity_s"] = round(time.perf_counter() - t0, 1)
        args.out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
        print("parity", done, res["parity"], flush=True)

    if args.model:
        rows = [(clf.encode([t])[0], lab) for t, lab in test[: args.n_acc]]
        ids = [e[0] for e in rows]
        gold = np.array([model.labels.index(e[1]) for e in rows])
        res["accuracy"] = {
            "n": len(ids),
            "fp32": float((clf.proba_ids(ids).argmax(1) == gold).mean()),
            "int8": float((clf_int8.proba_ids(ids).argmax(1) == gold).mean()),
        }
        print("accuracy", res["accuracy"], flush=True)


if __name__ == "__main__":
    main()
