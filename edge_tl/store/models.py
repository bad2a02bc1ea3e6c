"""Trained classifiers: the in-memory form and the encrypted store under models/.

Format: docs/model-format.md. The file is age-encrypted for the device; inside, a magic line,
a JSON header and safetensors bytes (nothing is ever unpickled)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

from edge_tl.awd_lstm import build_classifier
from edge_tl.config import ModelConfig, from_dict, to_dict
from edge_tl.errors import ConfigError, ModelError, StoreError
from edge_tl.store.files import atomic_write, remove_stale_parts
from edge_tl.store.home import subdir
from edge_tl.store.keys import decrypt_on_device, encrypt_for_device
from edge_tl.tfidf_head import TfidfHead, head_from_parts

MODEL_MAGIC = b"edge_tl/model v1\n"
SUFFIX = ".etlm"
BACKWARD_PREFIX = "bwd."  # the backward network's tensors in the container
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MODEL_KEYS = {
    "format",
    "version",
    "tensors_sha256",
    "name",
    "model_cfg",
    "vocab",
    "labels",
    "lin_ftrs",
    "train_config",
    "metrics",
    "base",
    "base_sha256",
    "dataset_fingerprint",
    "created",
}


@dataclass
class Backward:
    """The backward network of a forward + backward model: its weights and the base it began at."""

    state_dict: dict[str, Any]  # same keys and shapes as the forward network's
    base: str | None = None
    base_sha256: str | None = None


@dataclass
class TrainedModel:
    """A trained AWD-LSTM classifier with everything needed to rebuild, evaluate and export it."""

    name: str
    model_cfg: ModelConfig
    vocab: list[str]  # token id -> token (fastai vocab of the fine-tuned model)
    labels: list[str]  # class index -> label name
    # fastai layout of build_classifier(model_cfg, len(labels), lin_ftrs=lin_ftrs)
    state_dict: dict[str, Any]
    lin_ftrs: list[int] = field(default_factory=lambda: [50])
    train_config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    base: str | None = None  # name of the base it was fine-tuned from; None when from scratch
    base_sha256: str | None = None
    dataset_fingerprint: str | None = None
    created: str = ""
    tfidf_head: TfidfHead | None = None  # averaged with the network at export
    # ULMFiT's backward network (same shape and vocab, trained on reversed text): the network's
    # probabilities are the mean of both directions. None: forward only.
    backward: Backward | None = None
    # In memory only, never stored: the validation rows' network and cross-fitted head
    # probabilities, for compare's mixing levers (train.recipe fills it).
    held_out: dict[str, Any] | None = field(default=None, repr=False, compare=False)


def check_name(name: str, what: str = "model") -> str:
    """Return `name` if it is a valid store name, else raise StoreError."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise StoreError(
            f"invalid {what} name {name!r}",
            "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


# ---------------------------------------------------------------- container (shared format)


def pack_container(magic: bytes, header: dict[str, Any], tensor_bytes: bytes) -> bytes:
    """magic + u64le header length + JSON header + safetensors bytes (the plaintext layout)."""
    head = json.dumps(header, ensure_ascii=False).encode("utf-8")
    return magic + len(head).to_bytes(8, "little") + head + tensor_bytes


