"""Pretraining text as tokens: fastai's rules + spaCy, the vocab, id streams, unigram yardsticks."""

from __future__ import annotations

from collections import Counter

import numpy as np
from fastai.text.core import SpacyTokenizer, TokenizeWithRules, defaults, parallel_tokenize
from fastai.text.data import make_vocab


def tokenize(texts: list[str], n_workers: int = 1) -> list[list[str]]:
    """fastai's default rules + spacy's English tokenizer, in memory (never cached on disk)."""
    if n_workers <= 1 or len(texts) < 5000:  # a process pool costs more than it saves
        tok = TokenizeWithRules(SpacyTokenizer("en"), rules=defaults.text_proc_rules)
        return [list(t) for t in tok(texts)]
    out = parallel_tokenize(
        texts, SpacyTokenizer("en"), rules=defaults.text_proc_rules, n_workers=n_workers
    )
    return [list(t) for _, t in sorted(out, key=lambda x: x[0])]


def build_vocab(token_lists: list[list[str]], max_vocab: int, min_freq: int) -> list[str]:
    """fastai's make_vocab (special tokens first, size a multiple of 8)."""
    counts = Counter(t for toks in token_lists for t in toks)
    return list(make_vocab(counts, min_freq=min_freq, max_vocab=max_vocab))


def numericalize(token_lists: list[list[str]], vocab: list[str]):
    """One int32 stream of token ids (unknown -> xxunk = 0)."""
    stoi = {t: i for i, t in enumerate(vocab)}
    ids = [stoi.get(t, 0) for toks in token_lists for t in toks]
    return np.asarray(ids, dtype=np.int32)


def unigram_log_probs(train, n_vocab: int):
    """Add-one smoothed log unigram probabilities of a token-id stream (float64 array)."""
    counts = np.bincount(train, minlength=n_vocab).astype("float64") + 1.0
    return np.log(counts / counts.sum())


def unigram_perplexity(log_probs, stream) -> float:
    """Perplexity of a context-free (unigram) model on `stream`: the yardstick a base must beat."""
    return float(np.exp(-log_probs[stream].mean()))


__all__ = ["build_vocab", "numericalize", "tokenize", "unigram_log_probs", "unigram_perplexity"]
