"""Export a trained classifier as ONNX (format: docs/onnx-format.md): one self-contained file,
or, with `external_data`, the graph plus a `.data` weights file onnxruntime maps into memory."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import struct
import tempfile
import warnings
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import onnx
import torch
from onnx import TensorProto
from onnxruntime.quantization import QuantType, quantize_dynamic

from edge_tl.bases.store import load_base
from edge_tl.config import to_dict
from edge_tl.deploy.artefact import DATA_ALIGN, DATA_MAGIC, DATA_VERSION, format_version
from edge_tl.deploy.network import fastai_classifier, seq_settings, stateless_wrapper
from edge_tl.deploy.onnx_head import add_to_graph
from edge_tl.deploy.tokenizer import SPECIAL_TOKENS, tokenizer_spec
from edge_tl.errors import ConfigError, EdgeTLError, ExportError
from edge_tl.store.files import atomic_write, remove_stale_parts
from edge_tl.store.keys import encrypt_for_device
from edge_tl.store.models import TrainedModel
from edge_tl.tfidf_head import MIN_DOCS, SPEC_VERSION

FORMAT_NAME = "edge_tl-onnx-classifier"
OPSET = 17
EXTERNAL_MIN_BYTES = 1024  # smaller initializers stay inside the graph file


def edge_tl_version() -> str:
    """The installed edge_tl version (recorded in every export)."""

    try:
        return version("edge_tl")
    except PackageNotFoundError:
        return "0+unknown"


def _base_vocab_keep(model: TrainedModel) -> tuple[list[int], list[str], set[str]]:
    """Ids of `model.vocab` to keep for --vocab base, the new vocab, and the base's words."""
    if not model.base:
        n = len(model.vocab) - len(SPECIAL_TOKENS)
        raise ExportError(
            f"model {model.name!r} was trained without a base, so all {n:,} words of its "
            "vocabulary were learned from your data and the default (--vocab base) keeps none",
            "export with --vocab full to write them, knowing they leave the device",
        )
    base_vocab = set(load_base(model.base).vocab)
    keep = [i for i, t in enumerate(model.vocab) if i < len(SPECIAL_TOKENS) or t in base_vocab]
    return keep, [model.vocab[i] for i in keep], base_vocab


def private_counts(model: TrainedModel, min_docs: int = MIN_DOCS) -> dict[str, int] | None:
    """How many tokens and TF-IDF n-grams `--vocab full` writes that `--vocab base` keeps back:
    tokens outside the base's vocabulary, n-grams with such a word or in < min_docs texts
    (None when the model's base is not installed here to compare with)."""
    if model.base:
        try:
            keep, _, public = _base_vocab_keep(model)
        except EdgeTLError:
            return None
    else:
        keep, public = list(range(len(SPECIAL_TOKENS))), set(SPECIAL_TOKENS)
    out = {"tokens": len(model.vocab) - len(keep), "ngrams": 0}
    head = model.tfidf_head
    if head is not None:
        try:
            out["ngrams"] = len(head.features) - len(head.shareable(public, min_docs))
        except ConfigError:  # a head without document counts: only the word rule applies
            out["ngrams"] = len(head.features) - len(head.shareable(public))
    return out


def build_metadata(
    model: TrainedModel, vocab: list[str], extra: dict[str, Any], head: Any = None
) -> dict[str, str]:
    """The metadata_props of an export (docs/onnx-format.md), values as JSON text."""
    bptt, max_len = seq_settings(model)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    provenance = {
        "name": model.name,
        "edge_tl_version": edge_tl_version(),
        "created": model.created,
        "exported": now,
        "base": model.base,
        "base_sha256": model.base_sha256,
        "dataset_fingerprint": model.dataset_fingerprint,
        "metrics": model.metrics,
        "model_cfg": to_dict(model.model_cfg),
        "lin_ftrs": list(model.lin_ftrs),
        "backward_base": None if model.backward is None else model.backward.base,
        "bptt": bptt,
        "max_len": max_len,
        **extra,
    }
    meta = {
        "edge_tl.format": FORMAT_NAME,
        "edge_tl.format_version": format_version(head),
        "edge_tl.labels": list(model.labels),
        "edge_tl.vocab": vocab,
        "edge_tl.tokenizer": tokenizer_spec(),
        "edge_tl.provenance": provenance,
    }
    if head is not None:
        meta["edge_tl.tfidf"] = {"version": SPEC_VERSION, **head.spec()}
    try:
        return {k: json.dumps(v, ensure_ascii=False) for k, v in meta.items()}
    except TypeError as e:
        raise ExportError(f"model {model.name!r}: metadata is not JSON-serialisable ({e})") from e


