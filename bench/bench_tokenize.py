"""Agreement and speed of edge_tl.deploy.tokenizer vs fastai's training pipeline on IMDb
test reviews.

    .venv/bin/python bench/bench_tokenize.py [--n 25000] [--out bench/results/tokenize.json]
    .venv/bin/python bench/bench_tokenize.py --write-rules   # regenerate assets/tokenizer_en.json

Reference: fastai `TokenizeWithRules(SpacyTokenizer("en"))` (default rules, then spaCy, then
`replace_space`), then `Numericalize` with a vocab built the fastai way (min_freq 3, max 60000)
from the reference tokens. A review agrees when its whole token-id sequence is identical.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import gzip
import json
import platform
import random
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "imdb" / "test.csv.gz"
ASSET = ROOT / "edge_tl" / "assets" / "tokenizer_en.json"


def write_rules() -> None:
    """Dump spaCy's English tokenizer tables (+ fastai's special tokens) into the asset."""
    import spacy
    from spacy.symbols import ORTH

    from edge_tl.deploy.tokenizer import SPECIAL_TOKENS

    tok = spacy.blank("en").tokenizer
    for w in SPECIAL_TOKENS:  # what fastai's SpacyTokenizer adds
        tok.add_special_case(w, [{ORTH: w}])
    for f in (tok.prefix_search, tok.suffix_search, tok.infix_finditer, tok.url_match):
        if f.__self__.flags != 32:  # re.UNICODE only: the patterns must stand alone
            raise SystemExit(f"unexpected regex flags {f.__self__.flags}")
    tables = {
        "prefix": tok.prefix_search.__self__.pattern,
        "suffix": tok.suffix_search.__self__.pattern,
        "infix": tok.infix_finditer.__self__.pattern,
        "url": tok.url_match.__self__.pattern,
        "specials": {k: [d[ORTH] for d in v] for k, v in sorted(tok.rules.items())},
    }
    ASSET.write_text(json.dumps(tables, ensure_ascii=False, sort_keys=True), encoding="utf-8")
    print(f"wrote {ASSET} (spacy {spacy.__version__}, {len(tables['specials'])} special cases)")


def make_vocab(counts: Counter, min_freq: int = 3, max_vocab: int = 60000) -> list[str]:
    """fastai's make_vocab: special tokens first, then by frequency, padded to a multiple of 8."""
    from edge_tl.deploy.tokenizer import SPECIAL_TOKENS

    vocab = [o for o, c in counts.most_common(max_vocab) if c >= min_freq]
    vocab = SPECIAL_TOKENS + [o for o in vocab if o not in SPECIAL_TOKENS]
    vocab = vocab[:max_vocab]
    return vocab + [f"xxfake{i}" for i in range((8 - len(vocab) % 8) % 8)]


def main() -> None:
    """Run the comparison and write the JSON report."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=25000)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tokenize.json")
    ap.add_argument("--write-rules", action="store_true")
    args = ap.parse_args()
    if args.write_rules:
        write_rules()
        return

    import fastai
    import spacy
    from fastai.text.core import SpacyTokenizer, TokenizeWithRules

    from edge_tl.deploy.tokenizer import Encoder, TextTokenizer

    with gzip.open(DATA, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    random.Random(0).shuffle(rows)
    texts = [r["text"] for r in rows[: args.n]]

    t0 = time.perf_counter()
    ref = [list(t) for t in TokenizeWithRules(SpacyTokenizer("en"))(texts)]
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    tok = TextTokenizer()
    mine = [tok(t) for t in texts]
    t_mine = time.perf_counter() - t0

    vocab = make_vocab(Counter(t for toks in ref for t in toks))
    stoi = {t: i for i, t in enumerate(vocab)}
    enc = Encoder(tok, vocab)
    ref_ids = [[stoi.get(t, 0) for t in toks] for toks in ref]
    mine_ids = [[enc._stoi.get(t, 0) for t in toks] for toks in mine]
    tok_diff = [i for i in range(len(texts)) if ref[i] != mine[i]]
    id_diff = [i for i in range(len(texts)) if ref_ids[i] != mine_ids[i]]
    examples = []
    for i in tok_diff[:20]:
        sm = difflib.SequenceMatcher(a=ref[i], b=mine[i], autojunk=False)
        for op, a0, a1, b0, b1 in sm.get_opcodes():
            if op != "equal":
                examples.append({"review": i, "fastai": ref[i][a0:a1], "edge_tl": mine[i][b0:b1]})
    n = len(texts)
    n_tok = sum(len(t) for t in ref)
    res = {
        "command": f"bench/bench_tokenize.py --n {args.n}",
        "reviews": n,
        "tokens": n_tok,
        "vocab_size": len(vocab),
        "identical_token_ids": n - len(id_diff),
        "identical_tokens": n - len(tok_diff),
        "agreement_pct": round(100 * (n - len(id_diff)) / n, 3),
        "fastai_spacy_s": round(t_ref, 2),
        "edge_tl_s": round(t_mine, 2),
        "edge_tl_reviews_per_s": round(n / t_mine, 1),
        "fastai_reviews_per_s": round(n / t_ref, 1),
        "differences": examples,
        "versions": {
            "fastai": fastai.__version__,
            "spacy": spacy.__version__,
            "python": platform.python_version(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    hdr = ("reviews", "identical ids", "agreement", "fastai s", "edge_tl s")
    print(f"{hdr[0]:>10} {hdr[1]:>14} {hdr[2]:>10} {hdr[3]:>9} {hdr[4]:>9}")
    print(f"{n:>10} {n - len(id_diff):>14} {res['agreement_pct']:>9}% {t_ref:>9.1f} {t_mine:>9.1f}")


if __name__ == "__main__":
    main()
