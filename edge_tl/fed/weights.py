"""The federated model's weights: the shared starting point, the arrays that travel, and the
checks every update passes before it may touch the global model."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_tl.awd_lstm import build_classifier
from edge_tl.config import CLAS_DROPOUTS, ModelConfig
from edge_tl.errors import EdgeTLError
from edge_tl.fed import head as fed_head
from edge_tl.fed.settings import FedSettings

# The embedding's tied copy: set from `encoder.weight`, never sent twice.
TIED = "0.module.encoder_dp.emb.weight"
TIED_SOURCE = "0.module.encoder.weight"
EMBEDDING = TIED_SOURCE
LM_BIAS = "lm.decoder.bias"  # the language model's output bias (its weight is the embedding)
BASE_LM_BIAS = "1.decoder.bias"  # the same in the base's LM state
# SecAgg+'s clipping range: a node clips its delta to it (BatchNorm's running variance can
# jump further in one round), the coordinator refuses anything beyond it.
MAX_ABS_DELTA = 8.0


class UpdateError(EdgeTLError):
    """A node's update or an aggregate has the wrong arrays, shapes, dtypes or values."""


@dataclass(frozen=True)
class Layout:
    """Which state-dict entries travel, in order, with their shapes (float32 only)."""

    keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    def n_values(self) -> int:
        """Number of float32 values in one update."""
        return int(sum(int(np.prod(s)) for s in self.shapes))


def base_digest(base: Any) -> str:
    """The base's identity nodes compare theirs with (its bundle sha256, else its name)."""
    sha = getattr(base, "sha256", None) or (getattr(base, "manifest", None) or {}).get("sha256")
    return str(sha or base.name)


def model_shape(base: Any) -> ModelConfig:
    """The base's model shape with its own vocabulary size (nodes never grow the vocab)."""
    return dataclasses.replace(base.model_cfg, vocab_size=len(base.vocab))


def build_model(s: FedSettings, mcfg: ModelConfig) -> Any:
    """The fastai AWD-LSTM classifier every node and the coordinator build alike."""
    return build_classifier(
        mcfg,
        len(s.label_list()),
        CLAS_DROPOUTS,
        0.5,
        s.bptt,
        s.max_len,
        [s.lin_ftrs],
    )


def initial_model(s: FedSettings, base: Any) -> Any:
    """The classifier with the base's encoder and a head seeded by `s.seed` (same everywhere)."""
    import torch

    torch.manual_seed(s.seed)
    model = build_model(s, model_shape(base))
    encoder = {
        k[2:]: v.detach().to(torch.float32)
        for k, v in base.state_dict.items()
        if k.startswith("0.")
    }
    model[0].module.load_state_dict(encoder)
    return model


def layout_of(model: Any, s: FedSettings, vocab: Sequence[str]) -> Layout:
    """What travels, in order: the classifier's float entries (frozen embedding and its tie
    left out), the LM's output bias when LM rounds run, the TF-IDF head's arrays."""
    keys, shapes = [], []
    for k, v in model.state_dict().items():
        if k == TIED or not v.is_floating_point():
            continue
        if s.freeze_embedding and k == EMBEDDING:
            continue
        keys.append(k)
        shapes.append(tuple(v.shape))
    if s.lm_rounds:
        keys.append(LM_BIAS)
        shapes.append((len(vocab),))
    if s.head:
        keys += fed_head.KEYS
        n_features = len(fed_head.head_features(vocab))
        shapes += fed_head.head_shapes(len(s.label_list()), n_features)
    return Layout(tuple(keys), tuple(shapes))


def initial_extras(layout: Layout, base: Any) -> dict[str, np.ndarray]:
    """The travelling arrays outside the classifier, as every federation starts them."""
    out: dict[str, np.ndarray] = {}
    for k, shape in zip(layout.keys, layout.shapes, strict=True):
        if k == LM_BIAS:
            bias = base.state_dict.get(BASE_LM_BIAS)
            out[k] = (
                np.zeros(shape, np.float32)
                if bias is None
                else bias.detach().float().numpy().copy().reshape(shape)
            )
        elif k in fed_head.KEYS:
            out[k] = np.zeros(shape, np.float32)
    return out


