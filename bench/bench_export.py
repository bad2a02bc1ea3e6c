"""Export benchmark: fastai eager vs plain PyTorch wrapper vs ORT fp32 vs ORT int8.

    nice .venv/bin/python bench/bench_export.py [--model NAME] [--n-parity 1000] [--n-acc 5000]
        [--threads 1,2]

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

    from edge_tl.awd_lstm import build_classifier
    from edge_tl.config import ModelConfig
    from edge_tl.deploy.tokenizer import TextTokenizer
    from edge_tl.store.models import TrainedModel

    tok = TextTokenizer()
    counts = Counter(t for text, _ in load_reviews("train")[:5000] for t in tok(text))
    vocab = make_vocab(counts, min_freq=2)
    vocab += [f"xxfake{i}" for i in range(60000 - len(vocab))]  # WT103 size, never hit
    cfg = ModelConfig(vocab_size=60000)
    torch.manual_seed(0)
    clf = build_classifier(cfg, 2)
    return TrainedModel(
        name="random-wt103",
        model_cfg=cfg,
        vocab=vocab,
        labels=["neg", "pos"],
        state_dict=clf.state_dict(),
        created="bench",
    )


def timeit(fns: dict, n: int, warmup: int = 2, raw: bool = False) -> dict:
    """Wall times in ms of each fn (raw lists, or p50/p95): each fn runs `n` times in a row
    after its warm-up, as a device classifying one text after another does. (Alternating
    engine by engine call evicted each one's weights from the cache: int8 then took 61 ms
    instead of 29 at 2 threads.)"""
    ts: dict[str, list[float]] = {k: [] for k in fns}
    for k, fn in fns.items():
        for _ in range(warmup):
            fn()
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            ts[k].append((time.perf_counter() - t0) * 1000)
    return ts if raw else {k: summary(v) for k, v in ts.items()}


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
    ap.add_argument("--threads", default="1,2", help="thread counts to time, e.g. 1,2")
    ap.add_argument("--ort-worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "export.json")
    args = ap.parse_args()
    if args.ort_worker:
        return ort_worker(args.ort_worker)
    args.threads = [int(t) for t in str(args.threads).split(",")]

    import torch

    from edge_tl.config import to_dict
    from edge_tl.deploy.export import fastai_classifier, stateless_wrapper, to_onnx_bytes
    from edge_tl.deploy.predict import Classifier

    torch.set_num_threads(args.threads[0])
    t0 = time.perf_counter()
    if args.model:
        from edge_tl.store.models import load_model

        model = load_model(args.model)
    else:
        model = random_wt103_model()
    print(f"model ready in {time.perf_counter() - t0:.0f}s", flush=True)
    res: dict = {
        "command": " ".join(["bench/bench_export.py", *sys.argv[1:]]),
        "model": model.name,
        "model_cfg": to_dict(model.model_cfg),
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
    }

    tmp = Path(tempfile.mkdtemp(prefix="edge_tl_bench"))
    paths = {}
    for q in (None, "int8"):
        t0 = time.perf_counter()
        data = to_onnx_bytes(model, quantize=q, vocab="full")
        p = tmp / f"model_{q or 'fp32'}.onnx"
        p.write_bytes(data)
        paths[q or "fp32"] = p
        res[f"export_s_{q or 'fp32'}"] = round(time.perf_counter() - t0, 1)
    res["file_mb"] = {k: round(p.stat().st_size / 1e6, 1) for k, p in paths.items()}
    # The same models in the external-data layout (graph + page-aligned weights file).
    from edge_tl.deploy.export import split_external

    ext_paths = {}
    for k, p in paths.items():
        (tmp / f"ext_{k}").mkdir()
        q = tmp / f"ext_{k}" / p.name
        graph, weights = split_external(p.read_bytes(), f"{q.name}.data")
        q.with_name(f"{q.name}.data").write_bytes(weights)
        q.write_bytes(graph)
        ext_paths[f"{k}_external"] = q
    print("sizes", res["file_mb"], flush=True)

    clf = Classifier(paths["fp32"], threads=args.threads[0])
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
        speed(args, res, paths, fa, fa_one, wrapper, enc, review256, ext_paths)
        args.out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    if args.n_parity:
        parity(args, res, model, paths, clf, fa_one, enc, test)
        args.out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")


def speed(args, res, paths, fa, fa_one, wrapper, enc, review256, ext_paths) -> None:
    """Batch-1 latency and batch-32 throughput per thread count, then cold start of predict.

    The ORT engines are timed in a child process that never imports torch, as `edge-tl
    predict` runs: in one process, ORT's and torch's idle worker threads spin after each call
    and slow the other engine down. Torch and ORT blocks alternate three times, so load drift
    hits both alike.
    """
    import torch

    x1, l1 = padded([review256])
    seqs = sorted((e[0] for e in enc[:320]), key=len)
    batches = [padded(seqs[i : i + 32]) for i in range(0, len(seqs), 32)]
    tmp = Path(tempfile.mkdtemp(prefix="edge_tl_bench_inputs"))
    np.savez(
        tmp / "inputs.npz",
        x1=x1,
        l1=l1,
        **{f"b{i}_ids": b[0] for i, b in enumerate(batches)},
        **{f"b{i}_lens": b[1] for i, b in enumerate(batches)},
    )
    fns = {
        "fastai_eager": lambda: fa_one(review256),
        "torch_wrapper": lambda: wrapper(torch.from_numpy(x1), torch.from_numpy(l1)),
    }
    thr_fns = {
        # fastai's own batches are sorted longest-first; its padding choice does not matter here.
        "fastai_eager": lambda i, ln: (fa.reset(), fa(torch.from_numpy(i[::-1].copy()))),
        "torch_wrapper": lambda i, ln: wrapper(torch.from_numpy(i), torch.from_numpy(ln)),
    }
    blocks = 3
    per_block = max(1, args.reps // blocks)
    res["by_threads"] = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        lat_ms: dict[str, list[float]] = {}
        thr: dict[str, list[float]] = {}
        spec = json.dumps(
            {
                "models": {k: str(p) for k, p in paths.items()},
                "threads": threads,
                "reps": per_block,
                "inputs": str(tmp / "inputs.npz"),
                "n_batches": len(batches),
            }
        )
        for _ in range(blocks):
            with torch.no_grad():
                for k, v in timeit(fns, per_block, raw=True).items():
                    lat_ms.setdefault(k, []).extend(v)
                for k, fn in thr_fns.items():
                    thr.setdefault(k, []).append(rate(fn, batches))
            out = subprocess.run(
                [sys.executable, __file__, "--ort-worker", spec],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            got = json.loads(out.strip().splitlines()[-1])
            for k, v in got["latency_ms"].items():
                lat_ms.setdefault(f"ort_{k}", []).extend(v)
            for k, v in got["reviews_per_s"].items():
                thr.setdefault(f"ort_{k}", []).append(v)
        lat = {k: summary(v) for k, v in lat_ms.items()}
        base = lat["fastai_eager"]["p50_ms"]
        rec = {
            "latency_batch1": lat,
            "throughput_batch32_reviews_per_s": {
                k: round(statistics.median(v), 1) for k, v in thr.items()
            },
            "speedup_vs_fastai_batch1": {k: round(base / v["p50_ms"], 2) for k, v in lat.items()},
        }
        res["by_threads"][str(threads)] = rec
        print_table(threads, rec, res["file_mb"])

    # Cold start: process start to first answer, through the real console script (its default
    # threads: all cores).
    exe = Path(sys.executable).with_name("edge-tl")
    cold = {}
    for k, p in {**paths, **ext_paths}.items():
        ts, cpu = [], []
        for _ in range(7):
            r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
            subprocess.run(
                [str(exe), "predict", str(p), "A great film, I loved it."],
                check=True,
                capture_output=True,
            )
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            ts.append(time.perf_counter() - t0)
            cpu.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
        cold[k] = {
            "wall_s": round(statistics.median(ts), 3),
            "cpu_s": round(statistics.median(cpu), 3),
        }
    res["cold_start_s"] = cold
    print(f"cold start (edge-tl predict, median of 7): {cold}", flush=True)


def rate(fn, batches) -> float:
    """Reviews per second of fn over the batches."""
    t0 = time.perf_counter()
    for ids, lens in batches:
        fn(ids, lens)
    return round(sum(len(b[1]) for b in batches) / (time.perf_counter() - t0), 1)


def summary(v: list[float]) -> dict[str, float]:
    """p50 and p95 of a list of milliseconds."""
    v = sorted(v)
    return {
        "p50_ms": round(statistics.median(v), 2),
        "p95_ms": round(v[min(len(v) - 1, int(0.95 * len(v)))], 2),
        "n": len(v),
    }


def print_table(threads: int, rec: dict, mb: dict) -> None:
    """One table per thread count."""
    lat, thr = rec["latency_batch1"], rec["throughput_batch32_reviews_per_s"]
    head = ("engine", "p50 ms", "p95 ms", "speedup", "rev/s@32", "MB")
    print(f"\n{threads} thread(s)\n{head[0]:<15}" + "".join(f"{h:>10}" for h in head[1:]))
    for k in lat:
        row = (
            lat[k]["p50_ms"],
            lat[k]["p95_ms"],
            rec["speedup_vs_fastai_batch1"][k],
            thr[k],
            mb.get(k.removeprefix("ort_"), ""),
        )
        print(f"{k:<15}" + "".join(f"{v:>10}" for v in row), flush=True)


def ort_worker(spec_json: str) -> None:
    """Child process: time the ORT sessions without torch loaded; print one JSON line."""
    import onnxruntime as ort

    spec = json.loads(spec_json)
    data = np.load(spec["inputs"])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = spec["threads"]
    sess = {
        k: ort.InferenceSession(p, opts, providers=["CPUExecutionProvider"])
        for k, p in spec["models"].items()
    }
    feed = {"input_ids": data["x1"], "lengths": data["l1"]}
    fns = {k: (lambda s=s: s.run(None, feed)) for k, s in sess.items()}
    batches = [(data[f"b{i}_ids"], data[f"b{i}_lens"]) for i in range(spec["n_batches"])]
    out = {
        "latency_ms": timeit(fns, spec["reps"], raw=True),
        "reviews_per_s": {
            k: rate(lambda i, ln, s=s: s.run(None, {"input_ids": i, "lengths": ln}), batches)
            for k, s in sess.items()
        },
    }
    print(json.dumps(out))


def parity(args, res, model, paths, clf, fa_one, enc, test) -> None:
    """ORT fp32 in padded batches vs fastai one text at a time; int8 agreement/accuracy."""
    import onnxruntime as ort
    import torch

    from edge_tl.deploy.predict import Classifier

    seqs = [e[0] for e in enc[: args.n_parity]]
    clf_int8 = Classifier(paths["int8"], threads=args.threads[0])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads[0]
    fp32 = ort.InferenceSession(str(paths["fp32"]), opts, providers=["CPUExecutionProvider"])
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
                got[idx] = fp32.run(None, {"input_ids": ids, "lengths": lens})[0]
            key = f"batch{bs}_max_abs"
            worst[key] = max(worst[key], float(np.abs(got - ref).max()))
        p8 = clf_int8.proba_ids(chunk)
        worst["int8_vs_fastai_max_abs"] = max(
            worst["int8_vs_fastai_max_abs"], float(np.abs(p8 - ref).max())
        )
        agree += int((p8.argmax(1) == ref.argmax(1)).sum())
        done += len(chunk)
        res["parity_n"] = done
        res["parity"] = {
            **worst,
            "int8_label_agreement": round(agree / done, 4),
            "lengths": {"min": min(map(len, seqs[:done])), "max": max(map(len, seqs[:done]))},
        }
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
