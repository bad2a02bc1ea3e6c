"""edge_tl: offline, privacy-first ULMFiT transfer learning for text classification on edge devices.

The names below are loaded lazily, so `import edge_tl` (and `edge-tl predict`) never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "EdgeTLError": "errors",
    "ModelConfig": "config",
    "detect": "device",
    "load_profile": "profiles",
    "plan": "planner",
    "init_identity": "keys",
    "import_source": "data",
    "open_dataset": "data",
    "save_dataset": "data",
    "stratified_nested_subsets": "data",
    "import_base": "bases",
    "load_base": "bases",
    "pack_bundle": "bundle",
    "TrainConfig": "train",
    "train_from_vault": "train",
    "finetune_lm": "train",
    "train_classifier": "train",
    "evaluate_texts": "evaluate",
    "load_model": "models",
    "export_onnx": "export",
    "Classifier": "predict",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'edge_tl' has no attribute {name!r}")
