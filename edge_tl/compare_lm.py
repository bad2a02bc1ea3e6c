"""The shared (semi) LM of a comparison: encrypted for this device, tied to its setup digest."""

from __future__ import annotations

import hashlib
from pathlib import Path

from . import train as _train
from .fsutil import atomic_write

LM_MAGIC = b"edge_tl/compare-lm v1\n"
SEMI_LM = "semi-lm.age"


def save_lm(path: Path, lm: _train.LMResult, digest: str) -> None:
    """Encrypt a fine-tuned LM for this device (it memorises its texts) and write it atomically."""
    from .config import to_dict
    from .keys import encrypt_for_device
    from .models import pack_container, tensors_to_bytes

    tensors = tensors_to_bytes(lm.encoder_state)
    header = {"format": LM_MAGIC.decode().split()[0], "version": 1,
              "tensors_sha256": hashlib.sha256(tensors).hexdigest(), "digest": digest,
              "vocab": lm.vocab, "model_cfg": to_dict(lm.model_cfg),
              "base": lm.base, "base_sha256": lm.base_sha256, "tokens": lm.tokens,
              "seconds": lm.seconds, "metrics": lm.metrics}  # fmt: skip
    body = pack_container(LM_MAGIC, header, tensors)
    atomic_write(path, encrypt_for_device(body))


def load_lm(path: Path, digest: str) -> _train.LMResult:
    """Decrypt and check the shared LM of this comparison."""
    from .config import ModelConfig, from_dict
    from .errors import ModelError
    from .keys import decrypt_on_device
    from .models import tensors_from_bytes, unpack_container

    what = f"the shared LM {path}"
    header, body = unpack_container(LM_MAGIC, decrypt_on_device(path.read_bytes(), what), what)
    if header.get("digest") != digest:
        raise ModelError(f"{what} belongs to another comparison", "delete it to retrain it")
    return _train.LMResult(
        vocab=header["vocab"], model_cfg=from_dict(ModelConfig, header["model_cfg"], what),
        encoder_state=tensors_from_bytes(body, what), base=header["base"],
        base_sha256=header["base_sha256"], tokens=header["tokens"], seconds=header["seconds"],
        metrics=header["metrics"],
    )  # fmt: skip


__all__ = ["LM_MAGIC", "SEMI_LM", "save_lm", "load_lm"]
