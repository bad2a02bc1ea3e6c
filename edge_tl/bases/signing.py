"""Ed25519 signing keys of base bundles."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from edge_tl.errors import BundleError
from edge_tl.store.files import atomic_writer


def key_fingerprint(public_key: Any) -> str:
    """`ed25519:<32 hex>`: the first 16 bytes of sha256 over the raw public key."""

    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:32]


def generate_keypair(private_path: Path, *, force: bool = False) -> tuple[Path, Path, str]:
    """Write a new Ed25519 signing key (PKCS#8 PEM, 0600) and `<key>.pub`; return paths + id."""

    private_path = Path(private_path)
    public_path = private_path.with_name(private_path.name.removesuffix(".key") + ".pub")
    for p in (private_path, public_path):
        if p.exists() and not force:
            raise BundleError(f"{p} already exists", "choose another --out or pass --force")
    private_path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    pub = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    with atomic_writer(private_path, 0o600) as f:
        f.write(pem)
    with atomic_writer(public_path, 0o644) as f:
        f.write(pub)
    return private_path, public_path, key_fingerprint(key.public_key())


def load_private_key(path: Path) -> Any:
    """Read an Ed25519 private key (PKCS#8 PEM) written by `edge-tl base keygen`."""

    data = _read_key_file(path, "signing key")
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise BundleError(
            f"signing key {path}: not an unencrypted PEM private key",
            "use a key made by `edge-tl base keygen`",
        ) from e
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"signing key {path}: not an Ed25519 key", "use `edge-tl base keygen`")
    return key


def load_public_key(path: Path) -> Any:
    """Read an Ed25519 public key (SubjectPublicKeyInfo PEM), e.g. a `.pub` from keygen."""

    data = _read_key_file(path, "trusted key")
    try:
        key = load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise BundleError(
            f"trusted key {path}: not a PEM public key",
            "pass the `.pub` file written by `edge-tl base keygen`",
        ) from e
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"trusted key {path}: not an Ed25519 key", "use `edge-tl base keygen`")
    return key


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise BundleError(f"{what} {path}: cannot read ({e.strerror})", "check the path") from e
    if len(data) > 64 * 1024:
        raise BundleError(f"{what} {path}: too large to be a key", "check the path")
    return data


__all__ = [
    "generate_keypair",
    "key_fingerprint",
    "load_private_key",
    "load_public_key",
]
