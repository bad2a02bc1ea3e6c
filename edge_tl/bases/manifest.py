"""Bundle manifest schema checks (untrusted input)."""

from __future__ import annotations

import json
import re
from typing import Any

from edge_tl.awd_lstm import lm_state_keys
from edge_tl.config import ModelConfig
from edge_tl.errors import BundleError

CORRUPT = "do not use this file; copy it again from its source"
DTYPES = {"fp16": ("F16", 2), "fp32": ("F32", 4)}
TIE_SOURCE = "0.encoder.weight"
TIE_ALIASES = ("0.encoder_dp.emb.weight", "1.decoder.weight")
MEMBER_LIMITS = {"vocab.json": 64 << 20, "weights.safetensors": 8 << 30, "card.md": 1 << 20}
REQUIRED_MEMBERS = ("vocab.json", "weights.safetensors")
MANIFEST_KEYS = (
    "format",
    "format_version",
    "name",
    "description",
    "architecture",
    "model_config",
    "vocab",
    "weights",
    "tokenizer",
    "corpus",
    "members",
    "created",
    "tool",
    "signer",
)
CFG_LIMITS = {"vocab_size": 1_000_000, "emb_sz": 8192, "n_hid": 16384, "n_layers": 16}
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
SHA_RE = re.compile(r"^[0-9a-f]{64}$")
SIGNER_RE = re.compile(r"^ed25519:[0-9a-f]{32}$")
CREATED_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")


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
    cfg = _validate_model_config(m["model_config"], where)
    _validate_payload(m, cfg, where)
    _validate_provenance(m, where)
    _validate_members(_field(m, "members", list, where), where)
    return cfg


def _validate_model_config(raw: Any, where: str) -> dict[str, Any]:
    """model_config: exactly its keys, each within its limits."""
    here = f"{where} model_config"
    cfg = _exact_keys(raw, CFG_LIMITS.keys() | {"pad_token", "tie_weights", "out_bias"}, here)
    for k, hi in CFG_LIMITS.items():
        if not 1 <= _field(cfg, k, int, here) <= hi:
            raise BundleError(f"{here}: {k} is outside 1..{hi}", CORRUPT)
    if not 0 <= _field(cfg, "pad_token", int, here) < cfg["vocab_size"]:
        raise BundleError(f"{here}: pad_token is outside the vocabulary", CORRUPT)
    _field(cfg, "tie_weights", bool, here)
    _field(cfg, "out_bias", bool, here)
    return cfg


def _validate_payload(m: dict[str, Any], cfg: dict[str, Any], where: str) -> None:
    """vocab and weights: the fixed member names, sizes, dtype and tied aliases."""
    voc = _exact_keys(m["vocab"], ("member", "size"), f"{where} vocab")
    if voc["member"] != "vocab.json" or _field(voc, "size", int, where) != cfg["vocab_size"]:
        raise BundleError(f"{where}: vocab must be vocab.json of vocab_size tokens", CORRUPT)
    w = _exact_keys(m["weights"], ("member", "dtype", "tied"), f"{where} weights")
    if w["member"] != "weights.safetensors" or w["dtype"] not in DTYPES:
        raise BundleError(f"{where}: weights must be weights.safetensors, fp16 or fp32", CORRUPT)
    tied = _field(w, "tied", dict, f"{where} weights")
    if any(a not in TIE_ALIASES or s != TIE_SOURCE for a, s in tied.items()):
        raise BundleError(f"{where}: weights.tied may only alias {TIE_SOURCE}", CORRUPT)


def _validate_provenance(m: dict[str, Any], where: str) -> None:
    """tokenizer, corpus, created, tool and signer."""
    for key in ("tokenizer", "corpus"):
        if _json_size(_field(m, key, dict, where)) > 16 * 1024:
            raise BundleError(f"{where}: {key} is larger than 16 KiB", CORRUPT)
    for key in ("description", "license"):
        if key not in m["corpus"] or not isinstance(m["corpus"][key], str):
            raise BundleError(f"{where}: corpus lacks a {key} string", CORRUPT)
    if not CREATED_RE.match(_field(m, "created", str, where)):
        raise BundleError(f"{where}: created is not YYYY-MM-DDTHH:MM:SSZ", CORRUPT)
    if len(_field(m, "tool", str, where)) > 64:
        raise BundleError(f"{where}: tool is longer than 64 characters", CORRUPT)
    signer = m["signer"]
    if signer is not None and not (isinstance(signer, str) and SIGNER_RE.match(signer)):
        raise BundleError(f"{where}: signer is not null or ed25519:<32 hex>", CORRUPT)


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
            not isinstance(off, list)
            or len(off) != 2
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


__all__ = [
    "check_name",
    "check_safetensors_header",
    "check_vocab",
    "loads_strict",
    "validate_manifest",
]
