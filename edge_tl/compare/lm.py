"""The shared (semi) LM of a comparison: encrypted for this device, tied to its setup digest."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_tl.compare.resume import checkpoint_meta, unit_checkpoints
from edge_tl.config import ModelConfig, from_dict, to_dict
from edge_tl.errors import ModelError
from edge_tl.store.files import atomic_write
from edge_tl.store.keys import decrypt_on_device, encrypt_for_device
from edge_tl.store.models import (
    pack_container,
    tensors_from_bytes,
    tensors_to_bytes,
    unpack_container,
)
from edge_tl.train import recipe as _train
from edge_tl.train.engine import tokenize

LM_MAGIC = b"edge_tl/compare-lm v1\n"
SEMI_LM = "semi-lm.age"
SEMI_LM_BACKWARD = "semi-lm-bwd.age"  # the backward base fine-tuned on the same texts, reversed

# Settings the shared semi LM does not depend on: another classifier recipe reuses it.
CLASSIFIER_ONLY = (
    "stages",
    "lr",
    "stage_lr_mults",
    "lr_div",
    "discriminative",
    "clas_drop_mult",
    "lin_ftrs",
    "cache_head_features",
    "bs",
    "max_len",
)


# What the digest puts in place of the classifier-only settings: the defaults when the first
# shared LM was made, frozen so that a later change of defaults keeps stored LMs valid.
LM_DIGEST_FILL: dict[str, Any] = {
    "stages": [1, 1, 1, 2],
    "lr": 0.02,
    "stage_lr_mults": [1.0, 0.5, 0.25, 0.05],
    "lr_div": 2.6,
    "discriminative": "auto",
    "clas_drop_mult": 0.5,
    "lin_ftrs": [50],
    "cache_head_features": True,
    "bs": 0,
    "max_len": 1440,
}


# Classifier-only settings added after shared LMs were stored: left out of the digest entirely,
# so that an LM stored before they existed still matches.
CLASSIFIER_ONLY_LATER = ("train_on_unused_valid", "backward_base")


def lm_digest(setup: dict[str, Any]) -> str:
    """The digest that ties the shared LM to a setup, blind to classifier-only settings."""
    tc = {**setup["train_config"], **LM_DIGEST_FILL}
    for k in CLASSIFIER_ONLY_LATER:
        tc.pop(k, None)
    return hashlib.sha256(
        json.dumps({**setup, "train_config": tc}, sort_keys=True).encode()
    ).hexdigest()


def save_lm(path: Path, lm: _train.LMResult, digest: str) -> None:
    """Encrypt a fine-tuned LM for this device (it memorises its texts) and write it atomically."""

    tensors = tensors_to_bytes(lm.encoder_state)
    header = {
        "format": LM_MAGIC.decode().split()[0],
        "version": 1,
        "tensors_sha256": hashlib.sha256(tensors).hexdigest(),
        "digest": digest,
        "vocab": lm.vocab,
        "model_cfg": to_dict(lm.model_cfg),
        "base": lm.base,
        "base_sha256": lm.base_sha256,
        "tokens": lm.tokens,
        "seconds": lm.seconds,
        "metrics": lm.metrics,
    }
    body = pack_container(LM_MAGIC, header, tensors)
    atomic_write(path, encrypt_for_device(body))


def load_lm(path: Path, digest: str) -> _train.LMResult:
    """Decrypt and check the shared LM of this comparison."""

    what = f"the shared LM {path}"
    header, body = unpack_container(LM_MAGIC, decrypt_on_device(path.read_bytes(), what), what)
    if header.get("digest") != digest:
        raise ModelError(f"{what} belongs to another comparison", "delete it to retrain it")
    return lm_of(header, tensors_from_bytes(body, what), what)


def lm_of(header: dict[str, Any], tensors: dict[str, Any], what: str) -> _train.LMResult:
    """The LM a shared-LM header and its tensors describe."""
    return _train.LMResult(
        vocab=header["vocab"],
        model_cfg=from_dict(ModelConfig, header["model_cfg"], what),
        encoder_state=tensors,
        base=header["base"],
        base_sha256=header["base_sha256"],
        tokens=header["tokens"],
        seconds=header["seconds"],
        metrics=header["metrics"],
    )


def shared_lm(ctx: Any, doc: dict[str, Any]) -> _train.LMResult:
    """The semi protocol's LM, fine-tuned once on all text (labels unused) and loaded if an
    earlier run made it; `ctx` is compare's run context, `doc` its results document."""

    if ctx.semi is not None:
        return ctx.semi
    path = ctx.work / SEMI_LM
    if path.exists():
        ctx.semi = load_lm(path, ctx.digest)
        return ctx.semi
    texts, cfg = ctx.lm_texts(), ctx.cfg
    meta = checkpoint_meta(ctx.plan, ctx.digest)
    with unit_checkpoints(
        ctx.run, f"compare-semi-{ctx.digest[:16]}", cfg, meta, ctx.echo, check_config=False
    ) as (ck, _):
        ctx.echo(
            f"shared LM (semi): fine-tuning on {len(texts):,} texts"
            + (f", resuming at stage {ck.position.stage + 1}" if ck else "")
        )
        lm = _train.finetune_lm(
            texts,
            ctx.load_base(),
            cfg,
            run=ctx.run,
            docs=tokenize(texts, cfg.workers),
            vocab=list(ck.vocab) if ck is not None else None,
        )
        save_lm(path, lm, ctx.digest)
    doc["semi_lm"] = _record(len(texts), lm)
    ctx.semi = lm
    return lm


