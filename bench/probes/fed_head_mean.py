"""Probe: the federated TF-IDF head (edge_tl/fed/head.py) as the mean of K nodes' local fits
against one fit on the pooled rows, without the network, on bench_fed's IID split of a seed.

    .venv/bin/python bench/probes/fed_head_mean.py [seed]

Prints the test accuracy (bench_fed's 5,000-review subset) of: the mean of the local fits
(C by each node's CV) in its second round (pooled idf), one fit on the pooled rows (C by CV),
and both at one fixed C for every fit."""

# ruff: noqa
import sys
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

warnings.simplefilter("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_fed import IMDB, node_rows, test_subset
from compare_imdb import read_rows

from edge_tl.bases.store import load_base
from edge_tl.fed import head as H
from edge_tl.fed.weights import weighted_mean
from edge_tl.tfidf_head import head_proba

K, PER_NODE = 5, 500
seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
rows = read_rows(IMDB, "train")
tt, tl = test_subset(5000)
ty = np.array([lab == "pos" for lab in tl]).astype(int)
feats = H.head_features(load_base("default").vocab)
parts = node_rows(rows, K, PER_NODE, False, seed)
nodes = [([rows[i]["text"] for i in p], [int(rows[i]["label"] == "pos") for i in p]) for p in parts]
counts = [H.count_matrix(t, feats) for t, _ in nodes]


def acc(arrays, k=K):
    h = H.head_of_arrays(feats, arrays, k, 1.0)
    return round(float((head_proba(h, tt).argmax(1) == ty).mean()), 4)


def two_rows(w, b, shares):
    w = w.astype(np.float32)
    return [np.vstack([-w, w]), np.array([-b, b], np.float32), *shares]


zero = H.zero_arrays(2, len(feats))
m1 = weighted_mean([(H.fit_local(c, y, 2, zero, 0), PER_NODE) for c, (_, y) in zip(counts, nodes)])
m2 = weighted_mean([(H.fit_local(c, y, 2, m1, 0), PER_NODE) for c, (_, y) in zip(counts, nodes)])
print("mean of local fits (C by CV), second round:", acc(m2), flush=True)
x_all, y_all = sp.vstack(counts), sum((y for _, y in nodes), [])
print("one pooled fit (C by CV):", acc(H.fit_local(x_all, y_all, 2, zero, 0), 1), flush=True)
idf = H.idf_of(m1[2], 1 / m1[3][0])
for c in (3, 10, 30, 100, 300):
    local = []
    for cnt, (_, y) in zip(counts, nodes):
        lr = LogisticRegression(C=c, max_iter=2000).fit(H.tfidf(cnt, idf), y)
        local.append((two_rows(lr.coef_[0], lr.intercept_[0], m1[2:]), PER_NODE))
    lr = LogisticRegression(C=c, max_iter=2000).fit(H.tfidf(x_all, idf), y_all)
    pooled = two_rows(lr.coef_[0], lr.intercept_[0], m1[2:])
    print(f"C={c}: mean of local fits {acc(weighted_mean(local))}, pooled fit {acc(pooled)}")
