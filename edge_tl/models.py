"""Trained classifiers: the in-memory form (and, later, the encrypted store under models/)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import ModelConfig


@dataclass
class TrainedModel:
    """A trained AWD-LSTM classifier with everything needed to rebuild, evaluate and export it."""

    name: str
    model_cfg: ModelConfig
    vocab: list[str]  # token id -> token (fastai vocab of the fine-tuned model)
    labels: list[str]  # class index -> label name
    state_dict: dict[str, Any]  # fastai layout of build_classifier(model_cfg, len(labels), lin_ftrs)
    lin_ftrs: list[int] = field(default_factory=lambda: [50])
    train_config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    base: str | None = None  # name of the base it was fine-tuned from; None when from scratch
    base_sha256: str | None = None
    dataset_fingerprint: str | None = None
    created: str = ""
