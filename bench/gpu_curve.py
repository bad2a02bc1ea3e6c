"""The learning curve beyond 5k on a lent GPU: several compare processes share one GPU at once.

A classifier unit of the small base leaves an H200 mostly idle (it is bound by Python and
kernel-launch latency), so bench/gpu_curve.sh runs one process per chain of units:

- one fine-tunes the shared LM exactly as bench/gpu_semi.py (all 75k texts semi may use, labels
  unused) and then runs the longest transfer unit;
- scratch and TF-IDF processes start at once (they need no LM);
- other transfer processes wait for the LM (`--lm-from`) and copy it: same datasets, base and
  config give the same setup digest, so compare loads it as its own.

Each process writes its own results folder. `--defer-ensemble N` keeps the transfer + TF-IDF
mean off the GPU machine for units of N rows or more: the unit's test probabilities go to
`probs-<size>-<seed>.json` beside its results (IMDb test rows are public; a user's never leave
their vault this way), and bench/merge_compare.py fits the same TF-IDF model on this CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_semi import BASE_CONFIG, port_tokenize  # noqa: E402

# The speeds measured on an H200 (LM, classifier, inference tokens/s): they only feed
# compare's printed estimate, and measuring them again costs every process ~10 s of GPU.
H200_SPEEDS = (797_982.0, 376_682.0, 1_183_973.0)


def texts_digest(texts: list[str]) -> str:
    """sha256 over texts (NUL-separated): proves a replayed subset is the one that trained."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    return h.hexdigest()


def parse_plan(spec: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[str, ...]]:
    """'2500,5000:0,1:scratch' -> sizes, seeds, arms."""
    sizes, seeds, arms = spec.split(":")
    return (
        tuple(int(s) for s in sizes.split(",")),
        tuple(int(s) for s in seeds.split(",")),
        tuple(arms.split(",")),
    )


def defer_ensembles(out: Path, min_rows: int) -> None:
    """Replace compare's transfer + TF-IDF mean for units of `min_rows`+ rows by a probs file."""
    import edge_tl.compare.ensemble as ce

    original = ce.ensemble_metrics

    def deferred(neural, train_texts, train_labels, test_texts, gold, names, seed):  # noqa: ANN001, ANN202
        if len(train_texts) < min_rows:
            return original(neural, train_texts, train_labels, test_texts, gold, names, seed)
        doc = {
            "size": len(train_texts),
            "seed": seed,
            "names": list(names),
            "train_sha256": texts_digest(list(train_texts)),
            "test_sha256": texts_digest(list(test_texts)),
            "gold": list(gold),
            "probs": [[round(float(x), 7) for x in p] for p in neural],
        }
        out.mkdir(parents=True, exist_ok=True)
        (out / f"probs-{len(train_texts)}-{seed}.json").write_text(json.dumps(doc))
        print(f"ensemble of {len(train_texts)} rows deferred to bench/merge_compare.py", flush=True)
        return None  # the report skips a unit without an ensemble

    ce.ensemble_metrics = deferred


def wait_for_lm(src: Path, work: Path, deadline: float) -> None:
    """Copy the shared LM that another process is training once it exists."""
    from edge_tl.compare.lm import SEMI_LM

    t0 = time.perf_counter()
    while not (src / SEMI_LM).is_file():
        if time.monotonic() > deadline:
            raise SystemExit(f"no shared LM in {src} in time")
        time.sleep(2)
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / SEMI_LM, work / SEMI_LM)
    print(f"shared LM copied from {src} after waiting {time.perf_counter() - t0:.0f} s", flush=True)


def main() -> None:
    """Prepare the vault, or run this process's plans in order."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--imdb", type=Path, required=True)
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--prepare", action="store_true", help="import the datasets and stop")
    ap.add_argument("--plan", action="append", default=[], help="SIZES:SEEDS:ARMS, in order")
    ap.add_argument("--lm-from", type=Path, help="wait for the shared LM in this work folder")
    ap.add_argument("--lm-epochs", type=int, default=1)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--defer-ensemble", type=int, default=0, help="0: never")
    ap.add_argument("--seconds", type=float, default=600.0, help="give up waiting after this")
    ap.add_argument("--base", default="default")
    ap.add_argument("--import-base", type=Path, help="with --prepare: import this bundle first")
    ap.add_argument(
        "--unsup-rows",
        type=int,
        default=50000,
        help="unlabelled reviews for the shared LM (the file may hold exactly these)",
    )
    a = ap.parse_args()
    deadline = time.monotonic() + a.seconds

    os.environ["EDGE_TL_HOME"] = str(a.home)
    from compare_imdb import ensure_datasets

    unsup = ensure_datasets(a.unsup_rows, a.imdb)
    if a.prepare:
        if a.import_base is not None:
            from edge_tl.bases.store import import_base

            print(f"imported base {import_base(a.import_base, allow_unsigned=True)}", flush=True)
        return
    import edge_tl.compare.run as compare
    import edge_tl.train.engine as fastcpu
    from edge_tl.compare.plan import ComparePlan
    from edge_tl.compare.run import run_compare
    from edge_tl.train.settings import resolve_config

    fastcpu.tokenize = port_tokenize  # spaCy is not on that machine; same tokens
    compare.measure_speed = lambda *_a, **_k: H200_SPEEDS
    if a.defer_ensemble:
        defer_ensembles(a.out, a.defer_ensemble)
    if a.lm_from is not None:
        wait_for_lm(a.lm_from, a.work, deadline)
    over: dict[str, Any] = {
        **BASE_CONFIG,
        "workers": a.workers,
        "threads": a.threads,
        "lm_epochs": a.lm_epochs,
    }
    cfg = resolve_config(None, over)
    for spec in a.plan:
        sizes, seeds, arms = parse_plan(spec)
        plan = ComparePlan(
            data="imdb-train",
            test="imdb-test",
            sizes=sizes,
            seeds=seeds,
            protocols=("semi",),
            arms=arms,
            base=a.base,
            lm_data=(unsup,),
            test_rows=5000,
            references="imdb",
        )
        try:
            run_compare(plan, cfg, a.out, echo=lambda m: print(m, flush=True), work=a.work)
        except Exception:  # a bench driver: log it and go on with the next plan
            traceback.print_exc()
            sys.stdout.flush()


if __name__ == "__main__":
    main()
