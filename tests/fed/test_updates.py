"""Malformed, wrong-shaped or non-finite updates never reach the global model; checkpoints
are encrypted and refuse other settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import make_store, tiny_settings
from flwr.common import (
    Code,
    ConfigRecord,
    FitRes,
    Message,
    MessageType,
    RecordDict,
    Status,
    ndarray_to_bytes,
    ndarrays_to_parameters,
)
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

from edge_tl.errors import ModelError
from edge_tl.fed.weights import Layout, UpdateError, check_arrays

LAYOUT = Layout(("w", "b"), ((3, 2), (2,)))


def arrays(value: float = 0.1) -> list[np.ndarray]:
    return [np.full((3, 2), value, np.float32), np.full((2,), value, np.float32)]


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (arrays()[:1], "1 arrays, expected 2"),
        ([np.zeros((2, 3), np.float32), arrays()[1]], "w has shape (2, 3), expected (3, 2)"),
        ([arrays()[0].astype(np.float64), arrays()[1]], "w is float64, expected float32"),
        ([arrays()[0], np.array([np.nan, 0], np.float32)], "b holds NaN or infinite values"),
        ([arrays()[0], np.array([np.inf, 0], np.float32)], "b holds NaN or infinite values"),
        ([arrays()[0], np.array([9.0, 0], np.float32)], "b moves a weight by more than 8.0"),
        ("not arrays", "str arrays, expected 2"),
    ],
)
def test_check_arrays_refuses(bad: Any, why: str) -> None:
    with pytest.raises(UpdateError) as e:
        check_arrays(bad, LAYOUT, "node 7", max_abs=8.0)
    assert e.value.message == f"node 7: {why}"


class Proxy:
    def __init__(self, node_id: int) -> None:
        self.node_id = node_id


def fit(values: list[np.ndarray], n: int = 10) -> FitRes:
    return FitRes(Status(Code.OK, ""), ndarrays_to_parameters(values), n, {})


def test_fedavg_averages_good_deltas_and_leaves_out_bad_ones() -> None:
    from edge_tl.fed.strategy import GuardedFedAvg

    s = tiny_settings(secagg=False, min_nodes=2)
    saved: list[int] = []
    strat = GuardedFedAvg(s, LAYOUT, arrays(1.0), on_round=lambda r, a, m: saved.append(r))
    wrong = [np.zeros((2, 3), np.float32), np.zeros(2, np.float32)]
    nan = [arrays()[0], np.array([np.nan, 1], np.float32)]
    results = [
        (Proxy(1), fit(arrays(0.1), 10)),
        (Proxy(2), fit(arrays(0.4), 30)),
        (Proxy(3), fit(wrong, 1000)),
        (Proxy(4), fit(nan, 1000)),
    ]
    params, metrics = strat.aggregate_fit(1, results, [])
    assert params is not None and metrics.pop("seconds") >= 0
    assert metrics == {"nodes": 4, "rejected": 2}
    np.testing.assert_allclose(strat.arrays[0], 1.0 + (0.1 * 10 + 0.4 * 30) / 40, rtol=1e-6)
    assert saved == [1]
    assert strat.rejected == [
        "round 1: node 3: w has shape (2, 3), expected (3, 2)",
        "round 1: node 4: b holds NaN or infinite values",
    ]

    before = [a.copy() for a in strat.arrays]
    params, _ = strat.aggregate_fit(2, [(Proxy(1), fit(arrays(0.1))), (Proxy(3), fit(wrong))], [])
    assert params is None  # one good update is fewer than min_nodes: nothing changes
    for a, b in zip(strat.arrays, before, strict=True):
        np.testing.assert_array_equal(a, b)
    assert saved == [1]

    garbage = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays()), 5, {})
    garbage.parameters.tensors[0] = b"\x93NUMPY not really"
    params, _ = strat.aggregate_fit(3, [(Proxy(1), fit(arrays())), (Proxy(5), garbage)], [])
    assert params is None and strat.rejected[-2].startswith("round 3: node 5: unreadable")


def test_a_variance_pushed_below_zero_is_held_at_batchnorms_eps() -> None:
    """SecAgg+'s quantized mean once took a variance of ~0 below zero: the round still counts."""
    from edge_tl.fed.strategy import MIN_VAR, GuardedFedAvg

    layout = Layout(("1.layers.0.running_var", "1.layers.0.weight"), ((2,), (2,)))
    start = [np.array([2e-6, 1.0], np.float32), np.array([0.5, 0.5], np.float32)]
    strat = GuardedFedAvg(tiny_settings(secagg=False, min_nodes=2), layout, start)
    down = [np.array([-4e-6, -0.5], np.float32), np.array([0.1, 0.1], np.float32)]
    params, _ = strat.aggregate_fit(1, [(Proxy(1), fit(down)), (Proxy(2), fit(down))], [])
    assert params is not None and strat.rejected == []
    np.testing.assert_allclose(strat.arrays[0], [MIN_VAR, 0.5])
    np.testing.assert_allclose(strat.arrays[1], [0.6, 0.6])


