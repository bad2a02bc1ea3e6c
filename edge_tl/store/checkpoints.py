"""Encrypted, atomic training checkpoints (runs/<name>.ckpt) and RNG capture for --resume.

Format: docs/model-format.md ("edge_tl/checkpoint v1"). A checkpoint holds the model and
optimizer state, the run's TrainConfig, its position and the RNG states, never raw text."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_tl.errors import ModelError, StoreError
from edge_tl.store.files import atomic_write, remove_stale_parts
from edge_tl.store.home import subdir
from edge_tl.store.keys import decrypt_on_device, encrypt_for_device
from edge_tl.store.models import (
    check_name,
    pack_container,
    tensors_from_bytes,
    tensors_to_bytes,
    unpack_container,
)

CKPT_MAGIC = b"edge_tl/checkpoint v1\n"
SUFFIX = ".ckpt"
HEADER_KEYS = {
    "format",
    "version",
    "tensors_sha256",
    "name",
    "data",
    "base",
    "lm_data",
    "dataset_fingerprint",
    "train_config",
    "position",
    "vocab",
    "labels",
    "rng_epoch_start",
    "rng_now",
    "opt",
    "extra",
}


@dataclass
class Position:
    """The next batch a run will execute: phase ("lm" | "clas"), stage, epoch, batch."""

    phase: str = "lm"
    stage: int = 0
    epoch: int = 0
    batch: int = 0

    def key(self) -> tuple[int, int, int, int]:
        """Sortable form (lm before clas)."""
        return (0 if self.phase == "lm" else 1, self.stage, self.epoch, self.batch)


@dataclass
class Checkpoint:
    """Everything needed to continue a run exactly where it stopped."""

    name: str
    data: str | None
    base: str | None
    lm_data: list[str]
    dataset_fingerprint: str | None
    train_config: dict[str, Any]
    position: Position
    vocab: list[str]
    labels: list[str]
    model_state: dict[str, Any]
    opt_state: dict[str, Any] | None = None  # fastai Optimizer.state_dict()
    rng_epoch_start: dict[str, Any] = field(default_factory=dict)
    rng_now: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def capture_rng() -> dict[str, Any]:
    """Python, numpy and torch CPU RNG states (torch's as raw bytes)."""
    import numpy as np
    import torch

    ver, state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [ver, list(state), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state().numpy().tobytes(),
    }


def restore_rng(rng: dict[str, Any]) -> None:
    """Inverse of capture_rng."""
    import numpy as np
    import torch

    ver, state, gauss = rng["python"]
    random.setstate((ver, tuple(state), gauss))
    kind, keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.frombuffer(bytearray(rng["torch"]), dtype=torch.uint8).clone())


def _split_rng(rng: dict[str, Any], tag: str, tensors: dict[str, Any]) -> dict[str, Any]:
    import torch

    if not rng:
        return {}
    tensors[f"rng.torch_{tag}"] = torch.frombuffer(bytearray(rng["torch"]), dtype=torch.uint8)
    out = {k: v for k, v in rng.items() if k not in ("torch", "hidden")}
    if rng.get("hidden") is not None:  # the LM's LSTM state, carried from batch to batch
        for i, (h, c) in enumerate(rng["hidden"]):
            tensors[f"rng.hidden_{tag}.{i}.h"], tensors[f"rng.hidden_{tag}.{i}.c"] = h, c
        out["hidden_layers"] = len(rng["hidden"])
    return out


def _join_rng(h: dict[str, Any], tag: str, tensors: dict[str, Any]) -> dict[str, Any]:
    if not h:
        return {}
    t = tensors.get(f"rng.torch_{tag}")
    if t is None:
        raise ModelError(f"checkpoint: torch RNG state {tag!r} is missing")
    out = {k: v for k, v in h.items() if k != "hidden_layers"}
    out["torch"] = t.numpy().tobytes()
    n = h.get("hidden_layers")
    if n is not None:
        keys = [(f"rng.hidden_{tag}.{i}.h", f"rng.hidden_{tag}.{i}.c") for i in range(n)]
        if not isinstance(n, int) or any(k not in tensors for pair in keys for k in pair):
            raise ModelError(f"checkpoint: LSTM state {tag!r} is incomplete")
        out["hidden"] = [(tensors[a], tensors[b]) for a, b in keys]
    return out