def to_onnx_bytes(
    model: TrainedModel,
    *,
    quantize: str | None = None,
    vocab: str = "base",
    min_docs: int = MIN_DOCS,
    tfidf_head: bool = True,
    tfidf_weight: float | None = None,
) -> bytes:
    """Serialised ONNX model (plaintext) for `model` (with its TF-IDF head, if it has one and
    `tfidf_head`: format 2, or 3 when stacked; `tfidf_weight` mixes at that share instead).

    Private by default (`vocab="base"`): tokens outside the base's vocabulary are dropped, and
    the head keeps only n-grams whose words are all in it and that occur in at least
    `min_docs` training texts; `vocab="full"` writes everything."""

    head = model.tfidf_head if tfidf_head else None
    if tfidf_weight is not None and head is None:
        raise ExportError(
            f"model {model.name!r}: --tfidf-weight needs the model's TF-IDF head",
            "drop --tfidf-weight, or --no-tfidf-head, or train with the head",
        )
    if head is not None:
        head = head.with_weight(tfidf_weight)

    if quantize not in (None, "int8"):
        raise ExportError(f"unknown quantization {quantize!r}", "use --quantize int8 or none")
    if vocab not in ("full", "base"):
        raise ExportError(f"unknown vocab mode {vocab!r}", "use --vocab full or --vocab base")
    if min_docs < 1:
        raise ExportError(f"--min-docs {min_docs} is below 1", "give a count of texts, e.g. 5")
    if len(model.vocab) != model.model_cfg.vocab_size:
        raise ExportError(
            f"model {model.name!r}: vocab has {len(model.vocab)} tokens but the embedding "
            f"{model.model_cfg.vocab_size} rows",
            "the stored model is inconsistent; retrain it",
        )
    keep, out_vocab, public = None, list(model.vocab), set()
    if vocab == "base":
        keep, out_vocab, public = _base_vocab_keep(model)
    wrapper = stateless_wrapper(model, keep)
    ids = torch.tensor([[2, 5, 6, 7], [2, 8, 1, 1]], dtype=torch.int64)  # (batch, seq)
    lens = torch.tensor([4, 2], dtype=torch.int64)  # (batch,)
    buf = io.BytesIO()
    # The tracer warns about nn.LSTM's shape checks; they are constant for this wrapper.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (ids, lens),
            buf,
            dynamo=False,
            opset_version=OPSET,
            input_names=["input_ids", "lengths"],
            output_names=["probs"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "seq"},
                "lengths": {0: "batch"},
                "probs": {0: "batch"},
            },
            do_constant_folding=True,
        )
    proto = onnx.load_from_string(buf.getvalue())
    if quantize == "int8":
        proto = _quantize_int8(proto)
    extra = {
        "quantize": quantize,
        "vocab_mode": vocab,
        "dropped_tokens": len(model.vocab) - len(out_vocab),
    }
    if head is not None:  # after quantizing: the head stays float32, exactly sklearn's
        if vocab == "base":  # no private-only n-gram; the share, not a stack fit to other parts
            n = len(head.features)
            head = head.restricted(public, min_docs).with_weight(head.weight)
            extra.update(dropped_ngrams=n - len(head.features), min_docs=min_docs)
        add_to_graph(proto, head)
    del proto.metadata_props[:]
    for k, v in build_metadata(model, out_vocab, extra, head).items():
        proto.metadata_props.add(key=k, value=v)
    proto.doc_string = f"edge_tl classifier {model.name!r}"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        first = str(e).splitlines()[0]
        raise ExportError(f"the exported graph failed onnx.checker ({first})") from e
    return proto.SerializeToString()


QUANT_PREFIX = "edge_tl_q-"  # + pid: quantize_dynamic works on files in a temp folder


