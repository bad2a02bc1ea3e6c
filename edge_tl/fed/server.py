"""The coordinator's ServerApp: start from the base, run FedAvg rounds (under SecAgg+ by
default), checkpoint every round encrypted, store the result as an ordinary edge_tl model."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

from edge_tl.bases.store import load_base
from edge_tl.errors import ConfigError, StoreError
from edge_tl.fed import head as fed_head
from edge_tl.fed.checkpoint import RoundCheckpoint, load_round, remove_round, save_round
from edge_tl.fed.privacy import epsilon
from edge_tl.fed.settings import FedSettings, settings_from_config
from edge_tl.fed.strategy import CheckedGrid, GuardedFedAvg
from edge_tl.fed.weights import (
    base_digest,
    get_arrays,
    initial_extras,
    initial_model,
    layout_of,
    model_shape,
    set_arrays,
)
from edge_tl.store.models import TrainedModel, model_path, save_model

log = logging.getLogger("edge_tl.fed")


def run_coordinator(grid: Any, context: Any) -> TrainedModel:
    """Run the federation `context.run_config` describes on `grid`; the stored model."""
    s = settings_from_config(context.run_config)
    if model_path(s.out).exists():
        raise StoreError(
            f"model {s.out!r} already exists",
            f"choose another --out name, or remove it with `edge-tl models rm {s.out}`",
        )
    base = load_base(s.base)
    model = initial_model(s, base)
    layout = layout_of(model, s, base.vocab)
    start = get_arrays(model, layout, initial_extras(layout, base))
    ck = load_round(s, layout) or RoundCheckpoint(0, start, [])
    if ck.round:
        log.info("resuming the federation of %s after round %d", s.out, ck.round)
    history = list(ck.history)

    def on_round(rnd: int, arrays: list[np.ndarray], metrics: dict[str, Any]) -> None:
        phase = "lm" if s.is_lm_round(rnd) else "classifier"
        history.append({"round": rnd, "phase": phase, **metrics})
        save_round(s, layout, RoundCheckpoint(rnd, arrays, history))

    strategy = GuardedFedAvg(
        s,
        layout,
        ck.arrays,
        start_round=ck.round,
        fit_config={"base_sha256": base_digest(base), "n_values": layout.n_values()},
        on_round=on_round,
    )
    remaining = s.total_rounds() - ck.round
    if remaining > 0:
        legacy = LegacyContext(
            context, config=ServerConfig(num_rounds=remaining), strategy=strategy
        )
        fit = (
            SecAggPlusWorkflow(
                num_shares=1.0,
                reconstruction_threshold=0.5,  # at least 2 shares: no node's update alone
                max_weight=float(s.max_examples),
                timeout=s.secagg_timeout,
            )
            if s.secagg
            else None
        )
        DefaultWorkflow(fit_workflow=fit)(CheckedGrid(grid, layout, strategy.note), legacy)
        _add_evaluations(history, legacy, ck.round)
    extras = set_arrays(model, layout, strategy.arrays)
    m = _trained_model(s, base, model, history, strategy.rejected)
    m.tfidf_head = _head(s, base, extras, history)
    save_model(m, overwrite=False)
    remove_round(s.out)
    return m


def _head(
    s: FedSettings, base: Any, extras: dict[str, np.ndarray], history: list[dict[str, Any]]
) -> Any:
    """The federated TF-IDF head as the model's own (None without one)."""
    if not s.head:
        return None
    nodes = next((int(h["nodes"]) for h in reversed(history) if h.get("nodes")), 1)
    arrays = [extras[k] for k in fed_head.KEYS]
    last = history[-1] if history else {}
    weight = s.head_weight
    if s.head_weight_auto and last.get("held_out_rows", 0) >= s.head_weight_min_rows:
        weight = float(last.get("head_weight", weight))
    features = fed_head.head_features(base.vocab)
    return fed_head.head_of_arrays(features, arrays, nodes, weight)


def privacy_report(s: FedSettings, rounds: int) -> dict[str, Any]:
    """The node-level (epsilon, delta) of `rounds` noised rounds ({} without DP)."""
    if s.dp_noise <= 0:
        return {}
    eps = epsilon(s.dp_noise, rounds, s.dp_delta)
    return {
        "dp_epsilon": round(eps, 4),
        "dp_delta": s.dp_delta,
        "dp_noise_multiplier": s.dp_noise,
        "dp_clip": s.dp_clip,
        "dp_rounds": rounds,
    }


def _add_evaluations(history: list[dict[str, Any]], legacy: Any, offset: int) -> None:
    """Merge the nodes' held-out accuracy per round into the history."""
    by_round = {h["round"]: h for h in history}
    for key in ("accuracy", "held_out_rows", "head_weight"):
        for rnd, value in legacy.history.metrics_distributed.get(key, []):
            row = by_round.setdefault(offset + rnd, {"round": offset + rnd})
            row[key] = value
    history[:] = sorted(by_round.values(), key=lambda h: h["round"])


def _trained_model(
    s: FedSettings, base: Any, model: Any, history: list[dict[str, Any]], rejected: list[str]
) -> TrainedModel:
    """The global model as an ordinary edge_tl model (its TF-IDF head added by the caller)."""
    import torch

    state = {
        k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).clone()
        for k, v in model.state_dict().items()
    }
    last = next((h for h in reversed(history) if "accuracy" in h), {})
    return TrainedModel(
        name=s.out,
        model_cfg=model_shape(base),
        vocab=list(base.vocab),
        labels=s.label_list(),
        state_dict=state,
        lin_ftrs=[s.lin_ftrs],
        train_config={"bptt": s.bptt, "max_len": s.max_len, "federated": s.to_run_config()},
        metrics={
            "federated_rounds": history,
            "rejected_updates": rejected[-50:],
            **privacy_report(s, sum(1 for h in history if "nodes" in h)),
            **({"valid_accuracy": last["accuracy"]} if last else {}),
        },
        base=base.name,
        base_sha256=getattr(base, "sha256", None),
    )


server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Any) -> None:
    """Flower's entry point for the coordinator (`flwr run`, or the Simulation Runtime)."""
    run_coordinator(grid, context)


def check_resumable(s: FedSettings) -> None:
    """Refuse settings whose rounds are fewer than a checkpoint already holds (ConfigError)."""
    base = load_base(s.base)
    layout = layout_of(initial_model(s, base), s, base.vocab)
    ck = load_round(s, layout)
    if ck is not None and ck.round > s.total_rounds():
        raise ConfigError(
            f"the checkpoint of {s.out!r} is after round {ck.round}, beyond"
            f" --lm-rounds {s.lm_rounds} + --rounds {s.rounds}",
            "pass --rounds at least that large",
        )


__all__ = ["check_resumable", "main", "privacy_report", "run_coordinator", "server_app"]
