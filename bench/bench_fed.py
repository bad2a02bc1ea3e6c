"""Federated fine-tuning on IMDb: K nodes with L labels (and U unlabelled reviews) each, IID or
label-skewed (nodes alternately 80/20 and 20/80 pos/neg), against one node alone and the same
K*L labels (and K*U unlabelled reviews) pooled on one device; over several seeds.

Every arm runs through `edge_tl.fed.simulation.simulate` (Flower's Simulation Runtime, the real
ClientApp and ServerApp) from the shipped default base, doing the same work per row: `fed-*`
with K nodes under SecAgg+ (LM rounds, then classifier rounds with the TF-IDF head), `alone`
and `pooled` as a one-node federation without SecAgg+ whose single LM round and single
classifier round run as many epochs as the federation's rounds together. Extra arms on the
first seed: `fed-iid-dp` (DP: clip and noise) and `fed-iid-frozen-emb` (the embedding is not
sent: a third fewer bytes). Scored on the fixed stratified test subset of
bench/compare_imdb.py (its first --test-rows of the 5,000): what the model predicts (network
and head mixed), the network alone and the head alone. Reports wall time per round and the
bytes each node sends and receives per round (Flower's wire encoding of every message,
captured by a ClientApp mod); prints a table and writes JSON to --out after every arm, and a
rerun with the same --out skips the arms it holds.

    .venv/bin/python bench/bench_fed.py --seeds 0,1,2 --out bench/results/fed-imdb.json

or one process per seed (`OMP_NUM_THREADS=1 ... --seeds N --out fed-imdb-sN.json`), then
`--merge fed-imdb-s0.json fed-imdb-s1.json fed-imdb-s2.json --out fed-imdb.json`.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import random
import subprocess
import sys
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


def arm_settings(name: str, data: list[str], a: argparse.Namespace, seed: int) -> Any:
    """The arm's FedSettings: a one-node arm runs the federation's epochs in one round each."""
    from edge_tl.fed import FedSettings

    fed = len(data) > 1
    return FedSettings(
        out=f"fed-{name}-s{seed}",
        data=",".join(data),
        labels="neg,pos",
        rounds=a.rounds if fed else 1,
        local_epochs=a.local_epochs if fed else a.local_epochs * a.rounds,
        lm_rounds=(a.lm_rounds if fed else 1) if a.lm_rounds else 0,
        lm_epochs=a.lm_epochs if fed or not a.lm_rounds else a.lm_epochs * a.lm_rounds,
        lr=a.lr,
        bs=a.bs,
        max_len=a.max_len,
        seed=seed,
        secagg=fed,
        min_nodes=len(data),
        valid_pct=a.valid_pct,  # held out on every node: the head's share is chosen on them
        freeze_embedding=name.endswith("frozen-emb"),
        dp_noise=a.dp_noise if name.endswith("-dp") else 0.0,
        dp_clip=a.dp_clip,
    )


class NotLikeForLike(RuntimeError):
    """Two arms of the bench would not train the same epochs per row with the same recipe."""


SAME_RECIPE = ("lr", "bs", "bptt", "max_len", "lin_ftrs", "lm_lr", "valid_pct", "head", "seed")


def check_same_work(fed: Any, one: Any) -> None:
    """A one-node arm must read every row as often as the federation does, the same way."""
    pairs = {
        "LM epochs": (fed.lm_rounds * fed.lm_epochs, one.lm_rounds * one.lm_epochs),
        "classifier epochs": (fed.rounds * fed.local_epochs, one.rounds * one.local_epochs),
        **{k: (getattr(fed, k), getattr(one, k)) for k in SAME_RECIPE},
    }
    odd = {k: v for k, v in pairs.items() if v[0] != v[1]}
    if odd:
        raise NotLikeForLike(f"federated and one-node arms differ: {odd}")


def run_arm(
    name: str, data: list[str], a: argparse.Namespace, seed: int, test: tuple
) -> dict[str, Any]:
    """One arm: a federation over `data` (one dataset per node); accuracy, timings, traffic."""
    from edge_tl.fed.simulation import simulate
    from edge_tl.store.models import model_path, remove_model
    from edge_tl.train.evaluate import evaluate_texts

    s = arm_settings(name, data, a, seed)
    check_same_work(arm_settings("fed-iid", ["a", "b"], a, seed), s)
    if model_path(s.out).exists():
        remove_model(s.out)
    log: list[tuple[int, str, int, int]] = []
    t0 = time.perf_counter()
    m = simulate(s, len(data), client_app=traffic_app(log, s.secagg))
    seconds = time.perf_counter() - t0
    ev = evaluate_texts(m, *test)
    rounds = s.total_rounds()
    per_node: dict[int, list[int]] = collections.defaultdict(lambda: [0, 0])
    for node, _kind, size_in, size_out in log:
        per_node[node][0] += size_in
        per_node[node][1] += size_out
    sent = [v[1] / rounds for v in per_node.values()]
    got = [v[0] / rounds for v in per_node.values()]
    history = m.metrics["federated_rounds"]
    return {
        "arm": name,
        "seed": seed,
        "nodes": len(data),
        "lm_rounds": s.lm_rounds,
        "rounds": s.rounds,
        "lm_epochs_per_round": s.lm_epochs,
        "epochs_per_round": s.local_epochs,
        "accuracy": ev["accuracy"],
        "network_accuracy": ev.get("neural_accuracy", ev["accuracy"]),
        "head_accuracy": ev.get("tfidf_accuracy"),
        "seconds": seconds,
        "round_seconds": [r.get("seconds") for r in history],
        "rounds_done": len(history),
        "bytes_sent_per_node_round": max(sent),
        "bytes_received_per_node_round": max(got),
        "rejected_updates": m.metrics["rejected_updates"],
        **{k: v for k, v in m.metrics.items() if k.startswith("dp_")},
    }


def _cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(x.split(":", 1)[1].strip() for x in lines if x.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def make_datasets(rows: list, unsup: list, a: argparse.Namespace, seed: int) -> dict[str, list]:
    """Each node's dataset and the pooled one, per split kind, in the bench's store."""
    from edge_tl.store.datasets import list_datasets, save_dataset

    have = {d.name for d in list_datasets()}
    rng = random.Random(seed)
    extra = rng.sample(range(len(unsup)), a.unsup_per_node * a.nodes)
    names: dict[str, list[str]] = {}
    for kind in ("iid", "skew"):
        parts = node_rows(rows, a.nodes, a.per_node, kind == "skew", seed)
        tag = f"{kind}-{a.per_node}-{a.unsup_per_node}-{seed}"
        names[kind] = []
        for n, idx in enumerate(parts):
            u = [unsup[i]["text"] for i in extra[n * a.unsup_per_node : (n + 1) * a.unsup_per_node]]
            name = f"imdb-{tag}-n{n}"
            if name not in have:
                texts = [rows[i]["text"] for i in idx] + u
                save_dataset(name, texts, [rows[i]["label"] for i in idx] + [None] * len(u))
            names[kind].append(name)
        pooled = f"imdb-{tag}-pooled{a.nodes}"
        if pooled not in have:
            idx = [i for p in parts for i in p]
            u = [unsup[i]["text"] for i in extra]
            texts = [rows[i]["text"] for i in idx] + u
            save_dataset(pooled, texts, [rows[i]["label"] for i in idx] + [None] * len(u))
        names[f"{kind}-pooled"] = [pooled]
    return {
        "alone": names["iid"][:1],
        "fed-iid": names["iid"],
        "fed-skew": names["skew"],
        "pooled": names["iid-pooled"],
        "fed-iid-dp": names["iid"],
        "fed-iid-frozen-emb": names["iid"],
    }


def table(results: list[dict[str, Any]], per_node: int, nodes: int) -> str:
    """Mean (min-max) over seeds per arm, as a markdown table."""
    import numpy as np

    lines = [
        "| arm | labels | seeds | accuracy | network | head | s/round | sent/node/round |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    arms = list(dict.fromkeys(r["arm"] for r in results))
    for arm in arms:
        rs = [r for r in results if r["arm"] == arm]

        def cell(key: str, rs: list = rs) -> str:
            v = np.array([r[key] for r in rs if r.get(key) is not None], dtype=float)
            if not len(v):
                return "-"
            return f"{v.mean():.3f}" + (f" ({v.min():.3f}-{v.max():.3f})" if len(v) > 1 else "")

        labels = per_node * (nodes if arm == "pooled" or arm.startswith("fed") else 1)
        where = f"{nodes} x {per_node}" if arm.startswith("fed") else f"1 x {labels}"
        per_round = np.mean([r["seconds"] / max(r["rounds_done"], 1) for r in rs])
        sent = np.mean([r["bytes_sent_per_node_round"] for r in rs]) / 1e6
        lines.append(
            f"| {arm} | {where} | {len(rs)} | {cell('accuracy')} | {cell('network_accuracy')}"
            f" | {cell('head_accuracy')} | {per_round:.0f} | {sent:.1f} MB |"
        )
    return "\n".join(lines)


def merge(parts: list[Path], out: Path) -> None:
    """One JSON of runs done in parallel (one seed each): their results, each run's header."""
    docs = [json.loads(p.read_text()) for p in parts]
    head = {k: v for k, v in docs[0].items() if k != "results"}
    head["runs"] = [{k: v for k, v in d.items() if k != "results"} for d in docs]
    head["results"] = [r for d in docs for r in d["results"]]
    out.write_text(json.dumps(head, indent=2) + "\n")
    a = json.loads(docs[0]["args"]["per_node"]), json.loads(docs[0]["args"]["nodes"])
    print(table(head["results"], *a))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--per-node", type=int, default=500)
    ap.add_argument("--unsup-per-node", type=int, default=500)
    ap.add_argument("--lm-rounds", type=int, default=1)
    ap.add_argument("--lm-epochs", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--bs", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=144)
    ap.add_argument("--valid-pct", type=float, default=0.1)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--test-rows", type=int, default=5000)
    ap.add_argument("--arms", default="alone,pooled,fed-iid,fed-skew")
    ap.add_argument("--extra-arms", default="fed-iid-dp,fed-iid-frozen-emb")
    ap.add_argument("--dp-noise", type=float, default=1.0)
    ap.add_argument("--dp-clip", type=float, default=1.0)
    ap.add_argument("--home", type=Path, default=HOME)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fed-imdb.json")
    ap.add_argument("--merge", type=Path, nargs="*", help="Only merge these runs' JSON into --out.")
    a = ap.parse_args()
    if a.merge:
        merge(a.merge, a.out)
        return
    os.environ["EDGE_TL_HOME"] = str(a.home)
    a.home.mkdir(parents=True, exist_ok=True)
    from compare_imdb import read_rows

    from edge_tl.store import keys

    if not keys.has_identity():
        keys.init_identity(None)
    rows, unsup = read_rows(IMDB, "train"), read_rows(IMDB, "unsup")
    test = test_subset(a.test_rows)
    seeds = [int(x) for x in a.seeds.split(",")]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    old = json.loads(a.out.read_text()) if a.out.is_file() else {}
    doc: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": commit,
        "machine": f"{_cpu_name()}, {os.cpu_count()} cores, {platform.platform()}",
        "command": " ".join(["bench/bench_fed.py", *sys.argv[1:]]),
        "args": {k: str(v) for k, v in vars(a).items()},
        "test_rows": len(test[0]),
        "results": old.get("results", []),
    }
    if old:
        doc["resumed_from"] = {"date": old.get("date"), "commit": old.get("commit")}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    results = doc["results"]
    plan = [(seed, arm) for seed in seeds for arm in a.arms.split(",")]
    plan += [(seeds[0], arm) for arm in a.extra_arms.split(",") if arm]
    arms_of: dict[int, dict[str, list[str]]] = {}  # each seed's datasets, made once
    for seed, arm in plan:
        if any(r["arm"] == arm and r["seed"] == seed for r in results):
            continue
        if seed not in arms_of:
            arms_of[seed] = make_datasets(rows, unsup, a, seed)
        data = arms_of[seed][arm]
        print(f"seed {seed} {arm}: {len(data)} node(s) ...", flush=True)
        results.append(run_arm(arm, data, a, seed, test))
        print(json.dumps(results[-1]), flush=True)
        a.out.write_text(json.dumps(doc, indent=2) + "\n")  # after each arm: a partial run counts
    print(table(results, a.per_node, a.nodes))


if __name__ == "__main__":
    main()