def unpack_container(magic: bytes, data: bytes, what: str) -> tuple[dict[str, Any], bytes]:
    """Split a decrypted container into (header, safetensors bytes); ModelError on any defect."""
    if not data.startswith(magic):
        raise ModelError(f"{what} is not an {magic.decode().strip()} file", _REDO)
    pos = len(magic)
    if len(data) < pos + 8:
        raise ModelError(f"{what} is truncated", _REDO)
    n = int.from_bytes(data[pos : pos + 8], "little")
    if n > len(data) - pos - 8:
        raise ModelError(f"{what}: header length runs past the end of the file", _REDO)
    try:
        header = json.loads(data[pos + 8 : pos + 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{what}: header is not valid JSON", _REDO) from e
    if not isinstance(header, dict):
        raise ModelError(f"{what}: header is not a JSON object", _REDO)
    fmt = magic.decode().split()[0]
    if header.get("format") != fmt or header.get("version") != 1:
        raise ModelError(f"{what}: header format/version does not match {fmt} v1", _REDO)
    body = data[pos + 8 + n :]
    if header.get("tensors_sha256") != hashlib.sha256(body).hexdigest():
        raise ModelError(f"{what}: tensor data does not match its sha256", _REDO)
    return header, body


def tensors_to_bytes(tensors: dict[str, Any]) -> bytes:
    """safetensors bytes of `tensors` (contiguous CPU copies; tied tensors stored twice)."""

    from safetensors.torch import save  # lazy: imports torch; `models list` needs none

    return save({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()})


def tensors_from_bytes(data: bytes, what: str) -> dict[str, Any]:
    """Parse safetensors bytes; ModelError if they do not parse."""
    try:
        from safetensors.torch import load  # lazy: imports torch

        return load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise ModelError(f"{what}: tensor data does not parse", _REDO) from e


_REDO = "the file is damaged or from another version; retrain the model or restore a backup"


# ---------------------------------------------------------------- models <-> bytes


def _head_tensors(head: TfidfHead) -> dict[str, Any]:
    """The head's arrays as torch tensors, named as the container stores them."""
    import torch  # lazy: `models list` and `models info` need no torch

    return {
        "tfidf.idf": torch.from_numpy(head.idf),
        "tfidf.coef": torch.from_numpy(head.coef),
        "tfidf.intercept": torch.from_numpy(head.intercept),
        **({} if head.doc_freq is None else {"tfidf.df": torch.from_numpy(head.doc_freq)}),
    }


def model_to_bytes(m: TrainedModel) -> bytes:
    """Plaintext container of a trained model (encrypt it before it touches disk)."""
    head, bwd = m.tfidf_head, m.backward
    tensors = {**m.state_dict, **(_head_tensors(head) if head is not None else {})}
    if bwd is not None:
        tensors.update({BACKWARD_PREFIX + k: v for k, v in bwd.state_dict.items()})
    body = tensors_to_bytes(tensors)
    header = {
        "format": "edge_tl/model",
        "version": 1,
        "tensors_sha256": hashlib.sha256(body).hexdigest(),
        "name": m.name,
        "model_cfg": to_dict(m.model_cfg),
        "vocab": list(m.vocab),
        "labels": list(m.labels),
        "lin_ftrs": list(m.lin_ftrs),
        "train_config": m.train_config,
        "metrics": m.metrics,
        "base": m.base,
        "base_sha256": m.base_sha256,
        "dataset_fingerprint": m.dataset_fingerprint,
        "created": m.created,
    }
    if head is not None:  # absent otherwise: a model without one is what it always was
        header["tfidf_head"] = head.spec()
    if bwd is not None:  # likewise: a forward-only model has no "backward" key
        header["backward"] = {"base": bwd.base, "base_sha256": bwd.base_sha256}
    return pack_container(MODEL_MAGIC, header, body)


def model_from_bytes(data: bytes, what: str) -> TrainedModel:
    """Parse and fully validate a decrypted model container."""
    h, body = unpack_container(MODEL_MAGIC, data, what)
    missing, unknown = MODEL_KEYS - set(h), set(h) - MODEL_KEYS - {"tfidf_head", "backward"}
    if missing or unknown:
        key = sorted(missing or unknown)[0]
        raise ModelError(f"{what}: header key {key!r} is {'missing' if missing else 'unknown'}")
    try:
        cfg = from_dict(ModelConfig, h["model_cfg"], f"{what}: model_cfg")
    except ConfigError as e:
        raise ModelError(e.message, _REDO) from e
    _check(
        cfg.n_layers <= 16 and max(cfg.emb_sz, cfg.n_hid) <= 65536 and cfg.vocab_size <= 10_000_000,
        what,
        "model_cfg is implausibly large",
    )
    _check(
        isinstance(h["vocab"], list) and all(isinstance(t, str) for t in h["vocab"]),
        what,
        "vocab must be a list of strings",
    )
    _check(len(h["vocab"]) == cfg.vocab_size, what, "vocab length differs from vocab_size")
    labels = h["labels"]
    _check(
        isinstance(labels, list) and all(isinstance(x, str) for x in labels),
        what,
        "labels must be a list of strings",
    )
    _check(
        len(labels) >= 2 and len(set(labels)) == len(labels),
        what,
        "labels must be at least 2 distinct names",
    )
    lin = h["lin_ftrs"]
    _check(
        isinstance(lin, list) and all(type(x) is int and x > 0 for x in lin),
        what,
        "lin_ftrs must be a list of positive ints",
    )
    for key in ("train_config", "metrics"):
        _check(isinstance(h[key], dict), what, f"{key} must be an object")
    for key in ("base", "base_sha256", "dataset_fingerprint"):
        _check(h[key] is None or isinstance(h[key], str), what, f"{key} must be a string or null")
    _check(
        isinstance(h["name"], str) and isinstance(h["created"], str),
        what,
        "name and created must be strings",
    )
    tensors = tensors_from_bytes(body, what)
    head_tensors = {k: tensors.pop(k) for k in [k for k in tensors if k.startswith("tfidf.")]}
    head = None
    if h.get("tfidf_head") is not None:
        try:
            head = head_from_parts(h["tfidf_head"], head_tensors, len(labels))
        except ValueError as e:
            raise ModelError(f"{what}: {e}", _REDO) from e
    elif head_tensors:
        raise ModelError(f"{what}: tensor {sorted(head_tensors)[0]!r} is unexpected", _REDO)
    bwd = _backward_of(h.get("backward"), tensors, what)
    _check_shapes(tensors, cfg, len(labels), lin, what)
    if bwd is not None:
        _check_shapes(bwd.state_dict, cfg, len(labels), lin, f"{what} (backward network)")
    return TrainedModel(
        name=h["name"],
        model_cfg=cfg,
        vocab=h["vocab"],
        labels=labels,
        state_dict=tensors,
        lin_ftrs=lin,
        train_config=h["train_config"],
        metrics=h["metrics"],
        base=h["base"],
        base_sha256=h["base_sha256"],
        dataset_fingerprint=h["dataset_fingerprint"],
        created=h["created"],
        tfidf_head=head,
        backward=bwd,
    )


def _backward_of(spec: Any, tensors: dict[str, Any], what: str) -> Backward | None:
    """The backward network (its "bwd." tensors popped from `tensors`), or None when the header
    has no "backward" key; a key without tensors or tensors without the key are rejected."""
    names = [k for k in tensors if k.startswith(BACKWARD_PREFIX)]
    state = {k[len(BACKWARD_PREFIX) :]: tensors.pop(k) for k in names}
    if spec is None:
        if state:
            raise ModelError(f"{what}: tensor {sorted(names)[0]!r} is unexpected", _REDO)
        return None
    _check(
        isinstance(spec, dict)
        and set(spec) == {"base", "base_sha256"}
        and all(v is None or isinstance(v, str) for v in spec.values()),
        what,
        "backward must be an object with base and base_sha256 (strings or null)",
    )
    _check(bool(state), what, "backward is set but the file has no backward tensors")
    return Backward(state, spec["base"], spec["base_sha256"])


def _check(ok: bool, what: str, problem: str) -> None:
    if not ok:
        raise ModelError(f"{what}: {problem}", _REDO)


def expected_shapes(cfg: ModelConfig, n_class: int, lin_ftrs: list[int]) -> dict[str, tuple]:
    """State-dict key -> shape of build_classifier(cfg, n_class, lin_ftrs=lin_ftrs)."""
    import torch

    with torch.device("meta"):  # shapes only: no memory, no init cost
        m = build_classifier(cfg, n_class, lin_ftrs=list(lin_ftrs))
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


def _check_shapes(tensors: dict, cfg: ModelConfig, n_class: int, lin: list[int], what: str) -> None:
    want = expected_shapes(cfg, n_class, lin)
    if set(tensors) != set(want):
        odd = sorted(set(tensors) ^ set(want))[0]
        raise ModelError(f"{what}: tensor {odd!r} is missing or unexpected", _REDO)
    for k, shape in want.items():
        if tuple(tensors[k].shape) != shape:
            raise ModelError(
                f"{what}: tensor {k!r} has shape {tuple(tensors[k].shape)}, expected {shape}", _REDO
            )


# ---------------------------------------------------------------- the store


def model_path(name: str) -> Path:
    """Where model `name` is stored (the file may not exist)."""
    return subdir("models") / f"{check_name(name)}{SUFFIX}"


def save_model(m: TrainedModel, overwrite: bool = True) -> Path:
    """Encrypt `m` for this device and store it atomically as models/<name>.etlm."""

    path = model_path(m.name)
    if path.exists() and not overwrite:
        raise StoreError(
            f"model {m.name!r} already exists",
            f"choose another --out name, or remove it with `edge-tl models rm {m.name}`",
        )
    if not m.created:
        m.created = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    remove_stale_parts(path.parent)
    atomic_write(path, encrypt_for_device(model_to_bytes(m)))
    return path


def load_model(name: str) -> TrainedModel:
    """Decrypt and validate stored model `name`."""

    path = model_path(name)
    if not path.is_file():
        raise StoreError(f"no model named {name!r}", "run `edge-tl models list` to see them")
    what = f"model {name}"
    m = model_from_bytes(decrypt_on_device(path.read_bytes(), what), what)
    if m.name != name:
        raise ModelError(f"{what}: the file holds model {m.name!r} (renamed or swapped)", _REDO)
    return m


def list_models() -> list[str]:
    """Names of the stored models, sorted."""
    folder = subdir("models")
    return sorted(p.name[: -len(SUFFIX)] for p in folder.glob(f"*{SUFFIX}") if p.is_file())


def model_info(name: str) -> dict[str, Any]:
    """A JSON-ready summary of stored model `name` (no weights, no vocabulary)."""
    m = load_model(name)
    n_params = sum(int(t.numel()) for k, t in m.state_dict.items() if "num_batches" not in k)
    return {
        "name": m.name,
        "labels": m.labels,
        "base": m.base,
        "base_sha256": m.base_sha256,
        "dataset_fingerprint": m.dataset_fingerprint,
        "created": m.created,
        "model_cfg": to_dict(m.model_cfg),
        "lin_ftrs": m.lin_ftrs,
        "parameters": n_params,
        "file_bytes": model_path(name).stat().st_size,
        "metrics": m.metrics,
        "train_config": m.train_config,
        "backward_base": None if m.backward is None else m.backward.base,
    }


def remove_model(name: str) -> None:
    """Delete stored model `name` (StoreError if there is none)."""
    path = model_path(name)
    if not path.is_file():
        raise StoreError(f"no model named {name!r}", "run `edge-tl models list` to see them")
    path.unlink()


__all__ = [
    "BACKWARD_PREFIX",
    "Backward",
    "TrainedModel",
    "save_model",
    "load_model",
    "list_models",
    "model_info",
    "remove_model",
    "model_path",
]
