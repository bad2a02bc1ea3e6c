"""Private by default: what `edge-tl export` writes without options holds no string seen only
in the private training data. A canary word (outside the base's vocabulary) and a canary
bigram (two base words side by side in fewer than --min-docs texts) must leave no trace in any
file meant to leave the device; a word of the base in many texts must survive (so the scan
can fail both ways); `--vocab full` writes the canaries and says how many private strings."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from test_export import tiny_model
from tinydata import FILLER, NEG, POS, keyword_texts, scan_for_plaintext, tiny_base

from edge_tl.bases.store import import_base
from edge_tl.cli import cli
from edge_tl.deploy.tokenizer import SPECIAL_TOKENS
from edge_tl.store import keys
from edge_tl.store.models import save_model
from edge_tl.tfidf_head import MIN_DOCS
from edge_tl.train.head import fit_head

WORD = "zorblax"  # in the model's vocabulary (fine-tuned on private text), not in the base's
BIGRAM = "superb poor"  # two base words never side by side in the generated texts
KEPT = "movie"  # a base word in most texts: a safe export keeps it
MODEL_VOCAB = tiny_model().vocab


@pytest.fixture
def stored(edge_tl_home) -> str:
    """A model fine-tuned from base `tb`, its head fitted on texts holding both canaries."""
    keys.init_identity(None)
    assert import_base(tiny_base(edge_tl_home.parent / "b.etlb", "tb"), allow_unsigned=True)
    texts, labels = keyword_texts(60, seed=1)
    assert not any(BIGRAM in t for t in texts)
    for i in (3, 8):  # fewer texts than MIN_DOCS
        texts[i] = f"{texts[i]} {WORD} {BIGRAM}"
    model = dataclasses.replace(tiny_model(n_class=2), base="tb", name="canary")
    head = fit_head(texts, labels, model.labels)
    assert WORD in head.features and BIGRAM in head.features and KEPT in head.features
    assert head.doc_freq[head.features.index(BIGRAM)] == 2 < MIN_DOCS
    save_model(dataclasses.replace(model, tfidf_head=head))
    return "canary"


def _features(path: Path) -> list[str]:
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return json.loads(props["edge_tl.tfidf"])["features"]


def _export(*args: str) -> str:
    r = CliRunner().invoke(cli, ["export", *args])
    assert r.exit_code == 0, r.output
    return r.output


def test_the_default_export_leaves_no_canary_in_any_file(stored, tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    printed = _export(stored, "--out", str(out / "m.onnx"))
    printed += _export(stored, "--out", str(out / "e.onnx"), "--external-data")
    printed += _export(stored, "--out", str(out / "q.onnx"), "--quantize", "int8")
    info = CliRunner().invoke(cli, ["models", "info", stored, "--json"])
    assert info.exit_code == 0
    (out / "info.json").write_text(info.output + printed, encoding="utf-8")
    assert (out / "e.onnx.data").is_file()
    for canary in (WORD, BIGRAM):
        assert scan_for_plaintext(canary, [out]) == [], canary
    # the safe export still carries what is not private
    feats = _features(out / "m.onnx")
    assert KEPT in feats and "superb" in feats and "poor" in feats


def test_full_exports_the_canaries_and_says_how_many_strings_are_private(stored, tmp_path):
    out = tmp_path / "full.onnx"
    printed = _export(stored, "--out", str(out), "--vocab", "full")
    feats = _features(out)
    assert WORD in feats and BIGRAM in feats
    assert WORD.encode() in out.read_bytes()
    first = printed.splitlines()[0]
    base_words = set(POS + NEG + FILLER)
    private_tokens = [t for t in MODEL_VOCAB[len(SPECIAL_TOKENS) :] if t not in base_words]
    assert WORD in private_tokens
    assert first.startswith(f"--vocab full: writing {len(private_tokens)} tokens and ")
    n_private = int(first.split(" and ")[1].split(" ")[0].replace(",", ""))
    safe = tmp_path / "safe.onnx"
    _export(stored, "--out", str(safe))
    assert n_private == len(feats) - len(_features(safe)) > 0


def test_min_docs_is_the_bar_an_ngram_must_clear(stored, tmp_path) -> None:
    low = tmp_path / "low.onnx"
    _export(stored, "--out", str(low), "--min-docs", "2")
    assert BIGRAM in _features(low) and WORD not in _features(low)  # the word rule still holds
    high = tmp_path / "high.onnx"
    _export(stored, "--out", str(high), "--min-docs", "3")
    assert BIGRAM not in _features(high)
