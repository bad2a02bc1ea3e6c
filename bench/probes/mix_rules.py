"""The mixing levers of compare's `train` arm on a model `train` already stored (e.g. the demo's).

Rebuilds what `train` held in memory: the model's own validation split of its training data
(the stored settings and seed give the same rows), the network's probabilities there, and the
head's cross-fitted ones (the head refitted on every labelled row, as `train` fits it); then
scores every rule of `edge_tl.compare.shipped` on the test data, and on the test texts cut to
two sentences. Prints JSON.

    .venv/bin/python bench/probes/mix_rules.py --home .demo/home --model sentiment \\
        --data imdb-sample --test imdb-sample-test
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    """Parse flags, rebuild the held-out rows, print the levers."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="the dataset the model was trained on")
    ap.add_argument("--test", required=True)
    a = ap.parse_args()
    os.environ["EDGE_TL_HOME"] = str(a.home)

    from edge_tl.awd_lstm import build_classifier
    from edge_tl.compare.shipped import shipped_metrics
    from edge_tl.config import from_dict
    from edge_tl.store.datasets import open_dataset
    from edge_tl.store.models import load_model
    from edge_tl.train.baseline import TfidfConfig, train_tfidf
    from edge_tl.train.config import TrainConfig
    from edge_tl.train.engine import numericalize, tokenize
    from edge_tl.train.evaluate import predict_proba_ids
    from edge_tl.train.head import out_of_fold_proba
    from edge_tl.train.prepare import stratified_split

    m = load_model(a.model)
    cfg = from_dict(TrainConfig, {**m.train_config}, "model")
    names = list(m.labels)
    texts, labels = open_dataset(a.data).labelled()
    y = [names.index(x) for x in labels]
    tr, va = stratified_split(y, cfg.valid_share(len(y)), cfg.seed)
    order = [texts[i] for i in tr] + [texts[i] for i in va]
    order_labels = [labels[i] for i in tr] + [labels[i] for i in va]
    net = build_classifier(
        m.model_cfg, len(names), seq_len=cfg.bptt, max_len=cfg.max_len, lin_ftrs=list(m.lin_ftrs)
    )
    net.load_state_dict(m.state_dict)

    def network_of(tx: list[str]) -> list[list[float]]:
        return predict_proba_ids(net, numericalize(tokenize(tx, 0), m.vocab), 64, cfg.bptt)

    fit = train_tfidf(order, order_labels, cfg.seed, TfidfConfig(nb=cfg.tfidf_nb))
    oof = out_of_fold_proba(fit, order, order_labels, names, cfg.seed)
    m = dataclasses.replace(
        m,
        held_out={
            "neural": network_of([texts[i] for i in va]),
            "head": oof[len(tr) :],
            "y": [y[i] for i in va],
            "texts": order,
            "labels": order_labels,
            "cross_fitted": True,
        },
    )
    t_texts, t_labels = open_dataset(a.test).labelled()
    gold = [names.index(x) for x in t_labels]
    r, extra = shipped_metrics(m, cfg, network_of(t_texts), t_texts, gold, names, network_of)
    print(json.dumps({"accuracy": r["accuracy"], **extra}, indent=1))


if __name__ == "__main__":
    main()
