"""A comparison unit's own checkpoint, so a long unit resumes where it stopped.

A 20k-row unit trains for ~2 hours on a 2-core CPU; before this, an interrupted unit started
over. Each neural unit now saves an encrypted checkpoint (runs/compare-unit-….ckpt, the same
format and cadence as `edge-tl train`: every epoch and every `checkpoint_minutes`) and removes it
when its record is written. The name carries a digest of the whole setup (classifier settings
included) and the unit's key; a checkpoint whose training config differs is discarded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

from edge_tl.store.checkpoints import (
    Checkpoint,
    Position,
    checkpoint_path,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
)
from edge_tl.train import recipe as _train
from edge_tl.train.config import HEAD_KEYS, TrainConfig, config_dict
from edge_tl.train.settings import Run

# These change speed, not results: a checkpoint made with other values still applies.
RUNTIME_KEYS = ("threads", "workers", "checkpoint_minutes")


def setup_digest(setup: dict[str, Any]) -> str:
    """sha256 of a comparison's whole setup (unlike the shared LM's, classifier settings count)."""
    return hashlib.sha256(json.dumps(setup, sort_keys=True).encode()).hexdigest()


def unit_checkpoint_name(digest: str, key: str) -> str:
    """runs/<name>.ckpt of unit `key` (arm/protocol/size/seed) in the comparison `digest`."""
    return f"compare-unit-{digest[:16]}-{key.replace('/', '-')}"


def checkpoint_meta(plan: Any, fingerprint: str) -> dict[str, Any]:
    """The Checkpoint fields that say which comparison a checkpoint belongs to."""
    return {
        "data": plan.data,
        "base": plan.base,
        "lm_data": list(plan.lm_data),
        "dataset_fingerprint": fingerprint,
    }


def _same_config(a: dict[str, Any], b: dict[str, Any]) -> bool:
    # compare always trains the network alone (tfidf_head off); older checkpoints lack the keys
    strip = {k: None for k in (*RUNTIME_KEYS, *HEAD_KEYS)}
    return {**a, **strip} == {**b, **strip}


@contextlib.contextmanager
def unit_checkpoints(
    run: Run,
    name: str,
    cfg: TrainConfig,
    meta: dict[str, Any],
    echo: Callable[[str], None],
    check_config: bool = True,
) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Checkpoint hooks on `run` for one unit; yields the checkpoint to resume from (or None) and
    the dict every later checkpoint carries as `extra` (the caller adds its LM's metrics). The
    checkpoint is removed when the block finishes without an exception. `check_config=False`
    trusts the name alone (the shared LM's digest already covers what it depends on)."""

    config = config_dict(cfg)
    ck = load_checkpoint(name) if checkpoint_path(name).is_file() else None
    if ck is not None and check_config and not _same_config(ck.train_config, config):
        echo(f"{name}: checkpoint made with another training config, starting the unit over")
        remove_checkpoint(name)
        ck = None
    extra: dict[str, Any] = dict(ck.extra) if ck is not None else {}

    def save(phase, stage, epoch, batch, learn, rng_start, rng_now) -> None:  # noqa: ANN001
        save_checkpoint(
            Checkpoint(
                name=name,
                position=Position(phase, stage, epoch, batch),
                train_config=config,
                vocab=list(learn._vocab),
                labels=list(getattr(learn, "_labels", None) or []),
                model_state=learn.model.state_dict(),
                opt_state=learn.opt.state_dict() if learn.opt is not None else None,
                rng_epoch_start=rng_start or {},
                rng_now=rng_now or {},
                extra=extra,
                **meta,
            )
        )

    run.save, run.resume = save, ck
    try:
        yield ck, extra
    finally:
        run.save, run.resume = None, None
    remove_checkpoint(name)


def lm_from_checkpoint(ck: Any, shape: Any, base: str | None) -> _train.LMResult:
    """The per-unit LM a checkpoint in the classifier phase stands for (its weights are in the
    checkpoint's model state; only vocab, shape and metrics are needed)."""
    return _train.LMResult(
        vocab=list(ck.vocab),
        model_cfg=dataclasses.replace(shape, vocab_size=len(ck.vocab)),
        encoder_state={},
        base=base,
        base_sha256=ck.extra.get("base_sha256"),
        tokens=ck.extra.get("lm_tokens", 0),
        seconds=ck.extra.get("lm_seconds", 0.0),
        metrics={
            k: v
            for k, v in ck.extra.items()
            if k.startswith("lm_") and k not in ("lm_tokens", "lm_seconds")
        },
    )


__all__ = [
    "checkpoint_meta",
    "lm_from_checkpoint",
    "setup_digest",
    "unit_checkpoint_name",
    "unit_checkpoints",
]