def _remove_dead_quantize_dirs() -> None:
    """Delete the quantization temp folders of killed exports: they hold the unquantized
    graph (weights, no vocabulary), which must not outlive its process."""
    for d in Path(tempfile.gettempdir()).glob(f"{QUANT_PREFIX}*"):
        pid = d.name.removeprefix(QUANT_PREFIX).split("-")[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            continue  # another user's live process


def _quantize_int8(proto):
    """Dynamic int8 quantization; the LSTMs must become DynamicQuantizeLSTM."""

    _remove_dead_quantize_dirs()
    with tempfile.TemporaryDirectory(prefix=f"{QUANT_PREFIX}{os.getpid()}-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(proto, src)
        # quantize_dynamic logs a pre-processing hint through the root logger; it does not apply.
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
        out = onnx.load(dst)
    ops = {n.op_type for n in out.graph.node}
    if "LSTM" in ops or "DynamicQuantizeLSTM" not in ops:
        raise ExportError("int8 quantization left the LSTMs in float", "export without --quantize")
    return out


def data_header(digest: bytes) -> bytes:
    """The 4096-byte header of an external-data file whose tensor region hashes to `digest`."""
    if len(digest) != 32:
        raise ValueError("digest must be a 32-byte sha256")
    head = DATA_MAGIC + struct.pack("<I", DATA_VERSION) + bytes(4) + digest
    return head + bytes(DATA_ALIGN - len(head))


def split_external(onnx_bytes: bytes, location: str) -> tuple[bytes, bytes]:
    """(graph file, data file) of the external-data layout for a serialised export."""

    if not location or Path(location).name != location or location in (".", ".."):
        raise ExportError(f"external data file name {location!r} is not a plain file name")
    proto = onnx.load_from_string(onnx_bytes)
    region = bytearray()
    for init in proto.graph.initializer:
        raw = init.raw_data
        if len(raw) < EXTERNAL_MIN_BYTES:
            continue
        region += bytes(-len(region) % DATA_ALIGN)  # page-align every tensor
        offset = DATA_ALIGN + len(region)
        region += raw
        init.ClearField("raw_data")
        init.data_location = TensorProto.EXTERNAL
        del init.external_data[:]
        for k, v in (("location", location), ("offset", str(offset)), ("length", str(len(raw)))):
            init.external_data.add(key=k, value=v)
    digest = hashlib.sha256(region).digest()
    desc = {"location": location, "size": DATA_ALIGN + len(region), "sha256": digest.hex()}
    proto.metadata_props.add(key="edge_tl.external_data", value=json.dumps(desc))
    return proto.SerializeToString(), data_header(digest) + bytes(region)


# Above this size a one-file export starts slowly: onnxruntime parses and copies every weight
# (a WT103-size fp32 file, 178 MB: 0.65 s to the first answer against 0.39 s for the graph with
# memory-mapped weights; docs/benchmarks.md). Int8 WT103 (45 MB) starts in 0.35 s as one file.
EXTERNAL_ABOVE = 64 * 2**20


def export_onnx(
    model: TrainedModel,
    out: Path,
    *,
    quantize: str | None = None,
    encrypt: bool = False,
    vocab: str = "base",
    min_docs: int = MIN_DOCS,
    external_data: bool | None = None,
    tfidf_head: bool = True,
    tfidf_weight: float | None = None,
) -> Path:
    """Write `model` as ONNX to `out` (int8 / age-encrypted / base-vocab / external data).

    external_data None: two files when the model is over EXTERNAL_ABOVE bytes and not
    encrypted (their start is the fast one), else one file."""
    out = Path(out)
    if not out.parent.is_dir():
        raise ExportError(f"folder {out.parent} does not exist", "create it or pick another --out")
    if encrypt and external_data:
        raise ExportError(
            "--encrypt and --external-data do not go together: an encrypted export is one file "
            "that is decrypted in memory",
            "drop one of the two flags",
        )
    data = to_onnx_bytes(
        model,
        quantize=quantize,
        vocab=vocab,
        min_docs=min_docs,
        tfidf_head=tfidf_head,
        tfidf_weight=tfidf_weight,
    )
    if external_data is None:
        external_data = not encrypt and len(data) > EXTERNAL_ABOVE
    if encrypt:
        data = encrypt_for_device(data)
    weights, weights_path = None, out.with_name(f"{out.name}.data")
    if external_data:
        data, weights = split_external(data, weights_path.name)
    # A killed earlier export of this file left its temp copy: drop it (only ours, by name).
    remove_stale_parts(out.parent, out.name)
    # Private by default: even a plaintext export holds the fine-tuned vocabulary.
    if weights is not None:
        # Weights first: a kill between the two writes leaves a pair that predict rejects by
        # its digest, never a graph silently reading another export's weights.
        remove_stale_parts(out.parent, weights_path.name)
        atomic_write(weights_path, weights, mode=0o600)
    atomic_write(out, data, mode=0o600)
    return out


__all__ = [
    "DATA_ALIGN",
    "DATA_MAGIC",
    "EXTERNAL_ABOVE",
    "FORMAT_NAME",
    "MIN_DOCS",
    "build_metadata",
    "data_header",
    "export_onnx",
    "fastai_classifier",
    "private_counts",
    "split_external",
    "stateless_wrapper",
    "to_onnx_bytes",
]
