"""Classify texts with an exported model using onnxruntime and edge_tl.deploy.tokenizer only.

This module must never import torch, fastai or spacy (tests check sys.modules).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as state

from edge_tl.deploy.tokenizer import SPECIAL_TOKENS, Encoder, tokenizer_from_spec
from edge_tl.errors import DataError, ExportError
from edge_tl.store.keys import decrypt_on_device
from edge_tl.tfidf_head import SPEC_VERSION, NgramCounter, feed_arrays, spec_problem

FORMAT_NAME = "edge_tl-onnx-classifier"
FORMAT_VERSIONS = (1, 2)  # 2: with the TF-IDF head
_AGE_MAGIC = b"age-encryption.org/v1"
_ARMOR_BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
# Rows of similar length go together so little compute is spent on padding.
MAX_BATCH = 32
MAX_BATCH_TOKENS = 32 * 512
# External-data layout (docs/onnx-format.md, "External-data variant").
DATA_MAGIC = b"ETLXDAT1"
DATA_VERSION = 1
DATA_ALIGN = 4096  # header size and tensor alignment: page-aligned, so onnxruntime can mmap


@dataclass(frozen=True)
class Prediction:
    """One text's predicted label and the probability of every label."""

    label: str
    probs: dict[str, float]

    @property
    def score(self) -> float:
        """Probability of the predicted label."""
        return self.probs[self.label]


@dataclass(frozen=True)
class ModelMeta:
    """The validated metadata of an exported model (docs/onnx-format.md)."""

    format_version: int
    labels: list[str]
    vocab: list[str]
    tokenizer: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)
    external_data: dict[str, Any] | None = None
    tfidf: dict[str, Any] | None = None  # version 2: the TF-IDF head's spec


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
            f"{' and '.join(map(str, FORMAT_VERSIONS))}",
            hint,
        )
    tfidf = None
    if version == 2:
        tfidf = _json(props, "edge_tl.tfidf", dict, "an object")
        problem = (
            "version must be 1" if tfidf.get("version") != SPEC_VERSION else spec_problem(tfidf)
        )
        if problem:
            raise ExportError(f"model metadata: edge_tl.tfidf: {problem}", "re-export the model")
    labels = _json(props, "edge_tl.labels", list, "a list of label names")
    if (
        not labels
        or not all(isinstance(x, str) and x for x in labels)
        or len(set(labels)) != len(labels)
    ):
        raise ExportError("model metadata: edge_tl.labels must be distinct non-empty strings")
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


def _ort_errors() -> tuple[type[BaseException], ...]:
    """onnxruntime's own exception classes (they derive from Exception, not RuntimeError)."""

    names = (
        "Fail",
        "InvalidArgument",
        "InvalidGraph",
        "InvalidProtobuf",
        "NoModel",
        "NoSuchFile",
        "NotImplemented",
        "RuntimeException",
        "EngineError",
        "NotFound",
    )
    found = tuple(c for n in names if isinstance(c := getattr(state, n, None), type))
    return (RuntimeError, ValueError, *found)


