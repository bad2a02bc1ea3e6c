"""An exported model file as it lies on disk (docs/onnx-format.md): its metadata, validated
as untrusted input; its external-data file; decryption of an age-encrypted export in memory."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_tl.deploy.tokenizer import SPECIAL_TOKENS
from edge_tl.errors import ExportError
from edge_tl.store.keys import decrypt_on_device
from edge_tl.tfidf_head import SPEC_VERSION, TfidfHead, spec_problem

FORMAT_NAME = "edge_tl-onnx-classifier"
FORMAT_VERSIONS = (1, 2, 3)  # 2: with the TF-IDF head; 3: its mix stacked
_AGE_MAGIC = b"age-encryption.org/v1"
_ARMOR_BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
# External-data layout (docs/onnx-format.md, "External-data variant").
DATA_MAGIC = b"ETLXDAT1"
DATA_VERSION = 1
DATA_ALIGN = 4096  # header size and tensor alignment: page-aligned, so onnxruntime can mmap


@dataclass(frozen=True)
class ModelMeta:
    """The validated metadata of an exported model (docs/onnx-format.md)."""

    format_version: int
    labels: list[str]
    vocab: list[str]
    tokenizer: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)
    external_data: dict[str, Any] | None = None
    tfidf: dict[str, Any] | None = None  # versions 2 and 3: the TF-IDF head's spec

    @property
    def mix(self) -> str | None:
        """How the file mixes network and head: "stacked" (v3), "share" (v2), None (v1)."""
        if self.tfidf is None:
            return None
        return "stacked" if "stack" in self.tfidf else "share"


def format_version(head: TfidfHead | None) -> int:
    """The version an export with `head` is written in: 1 without a head, 2 with the head at a
    share, 3 with its mix stacked."""
    return 1 if head is None else 2 if head.stack is None else 3


def _json(props: Mapping[str, str], key: str, kind: type, what: str) -> Any:
    raw = props.get(key)
    if raw is None:
        raise ExportError(f"model metadata has no {key}", "re-export the model with edge-tl export")
    if not isinstance(raw, str):
        raise ExportError(f"model metadata: {key} is not text")
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise ExportError(f"model metadata: {key} is not valid JSON", "re-export the model") from e
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ExportError(f"model metadata: {key} must be {what}", "re-export the model")
    return value


def _tfidf_problem(tfidf: dict[str, Any], version: int, n_labels: int) -> str | None:
    """What is wrong with a v2/v3 head spec: v3, and only v3, carries the stacked mix."""
    if tfidf.get("version") != SPEC_VERSION:
        return "version must be 1"
    if ("stack" in tfidf) != (version == 3):
        return f"a stack is {'missing' if version == 3 else 'not allowed'} in format {version}"
    return spec_problem(tfidf, n_class=n_labels)


def read_metadata(props: Mapping[str, str]) -> ModelMeta:
    """Validate an export's metadata_props; raise ExportError for anything not format 1."""
    fmt = _json(props, "edge_tl.format", str, "a string") if "edge_tl.format" in props else None
    if fmt != FORMAT_NAME:
        raise ExportError(
            "this is not an edge_tl model (no edge_tl format marker in its metadata)",
            "give a file written by `edge-tl export`",
        )
    version = _json(props, "edge_tl.format_version", int, "an integer")
    if version not in FORMAT_VERSIONS:
        hint = "upgrade edge_tl" if version > max(FORMAT_VERSIONS) else "re-export it"
        raise ExportError(
            f"model file is format version {version}; this edge_tl reads versions "
            f"{', '.join(map(str, FORMAT_VERSIONS))}",
            hint,
        )
    labels = _json(props, "edge_tl.labels", list, "a list of label names")
    if (
        not labels
        or not all(isinstance(x, str) and x for x in labels)
        or len(set(labels)) != len(labels)
    ):
        raise ExportError("model metadata: edge_tl.labels must be distinct non-empty strings")
    tfidf = None
    if version >= 2:
        tfidf = _json(props, "edge_tl.tfidf", dict, "an object")
        problem = _tfidf_problem(tfidf, version, len(labels))
        if problem:
            raise ExportError(f"model metadata: edge_tl.tfidf: {problem}", "re-export the model")
    vocab = _json(props, "edge_tl.vocab", list, "a list of tokens")
    if not all(isinstance(t, str) for t in vocab) or vocab[: len(SPECIAL_TOKENS)] != SPECIAL_TOKENS:
        raise ExportError("model metadata: edge_tl.vocab must be tokens starting with xxunk..xxmaj")
    if len(set(vocab[: len(SPECIAL_TOKENS)]) & set(vocab[len(SPECIAL_TOKENS) :])):
        raise ExportError("model metadata: edge_tl.vocab repeats a special token")
    tokenizer = _json(props, "edge_tl.tokenizer", dict, "an object")
    provenance = _json(props, "edge_tl.provenance", dict, "an object")
    ext = None
    if "edge_tl.external_data" in props:
        ext = _json(props, "edge_tl.external_data", dict, "an object")
        loc, size, digest = ext.get("location"), ext.get("size"), ext.get("sha256")
        plain = isinstance(loc, str) and loc not in ("", ".", "..") and not re.search(r"[/\\]", loc)
        if not (
            plain
            and isinstance(size, int)
            and not isinstance(size, bool)
            and size >= DATA_ALIGN
            and isinstance(digest, str)
            and re.fullmatch(r"[0-9a-f]{64}", digest)
        ):
            raise ExportError(
                "model metadata: edge_tl.external_data must name a file beside "
                "the model, its size and its sha256",
                "re-export the model",
            )
    return ModelMeta(version, labels, vocab, tokenizer, provenance, ext, tfidf)