def _record(n_texts: int, lm: _train.LMResult) -> dict[str, Any]:
    """What the results document says of a shared LM: its texts, time, tokens and metrics."""
    done = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "texts": n_texts,
        "seconds": lm.seconds,
        "tokens": lm.tokens,
        "tokens_per_s": lm.tokens_per_s,
        **lm.metrics,
        "finished": done,
    }


def backward_digest(ctx: Any) -> str:
    """The digest of the backward shared LM: the forward one's setup and the backward base."""
    return hashlib.sha256(f"{ctx.digest}:backward:{ctx.cfg.backward_base}".encode()).hexdigest()


def shared_backward_lm(ctx: Any, doc: dict[str, Any], forward: _train.LMResult) -> Any:
    """The backward base fine-tuned once on the semi LM's texts reversed, with the forward
    LM's vocabulary (for ULMFiT's forward + backward; `backward_base` set). Not checkpointed:
    an interrupted run fine-tunes it again."""
    if getattr(ctx, "semi_backward", None) is not None:
        return ctx.semi_backward
    path, digest = ctx.work / SEMI_LM_BACKWARD, backward_digest(ctx)
    if path.exists():
        ctx.semi_backward = load_lm(path, digest)
        return ctx.semi_backward
    from edge_tl.bases.store import load_base
    from edge_tl.train.directions import check_backward_base, finetune_backward_lm

    base = load_base(ctx.cfg.backward_base)
    check_backward_base(base, ctx.load_base())
    texts, cfg = ctx.lm_texts(), ctx.cfg
    ctx.echo(f"shared backward LM: fine-tuning {base.name} on {len(texts):,} texts, reversed")
    docs = tokenize(texts, cfg.workers)
    lm = finetune_backward_lm(texts, base, forward, cfg, ctx.run, docs)
    save_lm(path, lm, digest)
    doc["semi_lm_backward"] = _record(len(texts), lm)
    ctx.semi_backward = lm
    return lm


__all__ = [
    "SEMI_LM_BACKWARD",
    "backward_digest",
    "shared_backward_lm",
    "CLASSIFIER_ONLY",
    "CLASSIFIER_ONLY_LATER",
    "LM_DIGEST_FILL",
    "LM_MAGIC",
    "SEMI_LM",
    "lm_digest",
    "lm_of",
    "load_lm",
    "save_lm",
    "shared_lm",
]
