"""Classify texts with an exported model using onnxruntime and edge_tl.deploy.tokenizer only.

This module must never import torch, fastai or spacy (tests check sys.modules).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as state

from edge_tl.deploy.artefact import check_external_data, model_source, read_metadata
from edge_tl.deploy.tokenizer import Encoder, tokenizer_from_spec
from edge_tl.errors import DataError, DeviceError, ExportError
from edge_tl.tfidf_head import NgramCounter, feed_arrays

# Rows of similar length go together so little compute is spent on padding.
MAX_BATCH = 32
MAX_BATCH_TOKENS = 32 * 512
# External-data layout (docs/onnx-format.md, "External-data variant").
# Short names of onnxruntime's execution providers (`--provider`); a full name works too.
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


@dataclass(frozen=True)
class Prediction:
    """One text's predicted label and the probability of every label."""

    label: str
    probs: dict[str, float]

    @property
    def score(self) -> float:
        """Probability of the predicted label."""
        return self.probs[self.label]


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


def resolve_providers(names: Sequence[str] | None) -> list[str]:
    """onnxruntime provider names for `names` (short or full; default CPU), each available in
    this onnxruntime build; the CPU provider always comes last as the fallback."""
    available = ort.get_available_providers()
    out = []
    for name in names or ["cpu"]:
        full = PROVIDERS.get(name.lower(), name)
        if full not in available:
            raise DeviceError(
                f"execution provider {name!r} is not available in this onnxruntime "
                f"(it has: {', '.join(available)})",
                "install onnxruntime-gpu (CUDA, TensorRT; on a Jetson the NVIDIA build) or use "
                "--provider cpu",
            )
        out.append(full)
    return [p for p in out if p != PROVIDERS["cpu"]] + [PROVIDERS["cpu"]]


class Classifier:
    """An exported edge_tl model, ready to classify texts (onnxruntime only).

    Follows scikit-learn's habits: `predict` returns labels, `predict_proba` an array
    (n_texts, n_class) whose columns are `classes_`; `classify` gives both per text."""

    def __init__(
        self,
        path: Path | str,
        *,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
    ) -> None:
        self.path = Path(path)
        providers = resolve_providers(providers)
        src = model_source(self.path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self._sess = ort.InferenceSession(src, opts, providers=providers)
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
        if self.meta.format_version >= 2:
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
    def classes_(self) -> Any:
        """The labels, in the order of predict_proba's columns (a numpy array)."""
        import numpy as np

        return np.array(self.labels)

    @property
    def providers(self) -> list[str]:
        """The execution providers the session runs on, first choice first."""
        return list(self._sess.get_providers())

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
        """Probabilities, a float32 array (n_texts, n_class); columns in `classes_` order."""
        return self.proba_ids(self.encode(texts), self.ngram_counts(texts))

    def proba_ids(
        self, ids: Sequence[Sequence[int]], ngrams: Sequence[dict[int, int]] | None = None
    ):
        """Probabilities for already-encoded texts (and, with a TF-IDF head, their
        `ngram_counts`), batched by length."""
        return self.outputs_ids(ids, ngrams, ("probs",))[0]

    def outputs_batched(self, texts: Sequence[str], names: Sequence[str] = ("probs",)) -> list:
        """Named graph outputs for `texts`, batched by length like predict_proba."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self.outputs_ids(self.encode(texts), self.ngram_counts(texts), names)

    def outputs_ids(
        self,
        ids: Sequence[Sequence[int]],
        ngrams: Sequence[dict[int, int]] | None,
        names: Sequence[str],
    ) -> list:
        """Graph outputs `names` for encoded texts, rows of similar length run together."""
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
        outs = [np.zeros((n, len(self.labels)), dtype=np.float32) for _ in names]
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
            got = self._run(
                list(names),
                [ids[k] for k in rows],
                None if ngrams is None else [ngrams[k] for k in rows],
            )
            for out, part in zip(outs, got, strict=True):
                out[rows] = part
            i = j
        return outs

    def outputs(self, texts: Sequence[str], names: Sequence[str] = ("probs",)) -> list[Any]:
        """Named graph outputs for `texts`, run as one batch (versions 2 and 3 also have
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

    def classify(self, texts: Sequence[str] | str) -> list[Prediction]:
        """Predicted label and per-label probabilities for each text."""
        probs = self.predict_proba([texts] if isinstance(texts, str) else texts)
        return [self.prediction(row) for row in probs]

    def prediction(self, row: Any) -> Prediction:
        """The Prediction of one row of predict_proba."""
        d = {lab: float(p) for lab, p in zip(self.labels, row, strict=True)}
        return Prediction(self.labels[int(row.argmax())], d)

    def predict(self, texts: Sequence[str] | str) -> list[str]:
        """The predicted label of each text."""
        return [p.label for p in self.classify(texts)]


__all__ = [
    "Classifier",
    "Prediction",
    "resolve_providers",
]
