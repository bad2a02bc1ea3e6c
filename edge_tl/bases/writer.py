"""Writing base bundles (docs/bundle-format.md): validate a fastai LM state dict, pack it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from edge_tl.awd_lstm import lm_state_keys
from edge_tl.bases.layout import EXTENSION, FORMAT_VERSION, HEADER, MAGIC
from edge_tl.bases.manifest import (
    DTYPES,
    TIE_ALIASES,
    TIE_SOURCE,
    check_name,
    check_vocab,
    loads_strict,
    validate_manifest,
)
from edge_tl.bases.signing import key_fingerprint, load_private_key
from edge_tl.config import ModelConfig, to_dict
from edge_tl.errors import BundleError
from edge_tl.store.files import atomic_writer


def pack_bundle(
    out: Path,
    *,
    name: str,
    model_cfg: ModelConfig,
    vocab: list[str],
    state_dict: Mapping[str, Any],
    tokenizer: dict,
    corpus: dict,
    description: str = "",
    dtype: str = "fp16",
    sign_key: Path | None = None,
    card: str | None = None,
) -> Path:
    """Validate a fastai LM state dict against `model_cfg` and write a bundle atomically."""
    key = load_private_key(sign_key) if sign_key is not None else None
    data = build_bundle(
        name=name,
        model_cfg=model_cfg,
        vocab=vocab,
        state_dict=state_dict,
        tokenizer=tokenizer,
        corpus=corpus,
        description=description,
        dtype=dtype,
        private_key=key,
        card=card,
    )
    out = Path(out)
    if out.is_dir():
        out = out / f"{name}{EXTENSION}"
    with atomic_writer(out, 0o644) as f:
        f.write(data)
    return out


def build_bundle(
    *,
    name: str,
    model_cfg: ModelConfig,
    vocab: list[str],
    state_dict: Mapping[str, Any],
    tokenizer: dict,
    corpus: dict,
    description: str = "",
    dtype: str = "fp16",
    private_key: Any = None,
    card: str | None = None,
    created: str | None = None,
    tool: str | None = None,
) -> bytes:
    """The bundle's bytes (deterministic given `created` and `tool`)."""
    import torch

    where = "cannot pack bundle"
    if dtype not in DTYPES:
        raise BundleError(f"{where}: dtype {dtype!r} is not fp16 or fp32", "pick fp16 or fp32")
    check_name(name, where)
    if not isinstance(model_cfg, ModelConfig):
        raise BundleError(f"{where}: model_cfg must be a ModelConfig")
    vocab = list(vocab)
    problem = check_vocab(vocab, model_cfg)
    if problem:
        raise BundleError(f"{where}: vocab {problem}", "pass the model's own vocabulary")
    torch_dtype = torch.float16 if dtype == "fp16" else torch.float32
    expected = lm_state_keys(model_cfg)
    _check_state_keys(state_dict, expected, where)
    tensors: dict[str, Any] = {}
    for k, shape in expected.items():
        t = state_dict[k]
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise BundleError(f"{where}: {k} is not a floating-point tensor")
        if tuple(t.shape) != shape:
            raise BundleError(
                f"{where}: {k} has shape {tuple(t.shape)}, the config needs {shape}",
                "check that model_cfg matches the weights",
            )
        # copy=True: safetensors refuses tensors that share storage (tied weights, views)
        tensors[k] = t.detach().to(device="cpu", dtype=torch_dtype, copy=True).contiguous()
        if not torch.isfinite(tensors[k]).all():
            raise BundleError(
                f"{where}: {k} holds NaN or infinity as {dtype}",
                "pack with dtype fp32" if dtype == "fp16" else "fix the weights",
            )
    tied = {a: TIE_SOURCE for a in TIE_ALIASES if torch.equal(tensors[a], tensors[TIE_SOURCE])}
    for a in tied:
        del tensors[a]
    import safetensors.torch  # lazy: imports torch

    weights = safetensors.torch.save(tensors)
    del tensors
    vocab_bytes = json.dumps(vocab, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    members = [("vocab.json", vocab_bytes), ("weights.safetensors", weights)]
    if card is not None:
        members.append(("card.md", card.encode("utf-8")))
    table, offset = [], 0
    for mname, data in members:
        sha = hashlib.sha256(data).hexdigest()
        table.append({"name": mname, "offset": offset, "size": len(data), "sha256": sha})
        offset += len(data)
    manifest = {
        "format": "edge-tl-base",
        "format_version": FORMAT_VERSION,
        "name": name,
        "description": description,
        "architecture": "AWD_LSTM",
        "model_config": to_dict(model_cfg),
        "vocab": {"member": "vocab.json", "size": len(vocab)},
        "weights": {"member": "weights.safetensors", "dtype": dtype, "tied": tied},
        "tokenizer": tokenizer,
        "corpus": corpus,
        "members": table,
        "created": created or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tool": tool or f"edge_tl {_version()}",
        "signer": key_fingerprint(private_key.public_key()) if private_key else None,
    }
    try:
        mbytes = json.dumps(
            manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
        ).encode("ascii")
    except (TypeError, ValueError) as e:
        raise BundleError(f"{where}: tokenizer/corpus must be plain JSON ({e})") from e
    validate_manifest(loads_strict(mbytes, where), where)  # the writer obeys the reader's rules
    sig = private_key.sign(mbytes) if private_key else b""
    head = HEADER.pack(MAGIC, FORMAT_VERSION, len(mbytes), len(sig)) + mbytes + sig
    parts = [head, hashlib.sha256(head).digest()] + [d for _, d in members]
    return b"".join(parts)


def _check_state_keys(sd: Mapping[str, Any], expected: dict, where: str) -> None:
    missing = [k for k in expected if k not in sd]
    extra = [k for k in sd if k not in expected]
    if missing or extra:
        what = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
        raise BundleError(
            f"{where}: state dict keys do not match the AWD-LSTM layout ({what})",
            "pass a fastai language-model state dict (keys as in edge_tl.awd_lstm.lm_state_keys)",
        )


def _version() -> str:

    try:
        return version("edge_tl")
    except PackageNotFoundError:
        return "0+unknown"


__all__ = ["build_bundle", "pack_bundle"]
