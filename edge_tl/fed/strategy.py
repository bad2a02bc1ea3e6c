"""FedAvg over weight deltas, guarded: every reply is checked before it can reach the sum, a
round without enough good updates leaves the global model as it was, and every accepted round
is checkpointed. Nodes send deltas (local - global), which stay far inside SecAgg+'s clipping
range where the base's own weights (up to ~17) would not."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from flwr.common import (
    FitRes,
    Message,
    MessageType,
    Parameters,
    bytes_to_ndarray,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.compat.common import recorddict_compat as compat
from flwr.server.strategy import FedAvg

from edge_tl.fed.head import MIX_LOSS
from edge_tl.fed.privacy import add_noise
from edge_tl.fed.settings import FedSettings
from edge_tl.fed.weights import MAX_ABS_DELTA, Layout, UpdateError, add, check_arrays, check_model
from edge_tl.fed.weights import weighted_mean as fedavg
from edge_tl.train.head import WEIGHT_GRID, weight_of_losses

log = logging.getLogger("edge_tl.fed")
MIN_VAR = 1e-5  # BatchNorm's own eps: a noised running variance is kept at least this


def _weighted_accuracy(metrics: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """The nodes' held-out accuracies weighted by their held-out rows, how many rows, and the
    head's share whose mix has the least log loss over all of them."""
    n = sum(k for k, m in metrics if "accuracy" in m)
    if n == 0:
        return {}
    out = {
        "accuracy": sum(k * float(m["accuracy"]) for k, m in metrics if "accuracy" in m) / n,
        "held_out_rows": n,
    }
    keys = [f"{MIX_LOSS}{i:02d}" for i in range(len(WEIGHT_GRID))]
    with_losses = [(k, m) for k, m in metrics if all(key in m for key in keys)]
    if with_losses:
        rows = sum(k for k, _ in with_losses)
        losses = [sum(k * float(m[key]) for k, m in with_losses) / rows for key in keys]
        out["head_weight"] = weight_of_losses(losses)
    return out


class GuardedFedAvg(FedAvg):
    """Flower's FedAvg, averaging checked deltas into the global weights it keeps."""

    def __init__(
        self,
        s: FedSettings,
        layout: Layout,
        arrays: list[np.ndarray],
        *,
        start_round: int = 0,
        fit_config: dict[str, Any] | None = None,
        on_round: Callable[[int, list[np.ndarray], dict[str, Any]], None] | None = None,
    ) -> None:
        check_arrays(arrays, layout, "initial global model")
        super().__init__(
            fraction_fit=s.fraction,
            fraction_evaluate=s.fraction if s.valid_pct > 0 else 0.0,
            min_fit_clients=s.min_nodes,
            min_evaluate_clients=s.min_nodes,
            min_available_clients=s.min_nodes,
            initial_parameters=ndarrays_to_parameters(arrays),
            on_fit_config_fn=lambda r: {**(fit_config or {}), "round": start_round + r},
            evaluate_metrics_aggregation_fn=_weighted_accuracy,
            accept_failures=True,
        )
        self.settings, self.layout, self.arrays = s, layout, arrays
        self.start_round, self.on_round = start_round, on_round
        self.rejected: list[str] = []  # why updates were left out, for the report
        self.round = start_round
        self.noise_std = 0.0  # DP noise added to the last mean
        self._t0 = time.perf_counter()

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: Any) -> Any:
        """FedAvg's sampling; remembers the round for the reports."""
        self.round = self.start_round + server_round
        self._t0 = time.perf_counter()
        return super().configure_fit(server_round, parameters, client_manager)

    def note(self, why: str) -> None:
        """Record and log why a reply was left out in the current round."""
        self._reject(self.round, why)

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[Any, FitRes]],
        failures: list[Any],
    ) -> tuple[Parameters | None, dict[str, Any]]:
        """Check each delta, average the good ones, add the mean to the global weights."""
        rnd = self.start_round + server_round  # failures: CheckedGrid noted each one
        if self.settings.secagg:
            # SecAgg+ hands every result the same unmasked weighted mean.
            updates = [(self._checked(rnd, r), 1) for r in results[:1]]
        else:
            updates = [(self._checked(rnd, r), r[1].num_examples) for r in results]
        good = [(a, n) for a, n in updates if a is not None]
        if not good or (not self.settings.secagg and len(good) < self.settings.min_nodes):
            self._reject(rnd, f"{len(good)} good update(s); the global model stays as it was")
            return None, {}
        mean = fedavg(good)
        nodes = len(results) if self.settings.secagg else len(good)
        if self.settings.dp_noise > 0:  # central noise on the mean of clipped updates
            self.noise_std = add_noise(mean, self.settings.dp_noise, self.settings.dp_clip, nodes)
        # SecAgg+'s quantization and DP's noise can take a near-zero BatchNorm variance below
        # zero (the model would predict NaN): holding it at BatchNorm's eps is post-processing.
        new = [
            np.maximum(a, MIN_VAR) if k.endswith("running_var") else a
            for k, a in zip(self.layout.keys, add(self.arrays, mean), strict=True)
        ]
        try:
            check_model(new, self.layout, f"round {rnd}: new global model")
        except UpdateError as e:
            self._reject(rnd, f"{e.message}; the global model stays as it was")
            return None, {}
        self.arrays = new
        metrics = {
            "nodes": len(results),
            "rejected": len(updates) - len(good),
            "seconds": round(time.perf_counter() - self._t0, 3),
        }
        if self.on_round is not None:
            self.on_round(rnd, new, metrics)
        return ndarrays_to_parameters(new), metrics

    def _checked(self, rnd: int, result: tuple[Any, FitRes]) -> list[np.ndarray] | None:
        proxy, res = result
        try:
            arrays = parameters_to_ndarrays(res.parameters)
            if self.settings.secagg:  # SecAgg+ dequantizes the sum to float64
                arrays = [a.astype(np.float32) if a.dtype == np.float64 else a for a in arrays]
            check_arrays(arrays, self.layout, f"node {proxy.node_id}", MAX_ABS_DELTA)
        except UpdateError as e:
            self._reject(rnd, e.message)
            return None
        except (ValueError, TypeError, OSError) as e:  # bytes that are no .npy array
            self._reject(rnd, f"node {proxy.node_id}: unreadable update ({type(e).__name__})")
            return None
        return arrays

    def _reject(self, rnd: int, why: str) -> None:
        self.rejected.append(f"round {rnd}: {why}")
        log.warning("round %d: %s", rnd, why)


