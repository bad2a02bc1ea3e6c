"""Base-model bundles (docs/bundle-format.md): one verified file, JSON + safetensors, no pickle."""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from .config import ModelConfig, from_dict, to_dict
from .errors import BundleError
from .fsutil import atomic_writer
from .model import lm_state_keys

FORMAT_VERSION = 1
HEADER = struct.Struct("<8sIII")  # magic, version, manifest length, signature length
CHECKSUM_LEN = 32
CHUNK = 1 << 20
EXTENSION = ".etlb"
CORRUPT = "do not use this file; copy it again from its source"
TRUST_HINT = (
    "pass --trust PUBKEY_FILE with the packer's public key, "
    "or --allow-unsigned if you trust where the file came from"
)
DTYPES = {"fp16": ("F16", 2), "fp32": ("F32", 4)}

MAGIC = b"\x89ETL\r\n\x1a\n"
MAX_MANIFEST = 1 << 20
SIG_LEN = 64
TIE_SOURCE = "0.encoder.weight"
TIE_ALIASES = ("0.encoder_dp.emb.weight", "1.decoder.weight")
MEMBER_LIMITS = {"vocab.json": 64 << 20, "weights.safetensors": 8 << 30, "card.md": 1 << 20}
REQUIRED_MEMBERS = ("vocab.json", "weights.safetensors")
MANIFEST_KEYS = (
    "format", "format_version", "name", "description", "architecture", "model_config", "vocab",
    "weights", "tokenizer", "corpus", "members", "created", "tool", "signer",
)
CFG_LIMITS = {"vocab_size": 1_000_000, "emb_sz": 8192, "n_hid": 16384, "n_layers": 16}
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
SHA_RE = re.compile(r"^[0-9a-f]{64}$")
SIGNER_RE = re.compile(r"^ed25519:[0-9a-f]{32}$")
CREATED_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")

# fastai 2.8's text defaults (fastai.text.core), which is also how WT103 was tokenised.
FASTAI_TOKENIZER: dict[str, Any] = {
    "kind": "fastai",
    "tok": "spacy",
    "lang": "en",
    "rules": [
        "fix_html", "replace_rep", "replace_wrep", "spec_add_spaces", "rm_useless_spaces",
        "replace_all_caps", "replace_maj", "lowercase",
    ],
    "post_rules": ["replace_space"],
    "special_tokens": [
        "xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxrep", "xxwrep", "xxup", "xxmaj",
    ],
}


@dataclass
class Base:
    """A verified base model: config, vocabulary, fp32 fastai LM state dict and manifest."""

    name: str
    model_cfg: ModelConfig
    vocab: list[str]
    state_dict: dict[str, Any]  # key -> fp32 torch.Tensor (tied keys share one tensor)
    manifest: dict[str, Any]


@dataclass(frozen=True)
class BundleInfo:
    """What verifying a bundle established (no tensors loaded)."""

    path: Path
    manifest: dict[str, Any]
    model_cfg: ModelConfig
    signer: str | None  # fingerprint named by the manifest
    signature_verified: bool  # True only when checked against a trusted key
    size: int


# ---------------------------------------------------------------- keys


def key_fingerprint(public_key: Any) -> str:
    """`ed25519:<32 hex>`: the first 16 bytes of sha256 over the raw public key."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:32]


def generate_keypair(private_path: Path, *, force: bool = False) -> tuple[Path, Path, str]:
    """Write a new Ed25519 signing key (PKCS#8 PEM, 0600) and `<key>.pub`; return paths + id."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

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
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

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
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

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


# ---------------------------------------------------------------- writer


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
        name=name, model_cfg=model_cfg, vocab=vocab, state_dict=state_dict,
        tokenizer=tokenizer, corpus=corpus, description=description, dtype=dtype,
        private_key=key, card=card,
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
    import safetensors.torch
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
            "pass a fastai language-model state dict (keys as in edge_tl.model.lm_state_keys)",
        )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edge_tl")
    except PackageNotFoundError:
        return "0+unknown"


# ---------------------------------------------------------------- schema (untrusted input)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def loads_strict(data: bytes, where: str, expect: type = dict) -> Any:
    """Parse untrusted JSON: UTF-8 only, no duplicate keys, no NaN/Infinity, of type `expect`."""
    try:
        value = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_reject_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise BundleError(f"{where} is not valid JSON ({str(e)[:120]})", CORRUPT) from e
    if not isinstance(value, expect):
        raise BundleError(f"{where} is not a JSON {expect.__name__}", CORRUPT)
    return value