def test_the_heads_share_is_the_least_log_loss_over_all_nodes_rows() -> None:
    from edge_tl.fed.head import MIX_LOSS
    from edge_tl.fed.strategy import _weighted_accuracy

    def node(acc: float, best: int, depth: float) -> dict[str, float]:
        losses = {f"{MIX_LOSS}{i:02d}": 1.0 for i in range(21)}
        losses[f"{MIX_LOSS}{best:02d}"] = 1.0 - depth
        return {"accuracy": acc, **losses}

    # node 1 (30 rows) prefers 0.2 a little, node 2 (10 rows) prefers 0.9 strongly:
    # 30 * 0.1 < 10 * 0.5, so the pooled loss is least at 0.9
    out = _weighted_accuracy([(30, node(0.8, 4, 0.1)), (10, node(0.6, 18, 0.5))])
    assert out == {"accuracy": pytest.approx(0.75), "held_out_rows": 40, "head_weight": 0.9}
    out = _weighted_accuracy([(30, node(0.8, 4, 0.3)), (10, node(0.6, 18, 0.5))])
    assert out["head_weight"] == 0.2
    assert "head_weight" not in _weighted_accuracy([(30, {"accuracy": 0.8})])


class FakeGrid:
    def __init__(self, replies: list[Message]) -> None:
        self.replies = replies

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
        return self.replies


def masked_reply(node: int, shapes: list[tuple[int, ...]]) -> Message:
    vec = [ndarray_to_bytes(np.zeros(s, np.int64)) for s in shapes]
    cfg = ConfigRecord({Key.MASKED_PARAMETERS: vec})
    ins = Message(RecordDict(), dst_node_id=node, message_type=MessageType.TRAIN)
    out = Message(RecordDict({RECORD_KEY_CONFIGS: cfg}), reply_to=ins)
    out.metadata.__dict__["_src_node_id"] = node
    return out


def test_checked_grid_drops_wrong_shaped_masked_vectors(monkeypatch: pytest.MonkeyPatch) -> None:
    """A masked SecAgg+ vector with other shapes is left out before Flower sums it (the node
    then counts as dropped and its masks are recovered from its neighbours' shares)."""
    from flwr.supercore.task_identity import TaskIdentity

    from edge_tl.fed.strategy import CheckedGrid

    for attr in ("_task_id", "_run_id", "_node_id"):  # what a running ServerApp has set
        monkeypatch.setattr(TaskIdentity, attr, 1)

    notes: list[str] = []
    good = masked_reply(1, [(1,), (3, 2), (2,)])
    bad = masked_reply(2, [(1,), (2, 3), (2,)])
    short = masked_reply(3, [(1,), (3, 2)])
    grid = CheckedGrid(FakeGrid([good, bad, short]), LAYOUT, notes.append)
    assert grid.send_and_receive([]) == [good]
    assert len(notes) == 2 and all("masked update has the wrong arrays" in n for n in notes)


def test_checkpoint_is_encrypted_and_bound_to_its_settings(tmp_path: Path) -> None:
    from edge_tl.fed.checkpoint import RoundCheckpoint, checkpoint_path, load_round, save_round

    make_store(tmp_path, {})
    s = tiny_settings()
    save_round(s, LAYOUT, RoundCheckpoint(2, arrays(0.5), [{"round": 2}]))
    raw = checkpoint_path("fedm").read_bytes()
    assert raw.startswith(b"age-encryption.org/v1")
    ck = load_round(tiny_settings(rounds=9), LAYOUT)  # more rounds: the same federation
    assert ck is not None and ck.round == 2 and ck.history == [{"round": 2}]
    np.testing.assert_array_equal(ck.arrays[1], arrays(0.5)[1])
    with pytest.raises(ModelError, match="made with other settings"):
        load_round(tiny_settings(lr=0.5), LAYOUT)
    with pytest.raises(ModelError, match="not this model's"):
        load_round(s, Layout(("w",), ((3, 2),)))
    checkpoint_path("fedm").write_bytes(raw[:-30] + bytes(30))
    with pytest.raises(Exception, match="cannot decrypt|corrupted|tampered"):
        load_round(s, LAYOUT)


def test_a_node_refuses_a_plain_training_request_unless_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flwr.common import Context
    from flwr.supercore.task_identity import TaskIdentity

    from edge_tl.errors import ConfigError
    from edge_tl.fed.client import secagg_guard

    for attr in ("_task_id", "_run_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, attr, 1)
    msg = Message(RecordDict(), dst_node_id=1, message_type=MessageType.TRAIN)

    def ctx(node_config: dict[str, Any]) -> Context:
        return Context(1, 1, node_config, RecordDict(), {})

    def trained(_m: Any, _c: Any) -> str:
        return "trained"

    with pytest.raises(ConfigError, match="without SecAgg\\+, which this node refuses"):
        secagg_guard()(msg, ctx({}), trained)
    assert secagg_guard()(msg, ctx({"require-secagg": False}), trained) == "trained"
    assert secagg_guard(default_required=False)(msg, ctx({}), trained) == "trained"
    query = Message(RecordDict(), dst_node_id=1, message_type=MessageType.EVALUATE)
    assert secagg_guard()(query, ctx({}), trained) == "trained"


def test_a_negative_batchnorm_variance_is_no_model() -> None:
    """A mean of clipped, quantized deltas can take a variance below zero: refused, since the
    model would predict NaN."""
    from edge_tl.fed.weights import Layout, UpdateError, check_model

    layout = Layout(("1.layers.0.running_var", "1.layers.0.weight"), ((2,), (2,)))
    ok = [np.array([0.0, 1.0], np.float32), np.array([-3.0, 1.0], np.float32)]
    check_model(ok, layout, "m")  # a negative weight is fine, a zero variance too
    with pytest.raises(UpdateError, match="negative variance"):
        check_model([np.array([-1e-4, 1.0], np.float32), ok[1]], layout, "m")
