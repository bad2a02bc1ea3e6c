"""bench/bench_train.py: the two arms must have done the same work, and the FLOP count adds up."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from bench_train import NotLikeForLike, check_same_work  # noqa: E402
from flops import clas_flops_per_token, lm_flops_per_token, lstm_macs, phase_gflop  # noqa: E402

from edge_tl.config import ModelConfig  # noqa: E402
from edge_tl.train.config import ULMFIT_RECIPE, TrainConfig  # noqa: E402


def _res(**over: tuple[int, int]) -> dict:
    """Four phases that did the same work, unless `over` gives (epochs, tokens) for one."""
    res = {}
    for ph, (epochs, tokens) in {"lm": (2, 562_176), "clas": (10, 2_468_380)}.items():
        for arm in ("plain", "ours"):
            e, t = over.get(f"{arm}_{ph}", (epochs, tokens))
            res[f"{arm}_{ph}"] = {"epochs": e, "tokens": t}
    return res


def test_the_same_work_passes() -> None:
    check_same_work(_res())
    check_same_work(_res(ours_clas=(10, 2_468_380 + 20_000)))  # under 1 %: batch rounding


@pytest.mark.parametrize(
    ("over", "says"),
    [
        ({"ours_clas": (10, 2_782_920)}, "clas: plain trained on 2,468,380 tokens"),
        ({"plain_clas": (5, 2_468_380)}, "clas: plain ran 5 epochs, edge_tl 10"),
        ({"ours_lm": (1, 562_176)}, "lm: plain ran 2 epochs, edge_tl 1"),
    ],
)
def test_a_different_recipe_stops_the_bench(over: dict, says: str) -> None:
    with pytest.raises(NotLikeForLike, match=says):
        check_same_work(_res(**over))


def test_flop_count_of_the_shipped_shape() -> None:
    cfg = ModelConfig(vocab_size=8, emb_sz=200, n_hid=512, n_layers=3)
    # 4 gates x out x (in + out): 200->512, 512->512, 512->200
    assert lstm_macs(cfg) == [4 * 512 * 712, 4 * 512 * 1024, 4 * 200 * 712]
    lstm = sum(lstm_macs(cfg))
    assert lm_flops_per_token(cfg, 6872, frozen=False) == 6 * (lstm + 200 * 6872)
    assert clas_flops_per_token(cfg, 3) == 6 * lstm  # every layer trains
    assert clas_flops_per_token(cfg, 0) == 2 * lstm  # the head alone: forward only
    flat10 = TrainConfig(arch=cfg)
    assert phase_gflop(flat10, "clas", 6872, 10_000, 10) == pytest.approx(10_000 * 6 * lstm / 1e9)
    ulmfit = TrainConfig(arch=cfg, **ULMFIT_RECIPE)
    # 5 epochs of 1,000 tokens: stage 0 costs less than the all-layers stages
    assert phase_gflop(ulmfit, "clas", 6872, 5_000, 5) < 5_000 * 6 * lstm / 1e9
