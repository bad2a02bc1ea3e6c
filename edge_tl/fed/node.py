"""A node's side of a round, in the ClientApp's process: decrypt the node's dataset in memory
with the node's key, train the global model on it, return only the weight delta (and row
counts, a loss, an accuracy). Imported only when a message needs training or evaluation, so
the SecAgg+ key-exchange stages start without torch."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.client import NumPyClient
from flwr.common import Context

from edge_tl.bases.store import load_base
from edge_tl.errors import ConfigError
from edge_tl.fed import head as fed_head
from edge_tl.fed.local import (
    NodeData,
    dataset_for_node,
    load_node_data,
    train_lm_local,
    train_local,
)
from edge_tl.fed.privacy import clip_update
from edge_tl.fed.settings import FedSettings, settings_from_config
from edge_tl.fed.weights import (
    LM_BIAS,
    MAX_ABS_DELTA,
    base_digest,
    check_arrays,
    get_arrays,
    initial_model,
    layout_of,
    model_shape,
    set_arrays,
    subtract,
)
from edge_tl.store.home import set_home
from edge_tl.store.keys import set_passphrase_file
from edge_tl.tfidf_head import head_proba
from edge_tl.train.evaluate import predict_proba_ids
from edge_tl.train.head import mix_log_losses

log = logging.getLogger("edge_tl.fed")
# In-memory only, per process: decrypted rows are never written anywhere.
_DATA: dict[tuple[Any, ...], NodeData] = {}
_BASES: dict[tuple[str, str], Any] = {}


def _apply_node_config(node_config: Mapping[str, Any]) -> None:
    """A SuperNode may name its store and passphrase file in its node config."""
    if node_config.get("home"):
        set_home(str(node_config["home"]))
    if node_config.get("passphrase-file"):
        set_passphrase_file(str(node_config["passphrase-file"]))


def _base(name: str) -> Any:
    key = (os.environ.get("EDGE_TL_HOME", ""), name)
    if key not in _BASES:
        _BASES[key] = load_base(name)
    return _BASES[key]


def _data(s: FedSettings, node_config: Mapping[str, Any], vocab: list[str]) -> NodeData:
    key = (
        os.environ.get("EDGE_TL_HOME", ""),
        dataset_for_node(s, node_config),
        s.labels,
        s.seed,
        s.valid_pct,
        s.base,
    )
    if key not in _DATA:
        _DATA[key] = load_node_data(s, node_config, vocab)
    return _DATA[key]


class EdgeClient(NumPyClient):
    """One node's side of a round: local training from the global weights, or evaluation."""

    def __init__(self, context: Context) -> None:
        _apply_node_config(context.node_config)
        self.settings = settings_from_config(context.run_config)
        self.node_config = dict(context.node_config)
        self.base = _base(self.settings.base)
        self.model = initial_model(self.settings, self.base)
        self.layout = layout_of(self.model, self.settings, self.base.vocab)
        self.features = fed_head.head_features(self.base.vocab) if self.settings.head else []
        self.extras: dict[str, np.ndarray] = {}

    def _load(self, parameters: list[np.ndarray], config: Mapping[str, Any]) -> NodeData:
        want = config.get("base_sha256")
        if want is not None and want != base_digest(self.base):
            raise ConfigError(
                f"this node's base {self.settings.base!r} is not the coordinator's",
                "import the same base bundle on every node (`edge-tl base import`)",
            )
        self.extras = set_arrays(self.model, self.layout, parameters)
        return _data(self.settings, self.node_config, list(self.base.vocab))

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        """Train from the global weights (the LM in the first rounds, then the classifier and
        its head); the clipped delta, the rows it counts for, a loss."""
        s = self.settings
        data = self._load(parameters, config)
        if s.is_lm_round(int(config.get("round", s.lm_rounds + 1))):
            bias, metrics = train_lm_local(
                self.model, self.extras[LM_BIAS], data, s, model_shape(self.base)
            )
            self.extras[LM_BIAS] = bias
        else:
            metrics = train_local(self.model, data, s, self.layout)
            if s.head:
                self._fit_head(data)
        delta = subtract(get_arrays(self.model, self.layout, self.extras), parameters)
        if s.dp_noise > 0:  # DP: every node's update weighs the same, its norm at most dp_clip
            metrics["update_norm"] = clip_update(delta, s.dp_clip)
        delta = [np.clip(d, -MAX_ABS_DELTA, MAX_ABS_DELTA) for d in delta]
        check_arrays(delta, self.layout, "this node's update", MAX_ABS_DELTA)
        return delta, 1 if s.dp_noise > 0 else len(data.y), metrics

    def _fit_head(self, data: NodeData) -> None:
        """This node's TF-IDF head under the global idf, into the extras that travel."""
        glob = [self.extras[k] for k in fed_head.KEYS]
        if data.counts is None:  # the rows stay the same every round: count them once
            data.counts = fed_head.count_matrix(data.texts, self.features)
        n_class = len(self.settings.label_list())
        fitted = fed_head.fit_local(data.counts, data.y, n_class, glob, self.settings.seed)
        self.extras.update(zip(fed_head.KEYS, fitted, strict=True))

    def evaluate(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[float, int, dict[str, Any]]:
        """The global model's accuracy (with its head, when it has one) on held-out rows."""
        data = self._load(parameters, config)
        if not data.v_y:
            return 1.0, 0, {"accuracy": float("nan")}
        s = self.settings
        probs = np.asarray(predict_proba_ids(self.model, data.v_ids, s.bs, s.bptt))
        head = (
            fed_head.head_of_arrays(
                self.features, [self.extras[k] for k in fed_head.KEYS], 1, s.head_weight
            )
            if s.head
            else None
        )
        metrics: dict[str, Any] = {}
        if head is not None:
            tfidf = head_proba(head, data.v_texts)
            # the mix's log loss at every share: the coordinator picks the share from their mean
            losses = mix_log_losses(probs, tfidf, data.v_y)
            metrics.update({f"{fed_head.MIX_LOSS}{i:02d}": float(v) for i, v in enumerate(losses)})
            probs = (1 - head.weight) * probs + head.weight * tfidf
        acc = float(np.mean(probs.argmax(1) == np.asarray(data.v_y)))
        return 1.0 - acc, len(data.v_y), {"accuracy": acc, **metrics}


__all__ = ["EdgeClient"]
