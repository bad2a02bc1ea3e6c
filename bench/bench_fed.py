"""Federated fine-tuning on IMDb: K nodes with L labels each, IID or label-skewed (nodes
alternately 80/20 and 20/80 pos/neg), against one node alone and the K*L labels pooled.

Every arm runs through `edge_tl.fed.simulation.simulate` (Flower's Simulation Runtime, the real
ClientApp and ServerApp) from the shipped default base: `fed` with K nodes under SecAgg+,
`alone` and `pooled` as a one-node federation without SecAgg+ (plain local training with the
same recipe and the same number of epochs). Scored on the fixed stratified test subset of
bench/compare_imdb.py (its first --test-rows of the 5,000). Reports rounds, wall time per
round and the bytes each node sends and receives per round (Flower's wire encoding of every
message, captured by a ClientApp mod); prints a table and writes JSON to --out.

    nice -n 10 .venv/bin/python bench/bench_fed.py --rounds 3 --test-rows 1000 \\
        --out bench/results/fed-imdb.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import random
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
IMDB = ROOT.parent / "shared" / "data" / "imdb"
HOME = ROOT.parent / "fed-home"


def node_rows(
    rows: list[dict[str, str]], k: int, per_node: int, skew: bool, seed: int
) -> list[list[int]]:
    """Row indexes of each node: `per_node` rows, half of each label, or 80/20 and 20/80."""
    rng = random.Random(seed)
    pools = {lab: [i for i, r in enumerate(rows) if r["label"] == lab] for lab in ("pos", "neg")}
    for p in pools.values():
        rng.shuffle(p)
    out = []
    for n in range(k):
        share = (0.8 if n % 2 == 0 else 0.2) if skew else 0.5
        n_pos = round(per_node * share)
        out.append([pools["pos"].pop() for _ in range(n_pos)])
        out[-1] += [pools["neg"].pop() for _ in range(per_node - n_pos)]
    return out


def test_subset(n: int) -> tuple[list[str], list[str]]:
    """The fixed stratified test subset of bench/compare_imdb.py, its first `n` rows."""
    from compare_imdb import read_rows

    from edge_tl.compare.run import TEST_SEED
    from edge_tl.store.datasets import stratified_nested_subsets

    rows = read_rows(IMDB, "test")
    labels = [r["label"] for r in rows]
    keep = stratified_nested_subsets(labels, [5000, n], TEST_SEED)[n]
    return [rows[i]["text"] for i in keep], [labels[i] for i in keep]


def traffic_app(log: list[tuple[int, str, int, int]], require_secagg: bool) -> Any:
    """The real ClientApp, recording (node, message type, bytes in, bytes out) per message."""
    from flwr.client import ClientApp
    from flwr.common.serde import message_to_proto

    from edge_tl.fed.client import client_fn, secagg_guard

    def mod(msg: Any, ctxt: Any, call_next: Any) -> Any:
        out = call_next(msg, ctxt)
        size_in = len(message_to_proto(msg).SerializeToString())
        size_out = len(message_to_proto(out).SerializeToString())
        log.append((ctxt.node_id, msg.metadata.message_type, size_in, size_out))
        return out

    return ClientApp(client_fn=client_fn, mods=[mod, secagg_guard(require_secagg)])


def run_arm(name: str, data: list[str], a: argparse.Namespace, test: tuple) -> dict[str, Any]:
    """One arm: a federation over `data` (one dataset per node); accuracy, timings, traffic."""
    from edge_tl.fed import FedSettings
    from edge_tl.fed.simulation import simulate
    from edge_tl.store.models import model_path, remove_model
    from edge_tl.train.evaluate import evaluate_texts

    fed = len(data) > 1
    rounds = a.rounds if fed else 1
    epochs = a.local_epochs if fed else a.local_epochs * a.rounds  # the same epochs per row
    s = FedSettings(
        out=f"fed-{name}",
        data=",".join(data),
        labels="neg,pos",
        rounds=rounds,
        local_epochs=epochs,
        lr=a.lr,
        bs=a.bs,
        max_len=a.max_len,
        seed=a.seed,
        secagg=fed,
        min_nodes=len(data),
        valid_pct=0.0,
        freeze_embedding=a.freeze_embedding,
    )
    if model_path(s.out).exists():
        remove_model(s.out)
    log: list[tuple[int, str, int, int]] = []
    t0 = time.perf_counter()
    m = simulate(s, len(data), client_app=traffic_app(log, fed))
    seconds = time.perf_counter() - t0
    acc = evaluate_texts(m, *test)["accuracy"]
    per_node: dict[int, list[int]] = collections.defaultdict(lambda: [0, 0])
    for node, _kind, size_in, size_out in log:
        per_node[node][0] += size_in
        per_node[node][1] += size_out
    sent = [v[1] / rounds for v in per_node.values()]
    got = [v[0] / rounds for v in per_node.values()]
    return {
        "arm": name,
        "nodes": len(data),
        "rounds": rounds,
        "epochs_per_round": epochs,
        "accuracy": acc,
        "seconds": seconds,
        "round_seconds": [r.get("seconds") for r in m.metrics["federated_rounds"]],
        "bytes_sent_per_node_round": max(sent),
        "bytes_received_per_node_round": max(got),
        "rejected_updates": m.metrics["rejected_updates"],
    }


def _cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(x.split(":", 1)[1].strip() for x in lines if x.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--per-node", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--bs", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--test-rows", type=int, default=5000)
    ap.add_argument("--arms", default="alone,fed-iid,fed-skew,pooled")
    ap.add_argument("--freeze-embedding", action="store_true")
    ap.add_argument("--home", type=Path, default=HOME)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fed-imdb.json")
    a = ap.parse_args()
    os.environ["EDGE_TL_HOME"] = str(a.home)
    a.home.mkdir(parents=True, exist_ok=True)
    from compare_imdb import read_rows

    from edge_tl.store import keys
    from edge_tl.store.datasets import list_datasets, save_dataset

    if not keys.has_identity():
        keys.init_identity(None)
    rows = read_rows(IMDB, "train")
    have = {d.name for d in list_datasets()}
    names: dict[str, list[str]] = {}
    for kind in ("iid", "skew"):
        parts = node_rows(rows, a.nodes, a.per_node, kind == "skew", a.seed)
        names[kind] = []
        for n, idx in enumerate(parts):
            name = f"imdb-{kind}-{a.per_node}-{a.seed}-n{n}"
            if name not in have:
                save_dataset(name, [rows[i]["text"] for i in idx], [rows[i]["label"] for i in idx])
            names[kind].append(name)
        pooled = f"imdb-{kind}-{a.per_node}-{a.seed}-pooled{a.nodes}"
        if pooled not in have:
            idx = [i for p in parts for i in p]
            save_dataset(pooled, [rows[i]["text"] for i in idx], [rows[i]["label"] for i in idx])
        names[f"{kind}-pooled"] = [pooled]
    test = test_subset(a.test_rows)
    plan = {
        "alone": names["iid"][:1],
        "fed-iid": names["iid"],
        "fed-skew": names["skew"],
        "pooled": names["iid-pooled"],
    }
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    doc: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": commit,
        "machine": f"{_cpu_name()}, {os.cpu_count()} cores, {platform.platform()}",
        "args": {k: str(v) for k, v in vars(a).items()},
        "test_rows": len(test[0]),
        "results": [],
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    results = doc["results"]
    for arm in a.arms.split(","):
        print(f"{arm}: {len(plan[arm])} node(s) ...", flush=True)
        results.append(run_arm(arm, plan[arm], a, test))
        print(json.dumps(results[-1]), flush=True)
        a.out.write_text(json.dumps(doc, indent=2) + "\n")  # after each arm: a partial run counts
    print("| arm | nodes x labels | rounds | accuracy | s/round | sent/node/round |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        per_round = r["seconds"] / r["rounds"]
        print(
            f"| {r['arm']} | {r['nodes']} x {a.per_node * (a.nodes if r['arm'] == 'pooled' else 1)}"
            f" | {r['rounds']} | {r['accuracy']:.3f} | {per_round:.0f} |"
            f" {r['bytes_sent_per_node_round'] / 1e6:.1f} MB |"
        )


if __name__ == "__main__":
    main()
