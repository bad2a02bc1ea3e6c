"""The TF-IDF + logistic-regression head a trained classifier carries (docs/onnx-format.md, v2).

`train` fits it on the classifier's own training rows (seconds); the exported graph averages its
probabilities with the network's. On IMDb that mean beats the network alone at every measured
size and TF-IDF + LR alone up to 5k labels (bench/results/compare-semi-gpu). Reading it needs
neither scikit-learn nor torch: n-grams are counted here in pure Python, the rest is numpy or
ONNX.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edge_tl.errors import ConfigError

TOKEN_PATTERN = r"(?u)\b\w\w+\b"  # scikit-learn's default word pattern
SPEC_VERSION = 1
# The default export keeps an n-gram only if at least this many training texts hold it.
MIN_DOCS = 5
MISSING_LABEL_INTERCEPT = -30.0  # a label without training rows: sigmoid ~ 1e-13
STACK_EPS = 1e-6  # the stacked mix clips probabilities to [eps, 1 - eps] before the log-odds


@dataclass(frozen=True)
class Stack:
    """The stacked mix (docs/onnx-format.md, v3): softmax(coef @ [log-odds of the network's
    probabilities; of the head's] + intercept), a logistic regression fitted on held-out rows."""

    coef: Any  # float32 (n_class, 2 * n_class): network columns first
    intercept: Any  # float32 (n_class,)

    def spec(self) -> dict[str, Any]:
        """The JSON part (`stack` of the head's spec)."""
        return {"coef": self.coef.tolist(), "intercept": self.intercept.tolist()}

    def proba(self, neural: Any, tfidf: Any) -> Any:
        """The mix's probabilities (float32, (n, n_class)), computed as the graph computes them."""
        import numpy as np

        z = stack_features(neural, tfidf) @ self.coef.T + self.intercept
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def stack_features(neural: Any, tfidf: Any) -> Any:
    """Both parts' per-class log-odds side by side (float32, (n, 2 * n_class)), as the graph
    computes them: log(p) - log(1 - p) of p clipped to [STACK_EPS, 1 - STACK_EPS]."""
    import numpy as np

    def log_odds(p: Any) -> Any:
        p = np.clip(np.asarray(p, dtype=np.float32), STACK_EPS, np.float32(1 - STACK_EPS))
        return np.log(p) - np.log(np.float32(1) - p)

    return np.hstack([log_odds(neural), log_odds(tfidf)])


@dataclass
class TfidfHead:
    """Features, idf and one-vs-rest logistic rows (model label order) of a fitted head."""

    features: list[str]
    idf: Any  # float32 (F,)
    coef: Any  # float32 (n_class, F)
    intercept: Any  # float32 (n_class,)
    lowercase: bool = True
    token_pattern: str = TOKEN_PATTERN
    ngram_range: tuple[int, int] = (1, 2)
    sublinear_tf: bool = True
    weight: float = 0.5
    c: float = 0.0
    cv_accuracy: float = float("nan")
    doc_freq: Any = None  # int32 (F,): training texts each n-gram occurs in (None: unknown)
    stack: Stack | None = None  # the mix when set; else `weight` x head + (1 - weight) x network

    def spec(self) -> dict[str, Any]:
        """The JSON part (model header `tfidf_head`, ONNX `edge_tl.tfidf` without `version`)."""
        cv = None if math.isnan(self.cv_accuracy) else self.cv_accuracy
        stack = {} if self.stack is None else {"stack": self.stack.spec()}
        return {
            "features": list(self.features),
            "lowercase": self.lowercase,
            "token_pattern": self.token_pattern,
            "ngram_range": list(self.ngram_range),
            "sublinear_tf": self.sublinear_tf,
            "norm": "l2",
            "weight": self.weight,
            "c": self.c,
            "cv_accuracy": cv,
            **stack,
        }

    def mix(self, neural: Any, tfidf: Any) -> Any:
        """What the exported graph's `probs` is, from the network's and this head's
        probabilities (n, n_class): the stacked mix if the head has one, else the share."""
        import numpy as np

        if self.stack is not None:
            return self.stack.proba(neural, tfidf)
        w = np.float32(self.weight)
        return w * np.asarray(tfidf, dtype=np.float32) + (1 - w) * np.asarray(neural, np.float32)

    def with_weight(self, weight: float | None) -> TfidfHead:
        """The same head mixed at another weight, instead of any stacked mix (None: unchanged);
        a weight outside [0, 1] is refused."""

        if weight is None:
            return self
        if not 0.0 <= weight <= 1.0:
            raise ConfigError(
                f"TF-IDF head weight {weight} is outside [0, 1]",
                "pass a share between 0 (the network alone) and 1 (TF-IDF alone)",
            )
        return dataclasses.replace(self, weight=float(weight), stack=None)

    def restricted(self, words: set[str], min_docs: int = 1) -> TfidfHead:
        """The head without every n-gram that has a word outside `words` or occurs in fewer
        than `min_docs` training texts (the private-by-default export): no string seen only in
        private data leaves in the file. Dropped n-grams then count for nothing."""
        import numpy as np

        keep = self.shareable(words, min_docs)
        idx = np.asarray(keep, dtype=np.int64)
        return dataclasses.replace(
            self,
            features=[self.features[i] for i in keep],
            idf=self.idf[idx],
            coef=self.coef[:, idx],
            doc_freq=None if self.doc_freq is None else self.doc_freq[idx],
        )

    def shareable(self, words: set[str], min_docs: int = 1) -> list[int]:
        """Columns whose n-gram has only words of `words` and occurs in >= `min_docs` texts."""
        if min_docs > 1 and self.doc_freq is None:
            raise ConfigError(
                "this model's TF-IDF head does not record how many texts each n-gram occurs in",
                "retrain the model, export --no-tfidf-head, or export --vocab full",
            )
        return [
            i
            for i, f in enumerate(self.features)
            if all(w in words for w in f.split(" "))
            and (min_docs <= 1 or int(self.doc_freq[i]) >= min_docs)
        ]


def spec_problem(
    spec: Any, n_features: int | None = None, n_class: int | None = None
) -> str | None:
    """What is wrong with a head's JSON part (None if nothing): the MUST-reject rules."""
    if not isinstance(spec, dict):
        return "must be an object"
    feats = spec.get("features")
    if not (isinstance(feats, list) and all(isinstance(f, str) and f for f in feats)):
        return "features must be a list of non-empty strings"
    if len(set(feats)) != len(feats):
        return "features repeat"
    if n_features is not None and len(feats) != n_features:
        return f"{len(feats)} features but {n_features} weights"
    rng = spec.get("ngram_range")
    if not (
        isinstance(rng, list)
        and len(rng) == 2
        and all(type(x) is int for x in rng)
        and 1 <= rng[0] <= rng[1] <= 3
    ):
        return "ngram_range must be two integers 1 <= lo <= hi <= 3"
    if not all(isinstance(spec.get(k), bool) for k in ("lowercase", "sublinear_tf")):
        return "lowercase and sublinear_tf must be booleans"
    if spec.get("norm") != "l2":
        return 'norm must be "l2"'
    w = spec.get("weight")
    if isinstance(w, bool) or not isinstance(w, int | float) or not 0 <= w <= 1:
        return "weight must be a number in [0, 1]"
    pat = spec.get("token_pattern")
    if not isinstance(pat, str):
        return "token_pattern must be a string"
    try:
        re.compile(pat)
    except re.error:
        return "token_pattern does not compile"
    return None if "stack" not in spec else stack_problem(spec["stack"], n_class)


def stack_problem(stack: Any, n_class: int | None = None) -> str | None:
    """What is wrong with a head's `stack` part (None if nothing)."""

    def numbers(xs: Any, n: int) -> bool:
        return (
            isinstance(xs, list)
            and len(xs) == n
            and all(
                not isinstance(x, bool) and isinstance(x, int | float) and math.isfinite(x)
                for x in xs
            )
        )

    if not isinstance(stack, dict) or set(stack) != {"coef", "intercept"}:
        return "stack must be an object with coef and intercept only"
    b, w = stack["intercept"], stack["coef"]
    k = len(b) if isinstance(b, list) else 0
    if k < 2 or (n_class is not None and k != n_class) or not numbers(b, k):
        return "stack intercept must be one finite number per label"
    if not (isinstance(w, list) and len(w) == k and all(numbers(row, 2 * k) for row in w)):
        return "stack coef must be one row of 2 x labels finite numbers per label"
    return None


def head_from_parts(spec: dict[str, Any], tensors: Mapping[str, Any], n_class: int) -> TfidfHead:
    """A head from its JSON part and arrays (numpy or torch); ValueError names a defect."""
    import numpy as np

    def arr(key: str) -> Any:
        if key not in tensors:
            raise ValueError(f"tensor {key!r} is missing")
        t = tensors[key]
        return np.asarray(t.numpy() if hasattr(t, "numpy") else t, dtype=np.float32)

    idf, coef, intercept = arr("tfidf.idf"), arr("tfidf.coef"), arr("tfidf.intercept")
    doc_freq = arr("tfidf.df").astype(np.int32) if "tfidf.df" in tensors else None
    problem = spec_problem(spec, idf.shape[0] if idf.ndim == 1 else None, n_class)
    if problem:
        raise ValueError(f"tfidf_head: {problem}")
    n = idf.shape[0]
    if idf.ndim != 1 or coef.shape != (n_class, n) or intercept.shape != (n_class,):
        raise ValueError("tfidf_head: tensor shapes do not fit its features and labels")
    if doc_freq is not None and (doc_freq.shape != (n,) or (doc_freq < 1).any()):
        raise ValueError("tfidf_head: tfidf.df must be one count >= 1 per feature")
    cv = spec.get("cv_accuracy")
    st = spec.get("stack")
    stack = None
    if st is not None:
        stack = Stack(np.asarray(st["coef"], np.float32), np.asarray(st["intercept"], np.float32))
    return TfidfHead(
        list(spec["features"]),
        idf,
        coef,
        intercept,
        spec["lowercase"],
        spec["token_pattern"],
        tuple(spec["ngram_range"]),
        spec["sublinear_tf"],
        float(spec["weight"]),
        float(spec.get("c") or 0.0),
        float("nan") if cv is None else float(cv),
        doc_freq,
        stack,
    )


class NgramCounter:
    """scikit-learn's word analyzer, in pure Python: text -> {feature column: count}."""

    def __init__(
        self,
        features: Sequence[str],
        *,
        lowercase: bool = True,
        token_pattern: str = TOKEN_PATTERN,
        ngram_range: Sequence[int] = (1, 2),
    ) -> None:
        self.index = {f: i for i, f in enumerate(features)}
        self.lowercase, self.pattern = lowercase, re.compile(token_pattern)
        self.lo, self.hi = int(ngram_range[0]), int(ngram_range[1])

    def __call__(self, text: str) -> dict[int, int]:
        """Counts of the text's known n-grams, by feature column."""
        words = self.pattern.findall(text.lower() if self.lowercase else text)
        counts: Counter[int] = Counter()
        for n in range(self.lo, self.hi + 1):
            for i in range(len(words) - n + 1):
                col = self.index.get(" ".join(words[i : i + n]))
                if col is not None:
                    counts[col] += 1
        return dict(counts)

    @classmethod
    def of(cls, head: TfidfHead) -> NgramCounter:
        """The counter for a fitted head."""
        return cls(
            head.features,
            lowercase=head.lowercase,
            token_pattern=head.token_pattern,
            ngram_range=head.ngram_range,
        )

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> NgramCounter:
        """The counter for a head's JSON part (an export's validated `edge_tl.tfidf`)."""
        return cls(
            spec["features"],
            lowercase=spec["lowercase"],
            token_pattern=spec["token_pattern"],
            ngram_range=spec["ngram_range"],
        )


def feed_arrays(rows: Sequence[Mapping[int, int]], pad: int) -> tuple[Any, Any]:
    """`tfidf_ids` int64 and `tfidf_counts` float32, (batch, m), right-padded with `pad`."""
    import numpy as np

    m = max([1, *(len(r) for r in rows)])
    ids = np.full((len(rows), m), pad, dtype=np.int64)
    counts = np.zeros((len(rows), m), dtype=np.float32)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = list(r)
        counts[i, : len(r)] = list(r.values())
    return ids, counts


def head_proba(head: TfidfHead, texts: Sequence[str]) -> Any:
    """The head's probabilities (numpy float32, (n_texts, n_class)): the graph's reference.
    Row by row on the text's own n-grams (a dense matrix of 1M+ features would not fit)."""
    import numpy as np

    count = NgramCounter.of(head)
    out = np.empty((len(texts), head.coef.shape[0]), dtype=np.float32)
    for i, t in enumerate(texts):
        c = count(t)
        cols = np.fromiter(c.keys(), dtype=np.int64, count=len(c))
        n = np.fromiter(c.values(), dtype=np.float32, count=len(c))
        x = (1 + np.log(n) if head.sublinear_tf else n) * head.idf[cols]
        x /= max(float(np.sqrt((x * x).sum())), 1e-12)
        s = 1 / (1 + np.exp(-(head.coef[:, cols] @ x + head.intercept)))
        out[i] = s / s.sum()
    return out


__all__ = [
    "MIN_DOCS",
    "NgramCounter",
    "SPEC_VERSION",
    "STACK_EPS",
    "Stack",
    "TOKEN_PATTERN",
    "TfidfHead",
    "feed_arrays",
    "head_from_parts",
    "head_proba",
    "spec_problem",
    "stack_features",
    "stack_problem",
]