class Classifier:
    """An exported edge_tl model, ready to classify texts (onnxruntime only)."""

    def __init__(self, path: Path | str, *, threads: int | None = None) -> None:

        self.path = Path(path)
        src = model_source(self.path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self._sess = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
        except _ort_errors() as e:
            if "external" in str(e).lower():
                raise ExportError(
                    f"the weights file that {self.path} refers to is missing or unreadable",
                    "keep its .data file beside the model, or export again",
                ) from e
            raise ExportError(
                f"{self.path} is not a readable ONNX model (corrupted or not a model file)",
                "re-export it with `edge-tl export`",
            ) from e
        self.meta = read_metadata(self._sess.get_modelmeta().custom_metadata_map)
        if self.meta.external_data is not None:
            if isinstance(src, bytes):
                raise ExportError(
                    f"{self.path}: an encrypted export cannot use external data",
                    "re-export it with `edge-tl export`",
                )
            check_external_data(self.path, self.meta.external_data)
        self._check_graph()
        self.labels = list(self.meta.labels)
        self._encoder = Encoder(tokenizer_from_spec(self.meta.tokenizer), self.meta.vocab)
        self._pad = int(self.meta.tokenizer.get("pad_id", 1))
        self._ngrams = None
        if self.meta.tfidf is not None:
            self._ngrams = NgramCounter.from_spec(self.meta.tfidf)

    def _check_graph(self) -> None:
        ins = {i.name: i for i in self._sess.get_inputs()}
        outs = {o.name: o for o in self._sess.get_outputs()}
        want_in = {"input_ids": ("tensor(int64)", 2), "lengths": ("tensor(int64)", 1)}
        want_out = ["probs"]
        if self.meta.format_version == 2:
            want_in.update(tfidf_ids=("tensor(int64)", 2), tfidf_counts=("tensor(float)", 2))
            want_out += ["probs_neural", "probs_tfidf"]
        ok = (
            set(ins) == set(want_in)
            and set(outs) == set(want_out)
            and all((ins[k].type, len(ins[k].shape)) == v for k, v in want_in.items())
            and all(outs[k].type == "tensor(float)" and len(outs[k].shape) == 2 for k in want_out)
        )
        for o in outs.values() if ok else ():
            if isinstance(o.shape[1], int) and o.shape[1] != len(self.meta.labels):
                ok = False
        if not ok:
            raise ExportError(
                f"{self.path}: graph inputs/outputs are not those of an edge_tl classifier",
                "re-export the model with `edge-tl export`",
            )

    @property
    def provenance(self) -> dict[str, Any]:
        """Where the model came from (base, dataset fingerprint, metrics, versions)."""
        return dict(self.meta.provenance)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text; an empty text is an error."""
        if isinstance(texts, str):
            texts = [texts]
        out = []
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise DataError(f"text {i + 1} is empty", "give some text to classify")
            out.append(self._encoder.encode(t))
        return out

    def ngram_counts(self, texts: Sequence[str]) -> list[dict[int, int]] | None:
        """The TF-IDF head's input for each text (None for a model without a head)."""
        if self._ngrams is None:
            return None
        return [self._ngrams(t) for t in ([texts] if isinstance(texts, str) else texts)]

    def predict_proba(self, texts: Sequence[str]):
        """Probabilities, a float32 array (n_texts, n_class)."""
        return self.proba_ids(self.encode(texts), self.ngram_counts(texts))

    def proba_ids(
        self, ids: Sequence[Sequence[int]], ngrams: Sequence[dict[int, int]] | None = None
    ):
        """Probabilities for already-encoded texts (and, with a TF-IDF head, their
        `ngram_counts`), batched by length."""
        import numpy as np

        if (ngrams is None) != (self._ngrams is None) or (
            ngrams is not None and len(ngrams) != len(ids)
        ):
            raise DataError(
                "a model with a TF-IDF head needs the n-gram counts of every text "
                "(and one without takes none)",
                "call predict_proba(texts)",
            )

        n = len(ids)
        probs = np.zeros((n, len(self.labels)), dtype=np.float32)
        order = sorted(range(n), key=lambda i: len(ids[i]))
        i = 0
        while i < n:
            # Longest row last in the sorted run decides the padded width.
            j = i + 1
            while (
                j < n
                and j - i < MAX_BATCH
                and (j - i + 1) * len(ids[order[j]]) <= max(MAX_BATCH_TOKENS, len(ids[order[j]]))
            ):
                j += 1
            rows = order[i:j]
            probs[rows] = self._run(
                ["probs"],
                [ids[k] for k in rows],
                None if ngrams is None else [ngrams[k] for k in rows],
            )[0]
            i = j
        return probs

    def outputs(self, texts: Sequence[str], names: Sequence[str] = ("probs",)) -> list[Any]:
        """Named graph outputs for `texts`, run as one batch (version 2 also has
        `probs_neural` and `probs_tfidf`: the network's and the TF-IDF head's own)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self._run(list(names), self.encode(texts), self.ngram_counts(texts))

    def _run(
        self,
        names: list[str],
        ids: Sequence[Sequence[int]],
        ngrams: Sequence[dict[int, int]] | None,
    ) -> list[Any]:
        """One onnxruntime call: right-padded ids, lengths and, with a head, its n-grams."""
        import numpy as np

        batch = np.full((len(ids), max(map(len, ids))), self._pad, dtype=np.int64)  # (b, seq)
        for r, row in enumerate(ids):
            batch[r, : len(row)] = row
        feeds = {"input_ids": batch, "lengths": np.array([len(r) for r in ids], dtype=np.int64)}
        if ngrams is not None:
            pad = len(self.meta.tfidf["features"])
            feeds["tfidf_ids"], feeds["tfidf_counts"] = feed_arrays(ngrams, pad)
        try:
            return self._sess.run(names, feeds)
        except _ort_errors() as e:
            # e.g. a vocab longer than the embedding: the file is inconsistent, not the text.
            raise ExportError(
                f"{self.path}: the model failed to run ({str(e).splitlines()[0][:200]})",
                "re-export the model with `edge-tl export`",
            ) from e

    def predict(self, texts: Sequence[str] | str) -> list[Prediction]:
        """Predicted label and per-label probabilities for each text."""
        probs = self.predict_proba([texts] if isinstance(texts, str) else texts)
        out = []
        for row in probs:
            d = {lab: float(p) for lab, p in zip(self.labels, row, strict=True)}
            out.append(Prediction(self.labels[int(row.argmax())], d))
        return out


__all__ = [
    "Classifier",
    "ModelMeta",
    "Prediction",
    "check_external_data",
    "model_source",
    "read_metadata",
    "read_model_bytes",
]