def check_external_data(model_path: Path, ext: Mapping[str, Any]) -> Path:
    """The data file of an external-data export, after checking it belongs to this graph."""
    data = Path(model_path).with_name(ext["location"])
    try:
        with data.open("rb") as f:
            head = f.read(DATA_ALIGN)
            size = f.seek(0, 2)
    except OSError as e:
        raise ExportError(
            f"cannot read {data}, the weights of {model_path} ({e.strerror})",
            "keep the .data file beside the model, or export again",
        ) from e
    if head[:8] != DATA_MAGIC or len(head) < 48:
        raise ExportError(
            f"{data} is not an edge_tl weights file", "export the model again and copy both files"
        )
    version = int.from_bytes(head[8:12], "little")
    if version != DATA_VERSION:
        raise ExportError(
            f"{data} is weights format {version}; this edge_tl reads {DATA_VERSION}",
            "re-export the model with this edge_tl",
        )
    if head[16:48].hex() != ext["sha256"] or size != ext["size"]:
        raise ExportError(
            f"{data} does not belong to {model_path} (another export's weights, or a truncated "
            "or edited copy)",
            "export the model again and copy both files together",
        )
    return data


def read_model_bytes(path: Path | str) -> bytes:
    """The plaintext ONNX bytes of `path`, decrypting an age-encrypted export in memory."""
    src = model_source(path)
    return src if isinstance(src, bytes) else Path(src).read_bytes()


def model_source(path: Path | str) -> str | bytes:
    """What onnxruntime should load: the path of a plaintext export, or decrypted bytes."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(64)
            if not (head.startswith(_AGE_MAGIC) or head.lstrip().startswith(_ARMOR_BEGIN)):
                # Loading from the path is about twice as fast as from a bytes copy.
                return str(path)
            data = head + f.read()
    except FileNotFoundError as e:
        raise ExportError(f"model file {path} does not exist", "check the path") from e
    except IsADirectoryError as e:
        raise ExportError(f"{path} is a folder, not a model file", "give the .onnx file") from e
    except OSError as e:
        raise ExportError(f"cannot read model file {path} ({e.strerror})") from e

    return decrypt_on_device(data, what=f"model {path}")


__all__ = [
    "DATA_ALIGN",
    "DATA_MAGIC",
    "DATA_VERSION",
    "FORMAT_NAME",
    "FORMAT_VERSIONS",
    "format_version",
    "ModelMeta",
    "check_external_data",
    "model_source",
    "read_metadata",
    "read_model_bytes",
]
