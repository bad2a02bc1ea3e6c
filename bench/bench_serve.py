"""Serving and batch-scoring benchmark: `edge-tl serve` over HTTP on localhost against the same
texts scored in-process, and `edge-tl predict --file --out` against in-process batches.

    .venv/bin/python bench/bench_serve.py MODEL.onnx [MODEL2.onnx ...] [--requests 400]
        [--levels 1,8,32] [--soak 10000] [--batch-rows 2000] [--threads 2]

For each model: in-process reviews/s (one text per call, as a request carries one); the
server's requests/s, p50 and p99 latency and errors at each concurrency (httpx, one text per
request, a bounded number of requests); the server's RSS before and after `--soak` requests;
batch scoring reviews/s of the CLI on a CSV against in-process predict_proba on the same rows.
Texts: IMDb test reviews (../shared/data/imdb). Traffic goes to 127.0.0.1 only. Writes
bench/results/serve.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
IMDB = ROOT.parent / "shared" / "data" / "imdb"
OUT = ROOT / "bench" / "results" / "serve.json"


def reviews(n: int) -> list[str]:
    """The first n IMDb test reviews."""
    with gzip.open(IMDB / "test.csv.gz", "rt", encoding="utf-8", newline="") as f:
        out = []
        for row in csv.DictReader(f):
            out.append(row["text"])
            if len(out) == n:
                return out
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_process(model: Path, texts: list[str], threads: int) -> dict[str, float]:
    """Reviews/s scoring one text per call, and in batches (predict_proba on all)."""
    from edge_tl.deploy.predict import Classifier

    clf = Classifier(model, threads=threads)
    clf.predict_proba(texts[:8])  # warm-up
    t0 = time.perf_counter()
    for t in texts:
        clf.predict_proba([t])
    one = len(texts) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    clf.predict_proba(texts)
    batched = len(texts) / (time.perf_counter() - t0)
    return {"one_per_call_reviews_per_s": round(one, 1), "batched_reviews_per_s": round(batched, 1)}


async def load(port: int, texts: list[str], n: int, concurrency: int) -> dict[str, float]:
    """n POST /predict of one text each, `concurrency` in flight; rps, latency, errors."""
    lat: list[float] = []
    errors = 0
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=60, limits=limits
    ) as client:

        async def one(i: int) -> None:
            nonlocal errors
            async with sem:
                t0 = time.perf_counter()
                r = await client.post("/predict", json={"text": texts[i % len(texts)]})
                lat.append(time.perf_counter() - t0)
                errors += r.status_code != 200

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - t0
    lat.sort()
    return {
        "concurrency": concurrency,
        "requests": n,
        "requests_per_s": round(n / wall, 1),
        "p50_ms": round(1000 * statistics.median(lat), 1),
        "p99_ms": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1),
        "errors": errors,
    }


def start_server(model: Path, port: int, threads: int, workers: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "edge_tl", "serve", str(model), "--port", str(port)]
    cmd += ["--threads", str(threads), "--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not start")


def batch_cli(model: Path, texts: list[str], threads: int, tmp: Path) -> dict[str, float]:
    """Reviews/s of `edge-tl predict --file in.csv --out out.csv` (process start included)."""
    src, dst = tmp / "in.csv", tmp / "out.csv"
    with src.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        w.writerows(enumerate(texts))
    cmd = [sys.executable, "-m", "edge_tl", "predict", str(model), "--file", str(src)]
    cmd += ["--out", str(dst), "--threads", str(threads)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    with dst.open(encoding="utf-8", newline="") as f:
        n = sum(1 for _ in csv.DictReader(f))
    assert n == len(texts), (n, len(texts))
    return {"rows": n, "seconds": round(wall, 2), "reviews_per_s": round(n / wall, 1)}


def bench_model(model: Path, args: argparse.Namespace, texts: list[str]) -> dict:
    res: dict = {"model": str(model), "bytes": model.stat().st_size}
    res["in_process"] = in_process(model, texts[: args.requests], args.threads)
    port = free_port()
    proc = start_server(model, port, args.threads, args.workers)
    try:
        asyncio.run(load(port, texts, 16, 1))  # warm-up
        res["server"] = [asyncio.run(load(port, texts, args.requests, c)) for c in args.levels]
        if args.soak:
            # RSS after every fifth of the soak: growth that levels off is the allocators
            # warming up to the longest texts; growth that goes on would be a leak
            rss = [psutil.Process(proc.pid).memory_info().rss]
            part, errors = args.soak // 5, 0
            for _ in range(5):
                errors += asyncio.run(load(port, texts, part, 8))["errors"]
                rss.append(psutil.Process(proc.pid).memory_info().rss)
            res["soak"] = {
                "requests": 5 * part,
                "concurrency": 8,
                "errors": errors,
                "rss_mib": [round(r / 2**20, 1) for r in rss],
                "rss_before_mib": round(rss[0] / 2**20, 1),
                "rss_after_mib": round(rss[-1] / 2**20, 1),
            }
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    one = res["in_process"]["one_per_call_reviews_per_s"]
    for row in res["server"]:
        row["share_of_in_process"] = round(row["requests_per_s"] / one, 3)
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_serve_{os.getpid()}"
    tmp.mkdir(exist_ok=True)
    res["batch_cli"] = batch_cli(model, texts[: args.batch_rows], args.threads, tmp)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--levels", default="1,8,32")
    ap.add_argument("--soak", type=int, default=10_000)
    ap.add_argument("--batch-rows", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    args.levels = [int(x) for x in args.levels.split(",")]
    texts = reviews(max(args.requests, args.batch_rows))
    res = {
        "command": "bench/bench_serve.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor()}",
        "date": time.strftime("%Y-%m-%d"),
        "models": [bench_model(m, args, texts) for m in args.models],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    for m in res["models"]:
        ip = m["in_process"]
        print(
            f"\n{m['model']}: in-process {ip['one_per_call_reviews_per_s']} reviews/s one per "
            f"call, {ip['batched_reviews_per_s']} batched"
        )
        print("| concurrency | requests/s | share of in-process | p50 ms | p99 ms | errors |")
        print("| --- | --- | --- | --- | --- | --- |")
        for r in m["server"]:
            print(
                f"| {r['concurrency']} | {r['requests_per_s']} | {r['share_of_in_process']} | "
                f"{r['p50_ms']} | {r['p99_ms']} | {r['errors']} |"
            )
        if "soak" in m:
            s = m["soak"]
            print(
                f"soak: {s['requests']} requests, {s['errors']} errors, RSS after each fifth "
                f"{' -> '.join(map(str, s['rss_mib']))} MiB"
            )
        b = m["batch_cli"]
        print(f"batch scoring (CLI, {b['rows']} rows): {b['reviews_per_s']} reviews/s")


if __name__ == "__main__":
    main()
