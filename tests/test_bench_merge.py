"""bench/merge_compare.py: folders of one comparison join; anything else is refused."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from merge_compare import merge_docs  # noqa: E402

from edge_tl.errors import ConfigError  # noqa: E402


def _rec(arm: str, size: int, seed: int, acc: float) -> dict[str, Any]:
    return {
        "arm": arm,
        "protocol": "semi" if arm == "transfer" else "none",
        "size": size,
        "seed": seed,
        "accuracy": acc,
    }


def _doc(runs: list[dict[str, Any]], setup: dict[str, Any] | None = None, **extra: Any):
    return {
        "setup": setup or {"data": "d", "test_rows": 10},
        "updated": "2026-11-27T00:00:00Z",
        "plan": {"sizes": [1], "seeds": [0], "arms": ["tfidf"], "protocols": ["semi"]},
        "runs": {f"{r['arm']}/{r['protocol']}/{r['size']}/{r['seed']}": r for r in runs},
        **extra,
    }


def test_units_join_and_the_plan_covers_them() -> None:
    a = _doc([_rec("tfidf", 500, 0, 0.8)])
    b = _doc([_rec("transfer", 1000, 2, 0.85), _rec("tfidf", 500, 0, 0.8)], semi_lm={"s": 1})
    doc = merge_docs([(Path("a"), a), (Path("b"), b)])
    assert doc["semi_lm"] == {"s": 1}  # the folder that trained the LM leads
    assert sorted(doc["runs"]) == ["tfidf/none/500/0", "transfer/semi/1000/2"]
    p = doc["plan"]
    assert (p["sizes"], p["seeds"], p["arms"], p["protocols"]) == (
        [500, 1000],
        [0, 2],
        ["tfidf", "transfer"],
        ["semi"],
    )


def test_other_setups_are_refused() -> None:
    a = _doc([_rec("tfidf", 500, 0, 0.8)])
    b = _doc([_rec("tfidf", 1000, 0, 0.8)], setup={"data": "d", "test_rows": 20})
    with pytest.raises(ConfigError, match="another test_rows"):
        merge_docs([(Path("a"), a), (Path("b"), b)])


def test_a_unit_that_differs_between_folders_is_refused() -> None:
    a = _doc([_rec("tfidf", 500, 0, 0.8)])
    b = _doc([_rec("tfidf", 500, 0, 0.9)])
    with pytest.raises(SystemExit, match="tfidf/none/500/0 differs"):
        merge_docs([(Path("a"), a), (Path("b"), b)])
