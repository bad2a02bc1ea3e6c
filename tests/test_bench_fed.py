"""bench/bench_fed.py: a one-node arm must train every row as often as the federation does."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import pytest

pytest.importorskip("flwr")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from bench_fed import NotLikeForLike, arm_settings, check_same_work  # noqa: E402


def _args(**kw: object) -> argparse.Namespace:
    base = dict(
        rounds=3, local_epochs=2, lm_rounds=2, lm_epochs=1, lr=2e-3, bs=32, max_len=144,
        valid_pct=0.1, dp_noise=1.0, dp_clip=1.0,
    )  # fmt: skip
    base.update(kw)
    return argparse.Namespace(**base)


@pytest.mark.parametrize("lm_rounds", [0, 2])
def test_one_node_arms_run_the_federations_epochs_in_one_round(lm_rounds: int) -> None:
    a = _args(lm_rounds=lm_rounds)
    fed = arm_settings("fed-iid", ["n0", "n1", "n2"], a, 1)
    for arm in ("alone", "pooled"):
        one = arm_settings(arm, ["n0"], a, 1)
        assert (one.rounds, one.local_epochs, one.secagg) == (1, 6, False)
        assert (one.lm_rounds, one.lm_epochs) == ((1, 2) if lm_rounds else (0, 1))
        check_same_work(fed, one)
    assert (fed.rounds, fed.local_epochs, fed.lm_rounds, fed.secagg) == (3, 2, lm_rounds, True)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"local_epochs": 5}, "classifier epochs"),
        ({"lm_epochs": 3}, "LM epochs"),
        ({"lr": 1e-3}, "'lr'"),
        ({"max_len": 72}, "'max_len'"),
        ({"head": False}, "'head'"),
    ],
)
def test_an_arm_that_does_other_work_stops_the_bench(change: dict, why: str) -> None:
    a = _args()
    fed = arm_settings("fed-iid", ["n0", "n1"], a, 0)
    one = dataclasses.replace(arm_settings("alone", ["n0"], a, 0), **change)
    with pytest.raises(NotLikeForLike, match=why):
        check_same_work(fed, one)
