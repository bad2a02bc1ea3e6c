"""edge_tl: offline, privacy-first ULMFiT transfer learning for text classification on edge devices.

The names below are loaded lazily, so `import edge_tl` (and `edge-tl predict`) never imports
torch; the training names (finetune_lm, train_classifier, train_from_vault, evaluate_texts,
export_onnx) import it when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "EdgeTLError": "errors",
    "ModelConfig": "config",
    "detect": "hardware.device",
    "load_profile": "hardware.profiles",
    "plan": "hardware.planner",
    "init_identity": "store.keys",
    "import_source": "store.datasets",
    "open_dataset": "store.datasets",
    "save_dataset": "store.datasets",
    "stratified_nested_subsets": "store.datasets",
    "import_base": "bases.store",
    "load_base": "bases.store",
    "pack_bundle": "bases.bundle",
    "TrainConfig": "train.config",
    "train_from_vault": "train.runner",
    "finetune_lm": "train.recipe",
    "train_classifier": "train.recipe",
    "evaluate_texts": "train.evaluate",
    "load_model": "store.models",
    "export_onnx": "deploy.export",
    "Classifier": "deploy.predict",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'edge_tl' has no attribute {name!r}")
