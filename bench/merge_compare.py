"""Join compare results folders made side by side (bench/gpu_curve.py) into one comparison.

Every folder must hold the same setup (data, test rows, base, config, unlabelled sets): that is
what makes their units one comparison, and compare's own check refuses anything else. A unit
present in two folders must be the same record. Transfer units whose transfer + TF-IDF mean was
deferred (`probs-<size>-<seed>.json`) get it here: the same TF-IDF model is fitted on this CPU on
the same rows, which are rebuilt from the vault and checked against the digests the GPU wrote.

    .venv/bin/python bench/merge_compare.py --home /work/compare-home \
        --lm /work/compare-home/compare-semi-gpu-curve/semi-lm.age \
        --out bench/results/compare-semi-gpu-curve /work/gpu8/runs/*
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def merge_docs(docs: list[tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    """One results document from several with the same setup (the first holding the LM leads)."""
    from edge_tl.compare.results import check_setup

    docs = [(p, d) for p, d in docs if d.get("setup")]
    if not docs:
        raise SystemExit("no results with a setup")
    docs.sort(key=lambda pd: "semi_lm" not in pd[1])
    lead = json.loads(json.dumps(docs[0][1]))
    plan = lead["plan"]
    for path, d in docs[1:]:
        check_setup(lead["setup"], d["setup"], path)
        for key, rec in d["runs"].items():
            if key in lead["runs"] and lead["runs"][key] != rec:
                raise SystemExit(f"{path}: unit {key} differs from an earlier folder's")
            lead["runs"][key] = rec
        lead["updated"] = max(lead.get("updated", ""), d.get("updated", ""))
    # A folder's plan is its last one; the merged plan is what its units cover.
    for k in ("size", "seed", "arm", "protocol"):
        plan[f"{k}s"] = sorted({r[k] for r in lead["runs"].values()} - {"none"})
    return lead


def finish_ensembles(doc: dict[str, Any], probs_files: list[Path]) -> list[str]:
    """Fill in deferred transfer + TF-IDF means; the unit keys it did."""
    from gpu_curve import texts_digest

    from edge_tl.compare.ensemble import ensemble_metrics
    from edge_tl.compare.run import TEST_SEED
    from edge_tl.store.datasets import open_dataset, stratified_nested_subsets

    setup = doc["setup"]
    ds, ts = open_dataset(setup["data"]), open_dataset(setup["test"])
    if (ds.fingerprint, ts.fingerprint) != (setup["data_fingerprint"], setup["test_fingerprint"]):
        raise SystemExit("this vault's datasets are not the ones the comparison used")
    texts, labels = ds.labelled()
    t_texts, t_labels = ts.labelled()
    keep = stratified_nested_subsets(t_labels, [setup["test_rows"]], TEST_SEED)[setup["test_rows"]]
    t_texts = [t_texts[i] for i in keep]
    done = []
    for f in probs_files:
        p = json.loads(f.read_text())
        key = f"transfer/semi/{p['size']}/{p['seed']}"
        rec = doc["runs"].get(key)
        if rec is None or (rec.get("metrics") or {}).get("ensemble"):
            continue
        rows = stratified_nested_subsets(labels, [p["size"]], p["seed"])[p["size"]]
        tr, tl = [texts[i] for i in rows], [labels[i] for i in rows]
        if texts_digest(tr) != p["train_sha256"] or texts_digest(t_texts) != p["test_sha256"]:
            raise SystemExit(f"{f}: the rebuilt rows are not the ones the unit used")
        t0 = time.perf_counter()
        rec["metrics"]["ensemble"] = ensemble_metrics(
            p["probs"], tr, tl, t_texts, p["gold"], p["names"], p["seed"]
        )
        rec["timings"]["ensemble_here"] = time.perf_counter() - t0
        print(
            f"{key}: transfer + TF-IDF {rec['metrics']['ensemble']['accuracy']:.4f} "
            f"(transfer {rec['accuracy']:.4f})",
            flush=True,
        )
        done.append(key)
    return done


def lm_record(path: Path, doc: dict[str, Any]) -> dict[str, Any]:
    """The results file's `semi_lm` entry, read from the encrypted shared LM's header."""
    from edge_tl.compare.lm import lm_digest, load_lm
    from edge_tl.store.datasets import open_dataset

    setup = doc["setup"]
    lm = load_lm(path, lm_digest(setup))
    texts = sum(len(open_dataset(n).texts) for n in (setup["data"], *setup["lm_data"]))
    return {
        "texts": texts,
        "seconds": lm.seconds,
        "tokens": lm.tokens,
        "tokens_per_s": lm.tokens / lm.seconds if lm.seconds else None,
        **lm.metrics,
        "note": "read from the LM file: the unit that trained it did not finish",
    }


def main() -> None:
    """Merge the folders, finish deferred ensembles, write results.json and the report."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", type=Path, required=True, help="EDGE_TL_HOME holding the datasets")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--lm", type=Path, help="the shared LM, when no folder recorded it")
    ap.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="KEY=REASON",
        help="move a unit to `excluded_runs` with the reason (a known defect)",
    )
    ap.add_argument("folders", type=Path, nargs="+")
    a = ap.parse_args()
    os.environ["EDGE_TL_HOME"] = str(a.home)
    from edge_tl.compare import report
    from edge_tl.compare.results import load_results, save_results

    doc = merge_docs([(f, load_results(f)) for f in a.folders])
    if "semi_lm" not in doc and a.lm is not None:
        doc["semi_lm"] = lm_record(a.lm, doc)
    for item in a.exclude:
        key, _, reason = item.partition("=")
        if key in doc["runs"]:
            doc.setdefault("excluded_runs", {})[key] = {**doc["runs"].pop(key), "excluded": reason}
    finish_ensembles(doc, sorted(p for f in a.folders for p in f.glob("probs-*.json")))
    a.out.mkdir(parents=True, exist_ok=True)
    save_results(a.out, doc)
    report.write_report(doc, a.out)
    print((a.out / "table.md").read_text())


if __name__ == "__main__":
    main()