def _split_opt(opt: dict[str, Any] | None, tensors: dict[str, Any]) -> dict[str, Any] | None:
    """fastai's {'state': [per-param dict], 'hypers': [...]} -> JSON part + tensors."""
    import torch

    if opt is None:
        return None
    states = []
    for i, st in enumerate(opt["state"]):
        plain = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"opt.{i}.{k}"] = v
            else:
                plain[k] = v
        states.append(plain)
    hypers = [
        {k: float(v) if not isinstance(v, bool) else v for k, v in h.items()} for h in opt["hypers"]
    ]
    return {"state": states, "hypers": hypers}


def _join_opt(h: dict[str, Any] | None, tensors: dict[str, Any]) -> dict[str, Any] | None:
    if h is None:
        return None
    states = []
    for i, plain in enumerate(h["state"]):
        st = dict(plain)
        prefix = f"opt.{i}."
        for k, v in tensors.items():
            if k.startswith(prefix):
                st[k[len(prefix) :]] = v
        states.append(st)
    return {"state": states, "hypers": h["hypers"]}


def checkpoint_to_bytes(c: Checkpoint) -> bytes:
    """Plaintext container of a checkpoint (encrypt it before it touches disk)."""
    tensors: dict[str, Any] = {f"model.{k}": v for k, v in c.model_state.items()}
    opt = _split_opt(c.opt_state, tensors)
    rng_start = _split_rng(c.rng_epoch_start, "epoch_start", tensors)
    rng_now = _split_rng(c.rng_now, "now", tensors)
    body = tensors_to_bytes(tensors)
    header = {
        "format": "edge_tl/checkpoint",
        "version": 1,
        "tensors_sha256": hashlib.sha256(body).hexdigest(),
        "name": c.name,
        "data": c.data,
        "base": c.base,
        "lm_data": list(c.lm_data),
        "dataset_fingerprint": c.dataset_fingerprint,
        "train_config": c.train_config,
        "position": vars(c.position),
        "vocab": c.vocab,
        "labels": c.labels,
        "rng_epoch_start": rng_start,
        "rng_now": rng_now,
        "opt": opt,
        "extra": c.extra,
    }
    return pack_container(CKPT_MAGIC, header, body)


def checkpoint_from_bytes(data: bytes, what: str) -> Checkpoint:
    """Parse a decrypted checkpoint container; ModelError on any defect."""
    h, body = unpack_container(CKPT_MAGIC, data, what)
    if set(h) != HEADER_KEYS:
        key = sorted(set(h) ^ HEADER_KEYS)[0]
        raise ModelError(f"{what}: header key {key!r} is missing or unknown")
    tensors = tensors_from_bytes(body, what)
    pos = h["position"]
    try:
        position = Position(**pos)
    except TypeError as e:
        raise ModelError(f"{what}: bad position {pos!r}") from e
    if position.phase not in ("lm", "clas"):
        raise ModelError(f"{what}: bad phase {position.phase!r}")
    return Checkpoint(
        name=h["name"],
        data=h["data"],
        base=h["base"],
        lm_data=list(h["lm_data"]),
        dataset_fingerprint=h["dataset_fingerprint"],
        train_config=h["train_config"],
        position=position,
        vocab=h["vocab"],
        labels=h["labels"],
        model_state={k[6:]: v for k, v in tensors.items() if k.startswith("model.")},
        opt_state=_join_opt(h["opt"], tensors),
        rng_epoch_start=_join_rng(h["rng_epoch_start"], "epoch_start", tensors),
        rng_now=_join_rng(h["rng_now"], "now", tensors),
        extra=h["extra"],
    )


def checkpoint_path(name: str) -> Path:
    """Where the checkpoint of the run that will save model `name` lives."""
    return subdir("runs") / f"{check_name(name)}{SUFFIX}"


def save_checkpoint(c: Checkpoint) -> Path:
    """Encrypt and atomically replace runs/<name>.ckpt."""

    path = checkpoint_path(c.name)
    remove_stale_parts(path.parent)
    atomic_write(path, encrypt_for_device(checkpoint_to_bytes(c)))
    return path


def load_checkpoint(name: str) -> Checkpoint:
    """Decrypt and parse the checkpoint of model `name` (StoreError if there is none)."""

    path = checkpoint_path(name)
    if not path.is_file():
        raise StoreError(
            f"no checkpoint to resume for model {name!r}",
            "start the run without --resume (checkpoints are removed once a model is saved)",
        )
    what = f"checkpoint {name}"
    c = checkpoint_from_bytes(decrypt_on_device(path.read_bytes(), what), what)
    if c.name != name:
        raise ModelError(f"{what}: the file belongs to run {c.name!r} (renamed or swapped)")
    return c


def remove_checkpoint(name: str) -> None:
    """Delete the checkpoint of `name` if there is one."""
    checkpoint_path(name).unlink(missing_ok=True)
