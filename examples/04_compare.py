"""Python API, step 4: a small transfer-vs-scratch-vs-TF-IDF learning curve.

edge_tl.compare.run.run_compare trains, at each training size, on the same stratified rows: a ULMFiT
classifier from the shipped `default` base (transfer), the same architecture from random init
(scratch) and TF-IDF + logistic regression; all are tested on the same held-out rows. Results
(results.json, table.md, table.csv, curve.png) go to --home/compare[-tiny]/; a rerun skips the
finished units. Default: sizes 100 and 250, 250 test rows; it prints its time estimate first
(~5 min estimated on a 2-core CPU). --tiny: 30/20-row subsets of reviews cut to 40 words, sizes
10 and 20, one LM epoch, two classifier epochs: seconds, a smoke run, not a measurement.
Run examples/01_vault.py first.

    .venv/bin/python examples/04_compare.py [--home DIR] [--tiny]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from edge_tl.compare.plan import ComparePlan
from edge_tl.compare.report import markdown_table
from edge_tl.compare.run import run_compare
from edge_tl.errors import EdgeTLError
from edge_tl.store.datasets import (
    list_datasets,
    open_dataset,
    save_dataset,
    stratified_nested_subsets,
)
from edge_tl.train.config import TrainConfig

# One LM epoch; classifier: the head, then all layers (1 epoch each); short batches.
TINY = TrainConfig(
    lm_frozen_epochs=0, stages=(1, 0, 0, 1), bs=8, lm_bs=8, bptt=16, max_len=64, min_freq=1
)


def short_subset(name: str, rows: int, words: int = 40) -> str:
    """A stratified `rows`-row copy of `name` with every text cut to `words` words (--tiny)."""
    sub = f"{name}-{rows}x{words}w"
    if sub not in {d.name for d in list_datasets()}:
        ds = open_dataset(name)
        keep = stratified_nested_subsets(ds.labels, [rows], seed=0)[rows]
        texts = [" ".join(ds.texts[i].split()[:words]) for i in keep]
        save_dataset(sub, texts, [ds.labels[i] for i in keep], source=name)
    return sub


def main() -> None:
    """Run (or continue) the comparison and print its table; EdgeTLError -> `Error: ...`."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, default=Path(".examples-home"), help="EDGE_TL_HOME")
    ap.add_argument("--tiny", action="store_true", help="tiny subsets and schedule")
    args = ap.parse_args()
    os.environ["EDGE_TL_HOME"] = str(args.home.resolve())  # read by edge_tl at every call
    out = args.home / ("compare-tiny" if args.tiny else "compare")
    try:
        data, test, sizes, cfg = "imdb-sample", "imdb-sample-test", (100, 250), TrainConfig()
        if args.tiny:
            data, test, sizes, cfg = short_subset(data, 30), short_subset(test, 20), (10, 20), TINY
        # One seed; at most 250 test rows (a fixed stratified subset), the same for every unit.
        plan = ComparePlan(data, test, sizes=sizes, seeds=(0,), test_rows=250)
        doc = run_compare(plan, cfg, out, progress=False, echo=print)
        print(f"\n{markdown_table(doc)}")
        print(f"{len(doc['runs'])} runs; results.json, table.md, table.csv, curve.png in {out}")
    except EdgeTLError as e:
        sys.exit(f"Error: {e}")


if __name__ == "__main__":
    main()
