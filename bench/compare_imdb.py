"""The real transfer-vs-scratch curve on IMDb, resumable, for a background run.

Imports the IMDb train/test/unsup CSVs into the vault of a dedicated EDGE_TL_HOME (once), then
runs `edge_tl.compare.run.run_compare` with the shipped default base: sizes 500 ... 20k, 3 seeds,
both protocols (semi: LM fine-tuned once on the 25k train texts + 50k unlabelled reviews),
transfer, scratch and TF-IDF arms, on a fixed stratified 5,000-review test subset, with the
published curves beside. Results (results.json, table.md, table.csv, curve.png) go to
bench/results/compare/; the encrypted shared LM, checkpoints and the lock stay in the home.
Kill it at any time and run the same command again: finished units are skipped.

    nohup nice -n 10 .venv/bin/python bench/compare_imdb.py > /work/compare-imdb.log 2>&1 &
    .venv/bin/python bench/compare_imdb.py --dry-run          # plan and time estimate only

The semi curve of the README (its own --out and --work; a 5k sample of the unlabelled reviews):

    nohup nice -n 10 .venv/bin/python bench/compare_imdb.py --protocol semi --arms transfer,tfidf \
        --sizes 500,1000,2500,5000 --seeds 1 --unsup-rows 5000 \
        --out bench/results/compare-semi --work ../compare-home/compare-semi > ../semi.log 2>&1 &
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import lzma
import os
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMDB = ROOT.parent / "shared" / "data" / "imdb"
OUT = ROOT / "bench" / "results" / "compare"
HOME = ROOT.parent / "compare-home"


def _csv(imdb: Path, name: str) -> Path:
    """IMDb's `name`.csv.gz, or the .csv.xz copy carried to a GPU machine (bench/gpu_semi.py)."""
    gz = imdb / f"{name}.csv.gz"
    return gz if gz.exists() else imdb / f"{name}.csv.xz"


def read_rows(imdb: Path, name: str) -> list[dict[str, str]]:
    """Every row of IMDb's `name` CSV (.csv.gz or .csv.xz) as a dict."""
    src = _csv(imdb, name)
    opener = gzip.open if src.suffix == ".gz" else lzma.open
    with opener(src, "rt", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def ensure_datasets(unsup_rows: int, imdb: Path = IMDB) -> str:
    """Import imdb-train / imdb-test (and the unlabelled reviews) once; the unsup dataset name."""
    from edge_tl.store import keys
    from edge_tl.store.datasets import import_source, list_datasets, save_dataset

    if not keys.has_identity():
        keys.init_identity(None)
    have = {d.name for d in list_datasets()}
    for name in ("train", "test"):
        if f"imdb-{name}" not in have:
            print(f"importing {name}.csv.gz ...", flush=True)
            import_source(
                _csv(imdb, name), f"imdb-{name}", text_col="text", label_col="label", progress=False
            )
    unsup = "imdb-unsup" if unsup_rows >= 50000 else f"imdb-unsup-{unsup_rows}"
    if unsup not in have:
        print(f"importing {unsup} ...", flush=True)
        texts = [r["text"] for r in read_rows(imdb, "unsup")]
        if unsup_rows < len(texts):
            texts = random.Random(0).sample(texts, unsup_rows)
        save_dataset(unsup, texts, [None] * len(texts), source="unsup.csv.gz")
    return unsup


def main() -> None:
    """Parse flags, prepare the vault, run or continue the comparison."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", type=Path, default=HOME, help="EDGE_TL_HOME of this benchmark")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument(
        "--work",
        type=Path,
        default=None,
        help="shared LM, checkpoints and lock (default HOME/compare); one per --out",
    )
    ap.add_argument("--base", default="default")
    ap.add_argument("--sizes", default="500,1000,2500,5000,10000,20000")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seed-list", default=None, help="explicit seeds, e.g. 1,2 (beats --seeds)")
    ap.add_argument("--protocol", choices=["supervised", "semi", "both"], default="both")
    ap.add_argument("--arms", default="transfer,scratch,tfidf")
    ap.add_argument("--test-rows", type=int, default=5000)
    ap.add_argument("--unsup-rows", type=int, default=50000, help="unlabelled reviews for semi")
    ap.add_argument("--budget-minutes", type=float, default=None)
    ap.add_argument("--profile", default=None)
    ap.add_argument("--config", default="{}", help="JSON TrainConfig overrides")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument(
        "--semi-lm",
        type=Path,
        default=None,
        help="a plain shared LM (bench/semi_lm.py export) to use instead of fine-tuning one",
    )
    ap.add_argument(
        "--semi-lm-backward",
        type=Path,
        default=None,
        help="likewise the backward shared LM (with backward_base in --config)",
    )
    a = ap.parse_args()
    os.environ["EDGE_TL_HOME"] = str(a.home)
    a.home.mkdir(parents=True, exist_ok=True)

    from edge_tl.compare.plan import ComparePlan
    from edge_tl.compare.run import run_compare
    from edge_tl.train.settings import resolve_config

    unsup = ensure_datasets(a.unsup_rows)
    work = a.work or a.home / "compare"
    if a.semi_lm is not None and not (work / "semi-lm.age").exists():
        from semi_lm import import_lm

        side = import_lm(a.semi_lm, work)
        print(f"shared LM imported from {a.semi_lm} (sha256 {side['sha256'][:16]}...)", flush=True)
    if a.semi_lm_backward is not None and not (work / "semi-lm-bwd.age").exists():
        from semi_lm import import_lm

        side = import_lm(a.semi_lm_backward, work, backward=True)
        print(f"backward LM imported from {a.semi_lm_backward} ({side['sha256'][:16]}...)")
    prof = None
    if a.profile:
        from edge_tl.hardware.profiles import load_profile

        prof = load_profile(a.profile)
    cfg = resolve_config(prof, json.loads(a.config))
    plan = ComparePlan(
        data="imdb-train",
        test="imdb-test",
        sizes=tuple(int(s) for s in a.sizes.split(",")),
        seeds=(
            tuple(int(s) for s in a.seed_list.split(",")) if a.seed_list else tuple(range(a.seeds))
        ),
        protocols=("supervised", "semi") if a.protocol == "both" else (a.protocol,),
        arms=tuple(a.arms.split(",")),
        base=a.base,
        lm_data=(unsup,),
        test_rows=a.test_rows,
        references="imdb",
    )
    doc = run_compare(
        plan,
        cfg,
        a.out,
        profile=prof,
        budget_minutes=a.budget_minutes,
        dry_run=a.dry_run,
        progress=a.progress,
        echo=lambda m: print(m, flush=True),
        work=work,
    )
    if not a.dry_run:
        print((a.out / "table.md").read_text(), flush=True)
    print(f"{len(doc['runs'])} runs recorded in {a.out / 'results.json'}", flush=True)


if __name__ == "__main__":
    main()