class CheckedGrid:
    """A Grid whose TRAIN replies are checked before any workflow sums them: a masked SecAgg+
    vector must have the model's shapes (else the node counts as dropped and its masks are
    recovered from its neighbours' shares), a plain update must pass check_arrays."""

    def __init__(self, grid: Any, layout: Layout, reject: Callable[[str], None]) -> None:
        self._grid, self._layout, self._reject = grid, layout, reject
        self._masked = [(1,), *layout.shapes]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Flower's send_and_receive, leaving out the replies that fail the checks."""
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        return [m for m in replies if self._ok(m)]

    def _ok(self, msg: Message) -> bool:
        if msg.has_error():
            self._reject(f"node {msg.metadata.src_node_id}: {msg.error.reason[:500]}")
            return True  # the workflows count errors as failures themselves
        if msg.metadata.message_type != MessageType.TRAIN:
            return True
        try:
            cfg = msg.content.config_records.get(RECORD_KEY_CONFIGS)
            if cfg is not None and Key.MASKED_PARAMETERS in cfg:
                return self._masked_ok(msg, cfg[Key.MASKED_PARAMETERS])
            if cfg is not None and not msg.content.array_records:
                return True  # a SecAgg+ key-exchange or unmask stage: no weights
            fit = compat.recorddict_to_fitres(msg.content, keep_input=True)
            arrays = parameters_to_ndarrays(fit.parameters)
            check_arrays(arrays, self._layout, f"node {msg.metadata.src_node_id}", MAX_ABS_DELTA)
        except UpdateError as e:
            self._reject(f"{e.message}; left out")
            return False
        except (ValueError, TypeError, KeyError, OSError) as e:
            self._reject(f"node {msg.metadata.src_node_id}: malformed reply ({e}); left out")
            return False
        return True

    def _masked_ok(self, msg: Message, blobs: Any) -> bool:
        vec = [bytes_to_ndarray(b) for b in blobs]
        shapes = [tuple(v.shape) for v in vec]
        if shapes != self._masked or any(v.dtype.kind not in "iu" for v in vec):
            self._reject(
                f"node {msg.metadata.src_node_id}: masked update has the wrong arrays; left out"
            )
            return False
        return True


__all__ = ["CheckedGrid", "GuardedFedAvg"]
