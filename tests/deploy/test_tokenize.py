"""edge_tl.deploy.tokenizer reproduces fastai's Tokenizer(SpacyTokenizer("en")) + Numericalize."""

from __future__ import annotations

import csv
import gzip
import random

import pytest

from edge_tl.deploy.tokenizer import (
    SPECIAL_TOKENS,
    Encoder,
    TextTokenizer,
    default_tables,
    tokenizer_from_spec,
    tokenizer_spec,
)
from edge_tl.errors import ExportError

# Expected tokens produced once by fastai 2.8.12 + spaCy 3.8 (TokenizeWithRules(SpacyTokenizer)).
CASES = [
    (
        "I don't like it!!! It's <br /><br />AWFUL... see http://www.imdb.com/title/tt01 now.",
        [
            "xxbos",
            "i",
            "do",
            "n't",
            "like",
            "it",
            "xxrep",
            "3",
            "!",
            "xxmaj",
            "it",
            "'s",
            "\n\n",
            "xxup",
            "awful",
            "…",
            "see",
            "http",
            ":",
            "/",
            "/",
            "xxrep",
            "3",
            "w",
            ".imdb.com",
            "/",
            "title",
            "/",
            "tt01",
            "now",
            ".",
        ],
    ),
    (
        'The U.S.A. is big; e.g. 10km, $5.99 & 3:30pm. (Really?) "Yes" - she said -- no no no no.',
        [
            "xxbos",
            "xxmaj",
            "the",
            "xxup",
            "u.s.a",
            ".",
            "is",
            "big",
            ";",
            "e.g.",
            "10",
            "km",
            ",",
            "$",
            "5.99",
            "&",
            "3:30pm",
            ".",
            "(",
            "really",
            "?",
            ")",
            '"',
            "yes",
            '"',
            "-",
            "she",
            "said",
            "--",
            "xxwrep",
            "4",
            "no",
            ".",
        ],
    ),
    (
        "Ok :) great/bad #1 movie, wasn't it? soooo good. Mr. Smith's dog can't.",
        [
            "xxbos",
            "xxmaj",
            "ok",
            ":)",
            "great",
            "/",
            "bad",
            "#",
            "1",
            "movie",
            ",",
            "was",
            "n't",
            "it",
            "?",
            "s",
            "xxrep",
            "4",
            "o",
            "good",
            ".",
            "xxmaj",
            "mr",
            ".",
            "xxmaj",
            "smith",
            "'s",
            "dog",
            "ca",
            "n't",
            ".",
        ],
    ),
]


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    return TextTokenizer()


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_known_answers(tok: TextTokenizer, text: str, expected: list[str]) -> None:
    assert tok(text) == expected


def test_encoder_maps_unknown_to_xxunk(tok: TextTokenizer) -> None:
    vocab = [*SPECIAL_TOKENS, "i", "like", "it", "."]
    enc = Encoder(tok, vocab)
    assert enc.encode("I like zebras.") == [2, 9, 10, 0, 12]


def test_spec_round_trip_and_rejects_unknown_rule(tok: TextTokenizer) -> None:
    spec = tokenizer_spec()
    assert tokenizer_from_spec(spec)(CASES[0][0]) == CASES[0][1]
    bad = {**spec, "pre_rules": [*spec["pre_rules"], "strip_accents"]}
    with pytest.raises(ExportError, match="unknown tokenizer rule 'strip_accents'"):
        tokenizer_from_spec(bad)
    with pytest.raises(ExportError, match="version 2"):
        tokenizer_from_spec({**spec, "version": 2})
    broken = {**spec, "spacy": {**default_tables(), "infix": "(unclosed"}}
    with pytest.raises(ExportError, match="tokenizer tables are malformed"):
        tokenizer_from_spec(broken)


def test_agreement_with_fastai_on_imdb(shared_data, tok: TextTokenizer) -> None:
    """Token sequences identical to fastai's pipeline on 300 random IMDb test reviews."""
    path = shared_data / "imdb" / "test.csv.gz"
    if not path.exists():
        pytest.skip("IMDb test split not in ../shared/data")
    pytest.importorskip("spacy")
    from fastai.text.core import SpacyTokenizer, TokenizeWithRules

    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    texts = [r["text"] for r in random.Random(7).sample(rows, 300)]
    ref = [list(t) for t in TokenizeWithRules(SpacyTokenizer("en"))(texts)]
    mine = [tok(t) for t in texts]
    same = sum(a == b for a, b in zip(ref, mine, strict=True))
    assert same >= 299, f"only {same}/300 reviews tokenized identically"


def test_encoder_follows_fastai_numericalize_o2i(tok: TextTokenizer) -> None:
    # fastai: o2i = {v: k for k, v in enumerate(vocab) if v != "xxfake"} (last wins, no fakes).
    vocab = [*SPECIAL_TOKENS, "good", "xxfake", "good", "xxfake"]
    assert Encoder(tok, vocab).encode("good xxfake") == [2, 11, 0]
