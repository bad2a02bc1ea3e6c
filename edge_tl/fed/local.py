"""What a node does with its own rows, in memory: read the vault, tokenize with the base's
vocabulary, fine-tune the language model or train the classifier a few epochs, measure the
global model on held-out rows."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from edge_tl.errors import DataError
from edge_tl.fed.settings import FedSettings
from edge_tl.fed.weights import EMBEDDING, Layout
from edge_tl.store.datasets import open_dataset
from edge_tl.train.engine import clas_loader, lm_loader, numericalize, tokenize
from edge_tl.train.prepare import stratified_split

PARTITION_ID = "partition-id"  # Flower's node-config keys (the Simulation Runtime sets them)
NUM_PARTITIONS = "num-partitions"


@dataclass
class NodeData:
    """A node's rows under the base vocabulary: training and held-out parts, and the text the
    language model reads (training rows and unlabelled rows; held-out rows never)."""

    ids: list[Any]
    y: list[int]
    v_ids: list[Any]
    v_y: list[int]
    texts: list[str]
    v_texts: list[str]
    lm_ids: list[Any]
    counts: Any = None  # the TF-IDF head's word counts of `texts`, once the head needs them


def dataset_for_node(s: FedSettings, node_config: Mapping[str, Any]) -> tuple[str, int, int]:
    """(dataset name, shard, shards): the node's own name, one per simulated node, or a shard."""
    if "data" in node_config:
        return str(node_config["data"]), 0, 1
    names = s.data_list()
    pid = int(node_config.get(PARTITION_ID, 0))
    k = int(node_config.get(NUM_PARTITIONS, 1))
    if len(names) > 1:
        if len(names) != k or not 0 <= pid < k:
            raise DataError(
                f"{len(names)} dataset names for {k} nodes",
                "pass one dataset per node, or one dataset to split",
            )
        return names[pid], 0, 1
    return names[0], pid, k


def shard(y: Sequence[int], part: int, parts: int, seed: int) -> list[int]:
    """Row indices of shard `part` of `parts`: each label's rows dealt out in turn."""
    rng = random.Random(seed)
    out: list[int] = []
    for c in sorted(set(y)):
        rows = [i for i, v in enumerate(y) if v == c]
        rng.shuffle(rows)
        out += rows[part::parts]
    return sorted(out)


def load_node_data(
    s: FedSettings, node_config: Mapping[str, Any], vocab: Sequence[str]
) -> NodeData:
    """Decrypt the node's dataset in memory and turn it into ids under `vocab` (the base's)."""
    name, part, parts = dataset_for_node(s, node_config)
    ds = open_dataset(name)
    texts, labels = ds.labelled()
    unlabelled = ds.unlabelled_texts() if s.lm_rounds else []
    names = s.label_list()
    odd = sorted(set(labels) - set(names))
    if odd:
        raise DataError(
            f"dataset {name!r} has label {odd[0]!r}, which the federation does not use",
            f"the federation's labels are {', '.join(names)}",
        )
    c2i = {n: i for i, n in enumerate(names)}
    y = [c2i[x] for x in labels]
    if parts > 1:
        keep = shard(y, part, parts, s.seed)
        texts, y = [texts[i] for i in keep], [y[i] for i in keep]
        unlabelled = unlabelled[part::parts]
    if len(texts) < 2:
        raise DataError(f"dataset {name!r} holds {len(texts)} labelled rows on this node")
    ids = numericalize(tokenize(texts), vocab)
    tr, va = (
        stratified_split(y, s.valid_pct, s.seed) if s.valid_pct > 0 else (list(range(len(y))), [])
    )
    extra = numericalize(tokenize(unlabelled), vocab) if unlabelled else []
    return NodeData(
        [ids[i] for i in tr],
        [y[i] for i in tr],
        [ids[i] for i in va],
        [y[i] for i in va],
        [texts[i] for i in tr],
        [texts[i] for i in va],
        [ids[i] for i in tr] + list(extra) if s.lm_rounds else [],
    )


def _trainable(model: Any, s: FedSettings) -> list[torch.nn.Parameter]:
    names = {EMBEDDING} if s.freeze_embedding else set()
    out = []
    for n, p in model.named_parameters():
        p.requires_grad_(n not in names)
        if n not in names:
            out.append(p)
    return out


def train_local(model: Any, data: NodeData, s: FedSettings, layout: Layout) -> dict[str, float]:
    """`s.local_epochs` of Adam over the node's training rows (FedProx term if mu > 0)."""
    params = _trainable(model, s)
    opt = torch.optim.Adam(params, lr=s.lr, betas=(0.8, 0.99))
    named = dict(model.named_parameters())
    # FedProx anchors: the global weights this round started from.
    anchors = (
        {k: named[k].detach().clone() for k in layout.keys if k in named}
        if s.proximal_mu > 0
        else {}
    )
    loader = clas_loader(data.ids, data.y, s.bs, s.bptt, True)
    t0, seen, loss_sum = time.perf_counter(), 0, 0.0
    model.train()
    for _ in range(s.local_epochs):
        for xb, yb in loader:
            # fastai's tensor subclasses have no cross_entropy: plain tensors from here on
            x, y = xb.as_subclass(torch.Tensor), yb.as_subclass(torch.Tensor).long()
            logits = model(x)[0]  # (bs, n_class)
            loss = torch.nn.functional.cross_entropy(logits, y)
            if anchors:
                prox = sum(((named[k] - a) ** 2).sum() for k, a in anchors.items())
                loss = loss + s.proximal_mu / 2 * prox
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            seen += len(y)
            loss_sum += float(loss.detach()) * len(y)
    return {
        "train_loss": loss_sum / max(seen, 1),
        "train_seconds": time.perf_counter() - t0,
    }


def train_lm_local(
    model: Any, bias: np.ndarray, data: NodeData, s: FedSettings, mcfg: Any
) -> tuple[np.ndarray, dict[str, float]]:
    """`s.lm_epochs` of language-model fine-tuning on the node's text: the classifier's encoder
    and the LM's output bias (tied to the embedding) are trained; the new bias and a loss."""
    from edge_tl.awd_lstm import build_lm

    lm = build_lm(mcfg, drop_mult=0.3)
    lm[0].load_state_dict(model[0].module.state_dict())
    with torch.no_grad():
        lm[1].decoder.bias.copy_(torch.from_numpy(bias))
    params = [p for p in lm.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=s.lm_lr, betas=(0.8, 0.99))
    loader = lm_loader(data.lm_ids, s.bs, s.bptt, True)
    t0, steps, loss_sum = time.perf_counter(), 0, 0.0
    lm.train()
    for _ in range(s.lm_epochs):
        lm.reset()
        for xb, yb in loader:
            x, y = xb.as_subclass(torch.Tensor), yb.as_subclass(torch.Tensor).long()
            logits = lm(x)[0]  # (bs, bptt, vocab)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            steps += 1
            loss_sum += float(loss.detach())
    model[0].module.load_state_dict(lm[0].state_dict())
    new_bias = lm[1].decoder.bias.detach().float().numpy().copy()
    return new_bias, {
        "lm_loss": loss_sum / max(steps, 1),
        "train_seconds": time.perf_counter() - t0,
    }


__all__ = [
    "NodeData",
    "dataset_for_node",
    "load_node_data",
    "shard",
    "train_lm_local",
    "train_local",
]
