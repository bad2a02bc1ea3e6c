"""Base-model bundles (docs/bundle-format.md): one verified file, JSON + safetensors, no pickle."""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidSignature

from edge_tl.awd_lstm import lm_state_keys
from edge_tl.bases.layout import (  # noqa: F401  (re-exported: part of this module's API)
    CHECKSUM_LEN,
    CHUNK,
    EXTENSION,
    FASTAI_TOKENIZER,
    FORMAT_VERSION,
    HEADER,
    MAGIC,
    MAX_MANIFEST,
    SIG_LEN,
    TRUST_HINT,
)
from edge_tl.bases.manifest import (
    CORRUPT,
    DTYPES,
    check_safetensors_header,
    check_vocab,
    loads_strict,
    validate_manifest,
)
from edge_tl.bases.signing import (
    generate_keypair,
    key_fingerprint,
    load_private_key,
    load_public_key,
)
from edge_tl.bases.writer import build_bundle, pack_bundle
from edge_tl.config import ModelConfig, from_dict
from edge_tl.errors import BundleError


@dataclass
class Base:
    """A verified base model: config, vocabulary, fp32 fastai LM state dict and manifest."""

    name: str
    model_cfg: ModelConfig
    vocab: list[str]
    state_dict: dict[str, Any]  # key -> fp32 torch.Tensor (tied keys share one tensor)
    manifest: dict[str, Any]
    sha256: str | None = None  # of the bundle file, set by the store that loaded it


@dataclass(frozen=True)
class BundleInfo:
    """What verifying a bundle established (no tensors loaded)."""

    path: Path
    manifest: dict[str, Any]
    model_cfg: ModelConfig
    signer: str | None  # fingerprint named by the manifest
    signature_verified: bool  # True only when checked against a trusted key
    size: int


# ---------------------------------------------------------------- reader


@dataclass
class _Layout:
    label: str
    manifest: dict[str, Any]
    mbytes: bytes
    signature: bytes
    data_start: int
    file_size: int
    model_cfg: ModelConfig

    def member(self, name: str) -> dict[str, Any]:
        return next(m for m in self.manifest["members"] if m["name"] == name)


def _fail(label: str, msg: str, hint: str | None = CORRUPT) -> BundleError:
    return BundleError(f"bundle {label}: {msg}", hint)


