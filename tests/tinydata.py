"""Tiny datasets, train configs and a tiny base shared by the slower end-to-end tests."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from edge_tl.awd_lstm import lm_state_keys
from edge_tl.bases.bundle import FASTAI_TOKENIZER, pack_bundle
from edge_tl.config import SPECIAL_TOKENS, ModelConfig

# A scratch run of a few seconds with a checkpoint after every batch (kill/resume tests).
SCRATCH_TOML = """
[train]
bs = 4
lm_bs = 4
bptt = 16
max_len = 64
min_freq = 1
dtype = "fp32"
lin_ftrs = [8]
stages = [1, 1, 2]
lm_frozen_epochs = 0
scratch_lm = true
checkpoint_minutes = 0.0
arch = {vocab_size = 8, emb_sz = 16, n_hid = 32, n_layers = 2}
"""

# Transfer from tiny_base(): every phase of the recipe, one epoch each.
POS = ["good", "great", "lovely", "superb", "fine"]
NEG = ["bad", "awful", "boring", "poor", "dull"]
FILLER = ["the", "movie", "plot", "actor", "scene", "film", "story", "and", "was", "a"]
TRANSFER_TOML = """
stages = [1, 0, 0, 1]
lm_frozen_epochs = 1
lm_epochs = 1
bs = 8
lm_bs = 4
bptt = 8
max_len = 32
min_freq = 1
dtype = "fp32"
lin_ftrs = [8]
threads = 1
"""


def scratch_texts(n: int) -> tuple[list[str], list[str]]:
    """`n` 20-word texts alternating pos/neg, with label words among fillers."""
    rng = random.Random(5)
    words = {"pos": "good great fine".split(), "neg": "bad awful poor".split()}
    labels = [("pos", "neg")[i % 2] for i in range(n)]
    texts = [
        " ".join(rng.choice(words[lab] + ["the", "film", "a"]) for _ in range(20)) for lab in labels
    ]
    return texts, labels


def keyword_texts(
    n: int,
    seed: int,
    noise: float = 0.0,
    pos: list[str] = POS,
    neg: list[str] = NEG,
    filler: list[str] = FILLER,
) -> tuple[list[str], list[str]]:
    """n filler texts with two pos or neg words, labels alternating; `noise`: share of rows whose
    words belong to the other label."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        lab = ("pos", "neg")[i % 2]
        signal = pos if (lab == "pos") != (rng.random() < noise) else neg
        words = rng.choices(filler, k=8) + rng.choices(signal, k=2)
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(lab)
    return texts, labels


def tiny_base(path: Path, name: str = "tiny") -> Path:
    """Pack a 40-token random AWD-LSTM base whose vocabulary holds POS, NEG and FILLER."""
    words = sorted(set(POS + NEG + FILLER))
    vocab = SPECIAL_TOKENS + words + [f"w{i}" for i in range(40 - len(SPECIAL_TOKENS) - len(words))]
    cfg = ModelConfig(vocab_size=len(vocab), emb_sz=8, n_hid=12, n_layers=2)
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(s, generator=g) * 0.1 for k, s in lm_state_keys(cfg).items()}
    sd["0.encoder_dp.emb.weight"] = sd["1.decoder.weight"] = sd["0.encoder.weight"]
    return pack_bundle(
        path,
        name=name,
        model_cfg=cfg,
        vocab=vocab,
        state_dict=sd,
        tokenizer=FASTAI_TOKENIZER,
        dtype="fp32",
        corpus={"description": "random", "license": "CC0-1.0"},
    )
