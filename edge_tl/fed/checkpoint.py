"""The coordinator's round checkpoint (runs/<out>.fedckpt): the global weights after each
round, age-encrypted for the coordinator, written atomically, so a restarted coordinator
continues where it stopped. Layout: the model container's (magic, JSON header, safetensors)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_tl.errors import ModelError
from edge_tl.fed.settings import FedSettings
from edge_tl.fed.weights import Layout, UpdateError, check_arrays
from edge_tl.store.files import atomic_write
from edge_tl.store.home import subdir
from edge_tl.store.keys import decrypt_on_device, encrypt_for_device
from edge_tl.store.models import (
    pack_container,
    tensors_from_bytes,
    tensors_to_bytes,
    unpack_container,
)

MAGIC = b"edge_tl/fedckpt v1\n"
SUFFIX = ".fedckpt"
# Settings a resumed run may change: how many rounds, and how long SecAgg+ waits.
MAY_CHANGE = ("rounds", "secagg_timeout", "min_nodes", "fraction")


@dataclass
class RoundCheckpoint:
    """The global weights after `round` completed rounds, and what the rounds reported."""

    round: int
    arrays: list[np.ndarray]
    history: list[dict[str, Any]]


def checkpoint_path(out: str) -> Path:
    """Where the federation building model `out` keeps its round checkpoint."""
    return subdir("runs") / f"{out}{SUFFIX}"


def settings_digest(s: FedSettings) -> str:
    """What must not change between a checkpoint and the run resuming it."""
    d = {k: v for k, v in s.to_run_config().items() if k not in MAY_CHANGE}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def save_round(s: FedSettings, layout: Layout, ck: RoundCheckpoint) -> Path:
    """Encrypt and atomically replace the checkpoint of `s.out`."""
    import torch

    tensors = {k: torch.from_numpy(a) for k, a in zip(layout.keys, ck.arrays, strict=True)}
    body = tensors_to_bytes(tensors)
    header = {
        "format": "edge_tl/fedckpt",
        "version": 1,
        "tensors_sha256": hashlib.sha256(body).hexdigest(),
        "out": s.out,
        "settings_sha256": settings_digest(s),
        "round": ck.round,
        "history": ck.history,
    }
    path = checkpoint_path(s.out)
    atomic_write(path, encrypt_for_device(pack_container(MAGIC, header, body)))
    return path


def load_round(s: FedSettings, layout: Layout) -> RoundCheckpoint | None:
    """The checkpoint of `s.out` if there is one (ModelError if it is for other settings)."""
    path = checkpoint_path(s.out)
    if not path.is_file():
        return None
    what = f"federation checkpoint {path.name}"
    h, body = unpack_container(MAGIC, decrypt_on_device(path.read_bytes(), what), what)
    redo = f"remove {path} to start the federation over"
    if h.get("out") != s.out or h.get("settings_sha256") != settings_digest(s):
        raise ModelError(f"{what} was made with other settings", redo)
    rnd, history = h.get("round"), h.get("history")
    if type(rnd) is not int or rnd < 0 or not isinstance(history, list):
        raise ModelError(f"{what}: round or history is malformed", redo)
    tensors = tensors_from_bytes(body, what)
    if set(tensors) != set(layout.keys):
        raise ModelError(f"{what}: its weights are not this model's", redo)
    arrays = [tensors[k].numpy() for k in layout.keys]
    try:
        check_arrays(arrays, layout, what)
    except UpdateError as e:
        raise ModelError(e.message, redo) from e
    return RoundCheckpoint(rnd, arrays, history)


def remove_round(out: str) -> None:
    """Drop the checkpoint once the model is stored."""
    checkpoint_path(out).unlink(missing_ok=True)


__all__ = ["RoundCheckpoint", "checkpoint_path", "load_round", "remove_round", "save_round"]