def _read_exact(f: BinaryIO, n: int, label: str, file_size: int, need: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise _fail(label, f"truncated (file is {file_size} bytes, layout needs {need})")
    return data


def _open(path: Path, label: str | None = None) -> tuple[BinaryIO, int, str]:
    path = Path(path)
    label = label or path.name
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the caller's `with`
    except FileNotFoundError as e:
        raise _fail(label, "file not found", "check the path") from e
    except IsADirectoryError as e:
        raise _fail(label, "is a folder, not a bundle file", "check the path") from e
    except OSError as e:
        raise _fail(label, f"cannot open ({e.strerror})", "check the path") from e

    return f, os.fstat(f.fileno()).st_size, label


def _read_layout(f: BinaryIO, size: int, label: str) -> _Layout:
    """Header, checksum, manifest and member tiling: everything but trust and member hashes."""
    head = f.read(HEADER.size)
    if len(head) < 8 or head[:8] != MAGIC[: len(head)]:
        raise _fail(label, "not an edge_tl base bundle (bad magic)", "check the path")
    if len(head) < HEADER.size:
        raise _fail(label, f"truncated (file is {size} bytes, layout needs {HEADER.size})")
    _, version, mlen, slen = HEADER.unpack(head)
    if version != FORMAT_VERSION:
        raise _fail(
            label,
            f"unsupported format version {version} (this edge_tl reads version {FORMAT_VERSION})",
            "upgrade edge_tl, or re-pack the base with this version",
        )
    if not 1 <= mlen <= MAX_MANIFEST:
        raise _fail(label, f"manifest length {mlen} is outside 1..{MAX_MANIFEST}")
    if slen not in (0, SIG_LEN):
        raise _fail(label, f"signature length {slen} is not 0 or {SIG_LEN}")
    need = HEADER.size + mlen + slen + CHECKSUM_LEN
    rest = _read_exact(f, mlen + slen + CHECKSUM_LEN, label, size, need)
    mbytes, sig, checksum = rest[:mlen], rest[mlen : mlen + slen], rest[mlen + slen :]
    if hashlib.sha256(head + mbytes + sig).digest() != checksum:
        raise _fail(label, "header checksum mismatch (corrupted or tampered with)")
    manifest = loads_strict(mbytes, f"bundle {label}: manifest")
    cfg_dict = validate_manifest(manifest, f"bundle {label}: manifest")
    cfg = from_dict(ModelConfig, cfg_dict, f"bundle {label}: manifest model_config")
    if manifest["format_version"] != version:
        raise _fail(label, "manifest format_version differs from the header's")
    if manifest["signer"] is None and slen:
        raise _fail(label, "has a signature but the manifest names no signer")
    if manifest["signer"] is not None and not slen:
        raise _fail(label, f"manifest names signer {manifest['signer']} but has no signature")
    end = need + sum(m["size"] for m in manifest["members"])
    if size < end:
        raise _fail(label, f"truncated (file is {size} bytes, layout needs {end})")
    if size > end:
        raise _fail(label, f"{size - end} unexpected bytes after the last member")
    return _Layout(label, manifest, mbytes, sig, need, size, cfg)


def _check_trust(lay: _Layout, trust: Path | None, allow_unsigned: bool) -> bool:
    """Apply the trust rules; True when the signature was checked against `trust`."""
    signer = lay.manifest["signer"]
    if trust is None:
        if allow_unsigned:
            return False
        if signer is None:
            raise _fail(lay.label, "not signed", TRUST_HINT)
        raise _fail(lay.label, f"signed by {signer} but no trusted key was given", TRUST_HINT)
    key = load_public_key(trust)
    if signer is None:
        raise _fail(
            lay.label,
            "not signed, but a trusted key was given",
            "get a signed bundle from the packer, or import with --allow-unsigned",
        )

    fp = key_fingerprint(key)
    if signer != fp:
        raise _fail(
            lay.label,
            f"signed by {signer}, not by the trusted key {fp}",
            "pass the packer's public key with --trust",
        )
    try:
        key.verify(lay.signature, lay.mbytes)
    except InvalidSignature as e:
        msg = "signature does not verify (manifest edited or signature corrupted)"
        raise _fail(lay.label, msg) from e
    return True


def _hash_msg(name: str) -> str:
    return f"member {name} sha256 mismatch (corrupted or tampered with)"


def _read_member(f: BinaryIO, lay: _Layout, name: str) -> bytes:
    m = lay.member(name)
    f.seek(lay.data_start + m["offset"])
    data = _read_exact(f, m["size"], lay.label, lay.file_size, lay.file_size)
    if hashlib.sha256(data).hexdigest() != m["sha256"]:
        raise _fail(lay.label, _hash_msg(name))
    return data


def _stream_weights(f: BinaryIO, lay: _Layout) -> None:
    """Hash the weights member in chunks, checking its header and that every value is finite."""
    import numpy as np

    m = lay.member("weights.safetensors")
    f.seek(lay.data_start + m["offset"])
    h = hashlib.sha256()
    remaining, problem, header_len = m["size"], None, None
    first = f.read(min(8, remaining))
    h.update(first)
    remaining -= len(first)
    if len(first) == 8:
        header_len = struct.unpack("<Q", first)[0]
    wmeta_dtype = lay.manifest["weights"]["dtype"]
    np_dtype = {"fp16": "<f2", "fp32": "<f4"}[wmeta_dtype]
    finite = True
    if header_len is not None and header_len <= min(remaining, 16 << 20):
        hdr = f.read(header_len)
        h.update(hdr)
        remaining -= len(hdr)
        problem = check_safetensors_header(hdr, remaining, lay.model_cfg, lay.manifest["weights"])
    else:
        problem = "safetensors header length is invalid"
    while remaining > 0:
        chunk = f.read(min(CHUNK, remaining))
        if not chunk:
            break
        h.update(chunk)
        remaining -= len(chunk)
        if problem is None and finite and len(chunk) % DTYPES[wmeta_dtype][1] == 0:
            finite = bool(np.isfinite(np.frombuffer(chunk, dtype=np_dtype)).all())
    if h.hexdigest() != m["sha256"]:
        raise _fail(lay.label, _hash_msg("weights.safetensors"))
    if problem:
        raise _fail(lay.label, f"weights: {problem}")
    if not finite:
        raise _fail(lay.label, "weights: tensor data holds NaN or infinity")


def read_manifest(path: Path, label: str | None = None) -> dict[str, Any]:
    """The validated manifest of a bundle (structure only: no hash or signature is checked)."""
    f, size, label = _open(path, label)
    with f:
        return _read_layout(f, size, label).manifest


def verify_bundle(
    path: Path, *, trust: Path | None = None, allow_unsigned: bool = False, label: str | None = None
) -> BundleInfo:
    """Check layout, trust, every hash and the members' contents, streaming (low memory)."""
    f, size, label = _open(path, label)
    with f:
        lay = _read_layout(f, size, label)
        verified = _check_trust(lay, trust, allow_unsigned)
        vocab_bytes = _read_member(f, lay, "vocab.json")
        if any(m["name"] == "card.md" for m in lay.manifest["members"]):
            _read_member(f, lay, "card.md")
        _stream_weights(f, lay)
    _parse_vocab(vocab_bytes, lay)
    signer = lay.manifest["signer"]
    return BundleInfo(Path(path), lay.manifest, lay.model_cfg, signer, verified, size)


def read_bundle(
    path: Path, *, trust: Path | None = None, allow_unsigned: bool = False, label: str | None = None
) -> Base:
    """Verify a bundle completely, then return its base with fp32 tensors."""
    import torch

    f, size, label = _open(path, label)
    with f:
        lay = _read_layout(f, size, label)
        _check_trust(lay, trust, allow_unsigned)
        # Read each member once, hash those very bytes, then parse them (no TOCTOU).
        vocab_bytes = _read_member(f, lay, "vocab.json")
        weights = _read_member(f, lay, "weights.safetensors")
        if any(m["name"] == "card.md" for m in lay.manifest["members"]):
            _read_member(f, lay, "card.md")
    vocab = _parse_vocab(vocab_bytes, lay)
    wmeta = lay.manifest["weights"]
    header_len = struct.unpack("<Q", weights[:8])[0] if len(weights) >= 8 else None
    if header_len is None or header_len > min(len(weights) - 8, 16 << 20):
        raise _fail(label, "weights: safetensors header length is invalid")
    problem = check_safetensors_header(
        weights[8 : 8 + header_len], len(weights) - 8 - header_len, lay.model_cfg, wmeta
    )
    if problem:
        raise _fail(label, f"weights: {problem}")
    import safetensors.torch  # lazy: imports torch; listing and verifying bases need none

    loaded = safetensors.torch.load(weights)
    del weights
    sd: dict[str, Any] = {}
    for k in lm_state_keys(lay.model_cfg):
        if k in wmeta["tied"]:
            continue
        t = loaded.pop(k).float()
        if not torch.isfinite(t).all():
            raise _fail(label, f"weights: {k} holds NaN or infinity")
        sd[k] = t
    for alias, src in wmeta["tied"].items():
        sd[alias] = sd[src]
    ordered = {k: sd[k] for k in lm_state_keys(lay.model_cfg)}  # fastai loads by key order
    return Base(lay.manifest["name"], lay.model_cfg, vocab, ordered, lay.manifest)


def _parse_vocab(data: bytes, lay: _Layout) -> list[str]:
    vocab = loads_strict(data, f"bundle {lay.label}: vocab.json", expect=list)
    problem = check_vocab(vocab, lay.model_cfg)
    if problem:
        raise _fail(lay.label, f"vocab.json {problem}")
    return vocab


def read_card(path: Path) -> str | None:
    """The bundle's model card (hash-checked), or None when it has none."""
    f, size, label = _open(path)
    with f:
        lay = _read_layout(f, size, label)
        if not any(m["name"] == "card.md" for m in lay.manifest["members"]):
            return None
        return _read_member(f, lay, "card.md").decode("utf-8", errors="replace")


def file_sha256(path: Path) -> str:
    """sha256 of a whole file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


__all__ = [
    "Base",
    "BundleInfo",
    "EXTENSION",
    "FASTAI_TOKENIZER",
    "build_bundle",
    "file_sha256",
    "generate_keypair",
    "key_fingerprint",
    "load_private_key",
    "load_public_key",
    "pack_bundle",
    "read_bundle",
    "read_card",
    "read_manifest",
    "verify_bundle",
]
