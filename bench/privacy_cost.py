"""The accuracy cost of the private-by-default export: one model trained on N IMDb labels,
exported with `--vocab full` and with the default (`--vocab base --min-docs 5`), fp32 and int8,
each file scored with `edge-tl evaluate MODEL.onnx` on the fixed stratified IMDb test subset.

    .venv/bin/python bench/privacy_cost.py --labels 5000 [--test-rows 5000] [--home DIR]
        [--model NAME]   # an already trained model in --home: skip import and training

Writes bench/results/privacy_cost-<labels>.json and prints a table. Uses the shipped default
base and `train`'s defaults; the data is ../shared/data/imdb.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMDB = ROOT.parent / "shared" / "data" / "imdb"


def rows(split: str) -> tuple[list[str], list[str]]:
    with gzip.open(IMDB / f"{split}.csv.gz", "rt", encoding="utf-8", newline="") as f:
        data = [(r["text"], r["label"]) for r in csv.DictReader(f)]
    return [t for t, _ in data], [lab for _, lab in data]


def subset_csv(path: Path, split: str, n: int, seed: int) -> None:
    """A stratified, seeded subset of an IMDb split, as compare draws it."""
    from edge_tl.store.datasets import stratified_nested_subsets

    texts, labels = rows(split)
    keep = stratified_nested_subsets(labels, [n], seed)[n]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows((texts[i], labels[i]) for i in keep)


def cli(*args: str, capture: bool = False) -> str:
    cmd = [sys.executable, "-m", "edge_tl", *args]
    out = subprocess.run(cmd, check=True, text=True, capture_output=capture)
    return out.stdout if capture else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", type=int, required=True)
    ap.add_argument("--test-rows", type=int, default=5000)
    ap.add_argument("--home", type=Path, default=Path("/tmp/edge_tl_privacy_cost"))
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    os.environ["EDGE_TL_HOME"] = str(args.home)
    work = args.home.parent / f"{args.home.name}-files"
    work.mkdir(parents=True, exist_ok=True)
    res: dict = {"command": "bench/privacy_cost.py " + " ".join(sys.argv[1:])}
    name = args.model or f"imdb{args.labels}"
    if args.model is None:
        t0 = time.time()
        subset_csv(work / "train.csv", "train", args.labels, 0)
        subset_csv(work / "test.csv", "test", args.test_rows, 0)
        cli("keys", "init", "--no-passphrase")
        cli("data", "import", str(work / "train.csv"), "--name", "train")
        cli("data", "import", str(work / "test.csv"), "--name", "test")
        cli("train", "--data", "train", "--out", name, "--quiet")
        res["train_minutes"] = round((time.time() - t0) / 60, 1)
    res["exports"] = {}
    for vocab in ("full", "base"):
        for q in ("fp32", "int8"):
            out = work / f"{vocab}-{q}.onnx"
            extra = ["--quantize", "int8"] if q == "int8" else []
            cli("export", name, "--out", str(out), "--vocab", vocab, *extra)
            r = json.loads(cli("evaluate", str(out), "--data", "test", "--json", capture=True))
            res["exports"][f"{vocab}/{q}"] = {
                k: r.get(k) for k in ("accuracy", "neural_accuracy", "tfidf_accuracy", "n")
            } | {"bytes": out.stat().st_size}
    dst = ROOT / "bench" / "results" / f"privacy_cost-{args.labels}.json"
    dst.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    print("| export | accuracy | network | TF-IDF head | MiB |")
    print("| --- | --- | --- | --- | --- |")
    for k, r in res["exports"].items():
        print(
            f"| {k} | {r['accuracy']:.4f} | {r['neural_accuracy']:.4f} | "
            f"{r['tfidf_accuracy']:.4f} | {r['bytes'] / 2**20:.1f} |"
        )


if __name__ == "__main__":
    main()
