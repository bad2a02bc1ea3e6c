"""The TF-IDF head as ONNX nodes appended to an exported classifier graph (docs/onnx-format.md)."""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edge_tl.tfidf_head import STACK_EPS, TfidfHead


def add_to_graph(proto: Any, head: TfidfHead) -> Any:
    """Append the head to an exported v1 graph in place: `probs` becomes `probs_neural`, and
    `probs` the mix: at the head's share (v2), or stacked when the head has a stack (v3)."""

    g = proto.graph
    for node in g.node:
        node.output[:] = ["probs_neural" if o == "probs" else o for o in node.output]
    (out,) = [o for o in g.output if o.name == "probs"]
    out.name = "probs_neural"
    n_class = head.coef.shape[0]
    zero_row = np.zeros((1, n_class), dtype=np.float32)
    consts = {
        "tfidf_idf": np.concatenate([head.idf, [0]]).astype(np.float32),
        "tfidf_coef": np.concatenate([head.coef.T, zero_row]).astype(np.float32),
        "tfidf_intercept": head.intercept.astype(np.float32),
        "tfidf_zero": np.array(0, dtype=np.float32),
        "tfidf_one": np.array(1, dtype=np.float32),
        "tfidf_eps": np.array(1e-12, dtype=np.float32),
        "tfidf_axis1": np.array([1]),
        "tfidf_axis2": np.array([2]),
    }
    if head.stack is None:  # the share's mix; the stacked mix has its own constants
        consts["tfidf_w"] = np.array(head.weight, dtype=np.float32)
        consts["tfidf_1mw"] = np.array(1 - head.weight, dtype=np.float32)
    g.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    g.input.extend(
        [
            helper.make_tensor_value_info("tfidf_ids", TensorProto.INT64, ["batch", "m"]),
            helper.make_tensor_value_info("tfidf_counts", TensorProto.FLOAT, ["batch", "m"]),
        ]
    )
    n = helper.make_node
    tf = "tfidf_counts"
    nodes = []
    if head.sublinear_tf:  # 1 + ln(count) where count > 0; Max keeps Log off zero padding
        nodes += [
            n("Greater", ["tfidf_counts", "tfidf_zero"], ["tf_pos"]),
            n("Max", ["tfidf_counts", "tfidf_one"], ["tf_c1"]),
            n("Log", ["tf_c1"], ["tf_log"]),
            n("Add", ["tf_log", "tfidf_one"], ["tf_sub"]),
            n("Where", ["tf_pos", "tf_sub", "tfidf_zero"], ["tf_sublinear"]),
        ]
        tf = "tf_sublinear"
    nodes += [
        n("Gather", ["tfidf_idf", "tfidf_ids"], ["tf_idf"]),  # (batch, m)
        n("Mul", [tf, "tf_idf"], ["tf_x"]),
        n("Mul", ["tf_x", "tf_x"], ["tf_sq"]),
        n("ReduceSum", ["tf_sq", "tfidf_axis1"], ["tf_ss"], keepdims=1),  # (batch, 1)
        n("Sqrt", ["tf_ss"], ["tf_norm0"]),
        n("Max", ["tf_norm0", "tfidf_eps"], ["tf_norm"]),
        n("Div", ["tf_x", "tf_norm"], ["tf_xn"]),
        n("Unsqueeze", ["tf_xn", "tfidf_axis2"], ["tf_xn3"]),  # (batch, m, 1)
        n("Gather", ["tfidf_coef", "tfidf_ids"], ["tf_w"]),  # (batch, m, n_class)
        n("Mul", ["tf_xn3", "tf_w"], ["tf_contrib"]),
        n("ReduceSum", ["tf_contrib", "tfidf_axis1"], ["tf_z0"], keepdims=0),  # (batch, n_class)
        n("Add", ["tf_z0", "tfidf_intercept"], ["tf_z"]),
        n("Sigmoid", ["tf_z"], ["tf_s"]),
        n("ReduceSum", ["tf_s", "tfidf_axis1"], ["tf_ssum"], keepdims=1),
        n("Div", ["tf_s", "tf_ssum"], ["probs_tfidf"]),
    ]
    nodes += _share_mix() if head.stack is None else _stacked_mix(g, head)
    g.node.extend(nodes)
    for name in ("probs", "probs_tfidf"):
        g.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", n_class]))
    return proto


def _share_mix() -> list[Any]:
    """probs = w x probs_tfidf + (1 - w) x probs_neural."""
    n = helper.make_node
    return [
        n("Mul", ["probs_tfidf", "tfidf_w"], ["tf_mw"]),
        n("Mul", ["probs_neural", "tfidf_1mw"], ["nn_mw"]),
        n("Add", ["tf_mw", "nn_mw"], ["probs"]),
    ]


def _stacked_mix(g: Any, head: TfidfHead) -> list[Any]:
    """probs = softmax([log-odds(probs_neural), log-odds(probs_tfidf)] @ coef^T + intercept),
    each probability clipped to [eps, 1 - eps] first (tfidf_head.Stack.proba computes the same)."""
    assert head.stack is not None
    consts = {
        "stack_lo": np.array(STACK_EPS, dtype=np.float32),
        "stack_hi": np.array(1 - STACK_EPS, dtype=np.float32),
        "stack_coef_t": np.ascontiguousarray(head.stack.coef.T, dtype=np.float32),
        "stack_intercept": head.stack.intercept.astype(np.float32),
    }
    g.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    n = helper.make_node
    nodes = []
    for part in ("neural", "tfidf"):
        p = f"probs_{part}"
        nodes += [
            n("Clip", [p, "stack_lo", "stack_hi"], [f"st_{part}_p"]),
            n("Log", [f"st_{part}_p"], [f"st_{part}_lp"]),
            n("Sub", ["tfidf_one", f"st_{part}_p"], [f"st_{part}_q"]),
            n("Log", [f"st_{part}_q"], [f"st_{part}_lq"]),
            n("Sub", [f"st_{part}_lp", f"st_{part}_lq"], [f"st_{part}_lo"]),
        ]
    return nodes + [
        n("Concat", ["st_neural_lo", "st_tfidf_lo"], ["st_x"], axis=1),  # (batch, 2k)
        n("MatMul", ["st_x", "stack_coef_t"], ["st_z0"]),
        n("Add", ["st_z0", "stack_intercept"], ["st_z"]),
        n("Softmax", ["st_z"], ["probs"], axis=1),
    ]


__all__ = ["add_to_graph"]
