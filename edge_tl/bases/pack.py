"""A finished pretraining run as a base bundle, with its model card."""

from __future__ import annotations

import json
from pathlib import Path

from edge_tl.bases.bundle import pack_bundle
from edge_tl.bases.pretrain import TOKENIZER_SPEC, PretrainResult

GUTENBERG = {
    "name": "Project Gutenberg (Lahiri's Gutenberg Dataset subset, edge_tl shared corpus)",
    "description": "Public-domain English books, mostly 19th/early-20th century; "
    "hard wraps unwrapped into paragraphs",
    "license": "Public domain (Project Gutenberg texts; headers and license text removed)",
}


def model_card(
    name: str, result: PretrainResult, corpus_desc: dict[str, str], command: str, hardware: str
) -> str:
    """A Markdown model card: how the base was made and how good it is."""
    s = result.stats
    c = result.model_cfg
    unigram = ""
    if "unigram_perplexity" in s:
        unigram = f"; a unigram model (no context) scores {s['unigram_perplexity']} there"
    direction = ""
    if s.get("config", {}).get("backward"):
        direction = (
            "\n- Direction: backward: trained on the reversed token stream, for ULMFiT's "
            "forward + backward (`train --backward-base`)"
        )
    return f"""# Base model card: {name}

- Architecture: fastai AWD-LSTM, emb {c.emb_sz}, hidden {c.n_hid}, {c.n_layers} layers,
  vocab {c.vocab_size:,} ({c.n_params():,} parameters, tied decoder)
- Corpus: {corpus_desc.get("name", "?")}. {corpus_desc.get("description", "")}
- License: {corpus_desc.get("license", "?")}
- Tokenizer: fastai default rules + spacy English tokenizer (lowercased, xxmaj/xxup
  markers){direction}
- Tokens seen: {s["tokens_seen"]:,} (of a {s["train_tokens_available"]:,}-token training set)
- Training time: {s["train_minutes"]} min on {hardware}
- Held-out perplexity: {s["valid_perplexity"]} on {s["valid_tokens"]:,} tokens of the corpus's
  valid shard (books not in training){unigram}
- Command: `{command}`
- Config: `{json.dumps(s["config"])}`
"""


def pack_result(
    result: PretrainResult,
    out: Path,
    name: str,
    *,
    corpus_desc: dict[str, str],
    card: str | None = None,
    sign_key: Path | None = None,
) -> Path:
    """Write a finished pretraining result as a verified bundle (fp16 weights)."""

    return pack_bundle(
        out,
        name=name,
        model_cfg=result.model_cfg,
        vocab=result.vocab,
        state_dict=result.state_dict,
        tokenizer=TOKENIZER_SPEC,
        corpus=corpus_desc,
        description=f"AWD-LSTM base pretrained by edge_tl "
        f"(perplexity {result.stats['valid_perplexity']})",
        dtype="fp16",
        sign_key=sign_key,
        card=card,
    )


__all__ = ["GUTENBERG", "model_card", "pack_result"]