def get_arrays(model: Any, layout: Layout, extras: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The travelling arrays as float32 numpy: `model`'s weights, then `extras`, in layout order."""
    sd = model.state_dict()
    return [
        sd[k].detach().to("cpu").float().numpy().copy() if k in sd else extras[k].copy()
        for k in layout.keys
    ]


def set_arrays(model: Any, layout: Layout, arrays: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Load `arrays` (checked against `layout`) into `model`, keeping its tied embedding; the
    arrays that are not the classifier's, by key."""
    import torch

    check_arrays(arrays, layout, "global model")
    sd = model.state_dict()
    extras = {}
    for k, a in zip(layout.keys, arrays, strict=True):
        if k in sd:
            sd[k] = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
        else:
            extras[k] = np.array(a, dtype=np.float32)
    sd[TIED] = sd[TIED_SOURCE]
    model.load_state_dict(sd)
    return extras


def check_arrays(
    arrays: Sequence[Any], layout: Layout, what: str, max_abs: float | None = None
) -> None:
    """Refuse anything but len(layout) finite float32 arrays of the layout's shapes."""
    if not isinstance(arrays, list | tuple) or len(arrays) != len(layout.keys):
        n = len(arrays) if isinstance(arrays, list | tuple) else type(arrays).__name__
        raise UpdateError(f"{what}: {n} arrays, expected {len(layout.keys)}")
    for k, shape, a in zip(layout.keys, layout.shapes, arrays, strict=True):
        if not isinstance(a, np.ndarray) or a.dtype != np.float32:
            kind = getattr(a, "dtype", type(a).__name__)
            raise UpdateError(f"{what}: {k} is {kind}, expected float32")
        if tuple(a.shape) != shape:
            raise UpdateError(f"{what}: {k} has shape {tuple(a.shape)}, expected {shape}")
        if not np.isfinite(a).all():
            raise UpdateError(f"{what}: {k} holds NaN or infinite values")
        if max_abs is not None and a.size and float(np.abs(a).max()) > max_abs:
            raise UpdateError(f"{what}: {k} moves a weight by more than {max_abs}")


def check_model(arrays: Sequence[Any], layout: Layout, what: str) -> None:
    """check_arrays for whole weights, and no negative BatchNorm variance: a mean of clipped,
    quantized deltas can push a near-zero variance below zero, and the model then predicts NaN."""
    check_arrays(arrays, layout, what)
    for k, a in zip(layout.keys, arrays, strict=True):
        if k.endswith("running_var") and a.size and float(a.min()) < 0.0:
            raise UpdateError(f"{what}: {k} holds a negative variance")


def subtract(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> list[np.ndarray]:
    """a - b, array by array (float32)."""
    return [(x - y).astype(np.float32) for x, y in zip(a, b, strict=True)]


def add(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> list[np.ndarray]:
    """a + b, array by array (float32)."""
    return [(x + y).astype(np.float32) for x, y in zip(a, b, strict=True)]


def weighted_mean(updates: Sequence[tuple[Sequence[np.ndarray], int]]) -> list[np.ndarray]:
    """FedAvg: the mean of the updates weighted by their row counts (float64 accumulation)."""
    total = sum(n for _, n in updates)
    if total <= 0:
        raise UpdateError("no rows behind the updates to average")
    acc = [np.zeros(a.shape, np.float64) for a in updates[0][0]]
    for arrays, n in updates:
        for s, a in zip(acc, arrays, strict=True):
            s += a.astype(np.float64) * (n / total)
    return [s.astype(np.float32) for s in acc]


__all__ = [
    "Layout",
    "UpdateError",
    "add",
    "build_model",
    "check_arrays",
    "check_model",
    "get_arrays",
    "initial_extras",
    "initial_model",
    "layout_of",
    "model_shape",
    "set_arrays",
    "subtract",
    "weighted_mean",
]
