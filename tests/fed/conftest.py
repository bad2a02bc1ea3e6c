"""A coordinator's store with the tiny base, and nodes' keyword datasets, for the fed tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import tinydata

import edge_tl.fed  # noqa: E402,F401  (before flwr: switches Flower's telemetry off)

pytest.importorskip("flwr")

CANARY = "zqxcanaryword"  # planted in one node's rows; must never leave it


def node_rows(n: int, seed: int, canary: bool = False) -> tuple[list[str], list[str]]:
    """Keyword texts; with `canary`, every text also holds CANARY (a word no base knows)."""
    texts, labels = tinydata.keyword_texts(n, seed)
    if canary:
        texts = [f"{t} {CANARY}" for t in texts]
    return texts, labels


def make_store(tmp: Path, datasets: dict[str, tuple[list[str], list[str]]]) -> None:
    """Identity, the tiny base `tiny` and `datasets` in the store EDGE_TL_HOME points at."""
    from edge_tl.bases.store import import_base
    from edge_tl.store import keys
    from edge_tl.store.datasets import save_dataset

    keys.init_identity(None)
    bundle = tmp / "tiny.etlb"
    if not bundle.exists():
        tinydata.tiny_base(bundle, "tiny")
    import_base(bundle, allow_unsigned=True)
    for name, (texts, labels) in datasets.items():
        save_dataset(name, texts, labels)


@pytest.fixture
def fed_store(tmp_path: Path, edge_tl_home: Path) -> Path:
    """Three nodes' datasets a, b (holding the canary) and c, 80 rows each."""
    make_store(
        tmp_path,
        {
            "a": node_rows(80, 1),
            "b": node_rows(80, 2, canary=True),
            "c": node_rows(80, 3),
        },
    )
    return edge_tl_home


def tiny_settings(**kw: object) -> object:
    """FedSettings for the tiny base: short texts, a small head, a high rate, no evaluation."""
    from edge_tl.fed import FedSettings

    base = dict(
        out="fedm",
        data="a,b,c",
        labels="neg,pos",
        base="tiny",
        rounds=3,
        local_epochs=3,
        lr=2e-2,
        bs=8,
        bptt=8,
        max_len=32,
        lin_ftrs=8,
        valid_pct=0.0,
        lm_rounds=0,
    )
    base.update(kw)
    return FedSettings(**base)  # type: ignore[arg-type]


def held_out_accuracy(name: str) -> float:
    """Accuracy of stored model `name` on fresh keyword texts."""
    from edge_tl.store.models import load_model
    from edge_tl.train.evaluate import evaluate_texts

    texts, labels = tinydata.keyword_texts(60, 99)
    return float(evaluate_texts(load_model(name), texts, labels)["accuracy"])
