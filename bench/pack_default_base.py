"""Pack the pretraining run in WORKDIR as the shipped default base (edge_tl/assets/default.etlb).

    .venv/bin/python bench/pack_default_base.py --workdir /work/pretrain-small
Uses the finished run's stats.json, or (with --from-checkpoint) the latest checkpoint, whose
perplexity it then measures itself.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from edge_tl.awd_lstm import build_lm
from edge_tl.bases.pack import GUTENBERG, model_card, pack_result
from edge_tl.bases.pretrain import (
    SIZES,
    PretrainConfig,
    PretrainResult,
    evaluate_perplexity,
)
from edge_tl.bases.tokens import unigram_log_probs, unigram_perplexity
from edge_tl.config import from_dict

ASSETS = Path(__file__).resolve().parents[1] / "edge_tl" / "assets"


def main() -> None:
    """Load the run, measure or read its perplexity, write the bundle, pin its hash."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--name", default="default")
    ap.add_argument("--valid-tokens", type=int, default=0, help="0 = the whole valid stream")
    ap.add_argument("--note", default="", help="a paragraph appended to the model card")
    ap.add_argument("--hw-note", default="2 cores", help="how the CPU was shared, for the card")
    ap.add_argument(
        "--tokens-seen",
        type=int,
        default=0,
        help="override (when the batch size was changed on a resume)",
    )
    ap.add_argument(
        "--dest",
        type=Path,
        default=ASSETS,
        help="folder for the bundle and card; only the package's assets get pinned",
    )
    a = ap.parse_args()
    cfg = from_dict(PretrainConfig, json.loads((a.workdir / "config.json").read_text()), "cfg")
    vocab = json.loads((a.workdir / "vocab.json").read_text())
    ck = torch.load(a.workdir / "checkpoint.pt", weights_only=True, map_location="cpu")
    model_cfg = replace(SIZES[cfg.size], vocab_size=len(vocab))
    model = build_lm(model_cfg)
    model.load_state_dict(ck["model"])
    import numpy as np

    valid = np.load(a.workdir / "tokens.npz")["valid"]
    if cfg.backward:  # a backward base is measured on the reversed stream it learnt
        valid = valid[::-1].copy()
    if a.valid_tokens:
        valid = valid[: a.valid_tokens]
    done = a.workdir / "stats.json"
    if done.exists() and not a.valid_tokens:  # the finished run measured it on the whole stream
        ppl = json.loads(done.read_text())["valid_perplexity"]
    else:
        t = time.time()
        ppl = evaluate_perplexity(model, valid, bs=32, bptt=cfg.bptt)
        print(f"held-out perplexity {ppl:.1f} on {len(valid):,} tokens ({time.time() - t:.0f}s)")
    train_ids = np.load(a.workdir / "tokens.npz")["train"]
    n_train = len(train_ids)
    unigram_ppl = unigram_perplexity(unigram_log_probs(train_ids, len(vocab)), valid)
    print(f"unigram perplexity on the same tokens: {unigram_ppl:.1f}")
    stats = {
        "steps": ck["step"],
        "tokens_seen": a.tokens_seen or ck["step"] * cfg.batch_size * cfg.bptt,
        "train_tokens_available": n_train,
        "valid_tokens": len(valid),
        "valid_perplexity": round(ppl, 2),
        "unigram_perplexity": round(unigram_ppl, 2),
        "train_minutes": round(ck["elapsed"] / 60, 1),
        "config": json.loads((a.workdir / "config.json").read_text()),
    }
    result = PretrainResult(
        model_cfg=model_cfg,
        vocab=vocab,
        state_dict={k: v for k, v in model.state_dict().items()},
        stats=stats,
    )
    cmd = (
        f"nohup .venv/bin/python bench/pretrain_base.py --workdir {a.workdir} "
        f"--config '{json.dumps(stats['config'])}' && "
        f".venv/bin/python bench/pack_default_base.py --workdir {a.workdir}"
        + (f" --name {a.name}" if a.name != "default" else "")
    )
    hw = f"{platform.machine()} CPU, {a.hw_note}, torch {torch.__version__}"
    card = model_card(a.name, result, GUTENBERG, cmd, hw) + (f"\n{a.note}\n" if a.note else "")
    a.dest.mkdir(parents=True, exist_ok=True)
    out = pack_result(result, a.dest / f"{a.name}.etlb", a.name, corpus_desc=GUTENBERG, card=card)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    if a.dest.resolve() == ASSETS.resolve():  # a built-in base: pin it (others keep theirs)
        pins = ASSETS / "bases.sha256"
        lines = pins.read_text().splitlines() if pins.exists() else []
        lines = [ln for ln in lines if not ln.endswith(f"  {out.name}")]
        pins.write_text("".join(f"{ln}\n" for ln in [*lines, f"{digest}  {out.name}"]))
    (a.dest / f"{a.name}.card.md").write_text(card)
    print(card)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB), sha256 {digest}", file=sys.stderr)


if __name__ == "__main__":
    main()