def check_name(name: Any, where: str) -> str:
    """A base name: lower-case letters, digits, `.`, `_`, `-`, at most 64 characters."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BundleError(
            f"{where}: name {name!r} is not allowed",
            "use 1-64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit",
        )
    return name


def _field(d: dict, key: str, types: type | tuple, where: str) -> Any:
    value = d[key]
    is_bool = isinstance(value, bool)
    wants_bool = types is bool or (isinstance(types, tuple) and bool in types)
    if not isinstance(value, types) or (is_bool and not wants_bool):
        raise BundleError(f"{where} key {key!r} has the wrong type", CORRUPT)
    return value


def _exact_keys(d: Any, keys: tuple | set, where: str) -> dict:
    if not isinstance(d, dict):
        raise BundleError(f"{where} is not a JSON object", CORRUPT)
    for k in d:
        if k not in keys:
            raise BundleError(f"{where} has unknown key {str(k)[:64]!r}", CORRUPT)
    for k in keys:
        if k not in d:
            raise BundleError(f"{where} lacks key {k!r}", CORRUPT)
    return d


def _json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")))


def validate_manifest(m: Any, where: str) -> dict[str, Any]:
    """Check every manifest rule of docs/bundle-format.md; return the model_config dict."""
    _exact_keys(m, MANIFEST_KEYS, where)
    if m["format"] != "edge-tl-base":
        raise BundleError(f"{where}: format is not 'edge-tl-base'", CORRUPT)
    _field(m, "format_version", int, where)
    check_name(m["name"], where)
    if len(_field(m, "description", str, where)) > 4096:
        raise BundleError(f"{where}: description is longer than 4096 characters", CORRUPT)
    if m["architecture"] != "AWD_LSTM":
        arch = str(m["architecture"])[:64]
        raise BundleError(f"{where}: architecture {arch!r} is not AWD_LSTM", CORRUPT)
    cfg = _exact_keys(m["model_config"], CFG_LIMITS.keys() | {"pad_token", "tie_weights",
                                                             "out_bias"}, f"{where} model_config")
    for k, hi in CFG_LIMITS.items():
        if not 1 <= _field(cfg, k, int, f"{where} model_config") <= hi:
            raise BundleError(f"{where} model_config: {k} is outside 1..{hi}", CORRUPT)
    if not 0 <= _field(cfg, "pad_token", int, f"{where} model_config") < cfg["vocab_size"]:
        raise BundleError(f"{where} model_config: pad_token is outside the vocabulary", CORRUPT)
    _field(cfg, "tie_weights", bool, f"{where} model_config")
    _field(cfg, "out_bias", bool, f"{where} model_config")
    voc = _exact_keys(m["vocab"], ("member", "size"), f"{where} vocab")
    if voc["member"] != "vocab.json" or _field(voc, "size", int, where) != cfg["vocab_size"]:
        raise BundleError(f"{where}: vocab must be vocab.json of vocab_size tokens", CORRUPT)
    w = _exact_keys(m["weights"], ("member", "dtype", "tied"), f"{where} weights")
    if w["member"] != "weights.safetensors" or w["dtype"] not in DTYPES:
        raise BundleError(f"{where}: weights must be weights.safetensors, fp16 or fp32", CORRUPT)
    tied = _field(w, "tied", dict, f"{where} weights")
    if any(a not in TIE_ALIASES or s != TIE_SOURCE for a, s in tied.items()):
        raise BundleError(f"{where}: weights.tied may only alias {TIE_SOURCE}", CORRUPT)
    for key in ("tokenizer", "corpus"):
        if _json_size(_field(m, key, dict, where)) > 16 * 1024:
            raise BundleError(f"{where}: {key} is larger than 16 KiB", CORRUPT)
    for key in ("description", "license"):
        if key not in m["corpus"] or not isinstance(m["corpus"][key], str):
            raise BundleError(f"{where}: corpus lacks a {key} string", CORRUPT)
    _validate_members(_field(m, "members", list, where), where)
    if not CREATED_RE.match(_field(m, "created", str, where)):
        raise BundleError(f"{where}: created is not YYYY-MM-DDTHH:MM:SSZ", CORRUPT)
    if len(_field(m, "tool", str, where)) > 64:
        raise BundleError(f"{where}: tool is longer than 64 characters", CORRUPT)
    if m["signer"] is not None and not (
        isinstance(m["signer"], str) and SIGNER_RE.match(m["signer"])
    ):
        raise BundleError(f"{where}: signer is not null or ed25519:<32 hex>", CORRUPT)
    return cfg


def _validate_members(members: list, where: str) -> None:
    if not 2 <= len(members) <= len(MEMBER_LIMITS):
        raise BundleError(f"{where}: members must list 2 or 3 entries", CORRUPT)
    seen: set[str] = set()
    offset = 0
    for entry in members:
        e = _exact_keys(entry, ("name", "offset", "size", "sha256"), f"{where} member")
        name = e["name"]
        if name not in MEMBER_LIMITS:
            raise BundleError(f"{where}: member name {str(name)[:80]!r} is not allowed", CORRUPT)
        if name in seen:
            raise BundleError(f"{where}: member {name} is listed twice", CORRUPT)
        seen.add(name)
        size = _field(e, "size", int, f"{where} member {name}")
        if not 0 <= size <= MEMBER_LIMITS[name]:
            raise BundleError(f"{where}: member {name} size {size} is outside its limit", CORRUPT)
        if _field(e, "offset", int, f"{where} member {name}") != offset:
            raise BundleError(
                f"{where}: member {name} offset {e['offset']} does not follow the previous "
                f"member (expected {offset})",
                CORRUPT,
            )
        if not isinstance(e["sha256"], str) or not SHA_RE.match(e["sha256"]):
            raise BundleError(f"{where}: member {name} sha256 is not 64 hex digits", CORRUPT)
        offset += size
    for name in REQUIRED_MEMBERS:
        if name not in seen:
            raise BundleError(f"{where}: member {name} is missing", CORRUPT)


def check_vocab(vocab: Any, cfg: ModelConfig | dict) -> str | None:
    """Why `vocab` does not fit `cfg` (None when it does)."""
    n = cfg["vocab_size"] if isinstance(cfg, dict) else cfg.vocab_size
    pad = cfg["pad_token"] if isinstance(cfg, dict) else cfg.pad_token
    if not isinstance(vocab, list):
        return "is not a list of strings"
    if len(vocab) != n:
        return f"has {len(vocab)} tokens, the config says {n}"
    for tok in vocab:
        if not isinstance(tok, str) or len(tok) > 1000:
            return "holds an entry that is not a string of at most 1000 characters"
    if vocab[pad] != "xxpad":
        return f"token {pad} (pad_token) is {vocab[pad][:40]!r}, not 'xxpad'"
    return None


def check_safetensors_header(
    hdr: bytes, data_len: int, cfg: ModelConfig, wmeta: dict
) -> str | None:
    """Why a safetensors header does not describe exactly the expected tensors (None if it does)."""
    try:
        table = loads_strict(hdr, "safetensors header")
    except BundleError as e:
        return e.message
    meta = table.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        return "safetensors __metadata__ must map strings to strings"
    expected = {k: s for k, s in lm_state_keys(cfg).items() if k not in wmeta["tied"]}
    missing = sorted(set(expected) - set(table))
    extra = sorted(set(table) - set(expected))
    if missing:
        return f"tensor {missing[0]} is missing"
    if extra:
        return f"unexpected tensor {extra[0][:80]!r}"
    st_dtype, itemsize = DTYPES[wmeta["dtype"]]
    spans = []
    for k, shape in expected.items():
        e = table[k]
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            return f"tensor {k} has a malformed entry"
        if e["dtype"] != st_dtype:
            return f"tensor {k} is {str(e['dtype'])[:8]}, the manifest says {wmeta['dtype']}"
        if e["shape"] != list(shape):
            return f"tensor {k} has shape {str(e['shape'])[:60]}, expected {list(shape)}"
        off = e["data_offsets"]
        if (
            not isinstance(off, list) or len(off) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in off)
        ):
            return f"tensor {k} has malformed data_offsets"
        numel = 1
        for d in shape:
            numel *= d
        if off[1] - off[0] != numel * itemsize:
            return f"tensor {k} data_offsets do not match its shape"
        spans.append((off[0], off[1]))
    pos = 0
    for a, b in sorted(spans):
        if a != pos:
            return "tensor data_offsets do not tile the data area"
        pos = b
    if pos != data_len:
        return "tensor data_offsets do not tile the data area"
    return None


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
    import os

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
            lay.label, "not signed, but a trusted key was given",
            "get a signed bundle from the packer, or import with --allow-unsigned",
        )
    from cryptography.exceptions import InvalidSignature

    fp = key_fingerprint(key)
    if signer != fp:
        raise _fail(
            lay.label, f"signed by {signer}, not by the trusted key {fp}",
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
    import safetensors.torch
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
