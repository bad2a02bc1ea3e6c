"""bench/levers_table.py: what `train` ships, for units measured before and since the stacked
mix shipped."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import levers_table  # noqa: E402


def _unit(size: int, valid_rows: int, stacked: float | None, **metrics) -> dict:
    lv = {"stacked": stacked, "fixed_0.5": 0.5}
    short = {"accuracy": 0.6, "stacked": None if stacked is None else 0.75}
    m = {"valid_rows": valid_rows, "levers": lv, "short": short, "test_sweep": {"0.50": 0.5}}
    m.update(metrics)
    cfg = {"tfidf_weight_min_rows": 100}
    return {"arm": "train", "size": size, "seed": 0, "accuracy": 0.7, "metrics": m, "config": cfg}


def test_train_rule_applies_to_units_from_before_the_stack() -> None:
    runs = {
        "a": _unit(500, 50, 0.9),  # 50 held-out rows: train mixes at the share
        "b": _unit(1000, 100, 0.8),  # 100 rows: train stacks
        "c": _unit(2000, 200, None),  # a label missing from the rows: no stack
    }
    t = levers_table.table({"runs": runs})
    ships, share = t[levers_table.ROWS[2][0]], t[levers_table.ROWS[3][0]]
    assert ships == {500: [0.7], 1000: [0.8], 2000: [0.7]}
    assert share == {500: [0.7], 1000: [0.7], 2000: [0.7]}
    short = t["two sentences: what `train` ships"]
    assert short == {500: [0.6], 1000: [0.75], 2000: [0.6]}


def test_units_since_the_stack_record_both_mixes() -> None:
    u = _unit(1000, 100, 0.8, tfidf_mix="stacked")
    u["metrics"]["levers"]["share"] = 0.65
    u["metrics"]["short"]["share"] = 0.55
    t = levers_table.table({"runs": {"a": u}})
    assert t[levers_table.ROWS[2][0]] == {1000: [0.7]}  # the recorded accuracy is what shipped
    assert t[levers_table.ROWS[3][0]] == {1000: [0.65]}
    assert t["two sentences: the share's mix"] == {1000: [0.55]}


def test_forward_backward_units_carry_the_forward_network_alone() -> None:
    u = _unit(1000, 100, 0.8, tfidf_mix="stacked")
    u["metrics"]["levers"]["share"] = 0.65
    u["metrics"]["short"]["share"] = 0.55
    full, short = {"network_accuracy": 0.61, "accuracy": 0.66}, {"network_accuracy": 0.51}
    u["metrics"]["forward_only"] = {"tfidf_mix": "stacked", "full": full, "short": short}
    t = levers_table.table({"runs": {"a": u, "b": _unit(500, 50, 0.9)}})
    assert t["forward + backward: the forward network alone"] == {1000: [0.61]}
    assert t["forward + backward: the forward network with its own mix"] == {1000: [0.66]}
    assert t["two sentences: the forward network alone"] == {1000: [0.51]}
    assert t["two sentences: the forward network with its own mix"] == {}  # not recorded
