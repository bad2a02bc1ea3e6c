"""Pretraining: corpus readers, and a tiny run that is interrupted and resumed."""

from __future__ import annotations

import csv
import json
import lzma
import math
import os
import random
import signal
import subprocess
import sys

import pytest
from tinydata import popen_child, wait_for_writes

from edge_tl.bases.corpus import read_corpus
from edge_tl.bases.pretrain import PretrainConfig, pretrain
from edge_tl.errors import DataError

WORDS = (
    "the quick brown fox jumps over a lazy dog while seven wizards quietly judge "
    "boxing matches in the old town hall and nobody notices"
).split()


def _paragraphs(n: int) -> list[str]:
    out = []
    for i in range(n):
        words = [WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(12 + i % 9)]
        out.append(" ".join(words).capitalize() + ".")
    return out


def test_read_corpus_formats_agree(tmp_path):
    paras = _paragraphs(20)
    # txt: hard-wrapped paragraphs separated by blank lines, as Gutenberg books are.
    wrapped = ["\n".join([p[:30], p[30:]]) for p in paras]
    (tmp_path / "a.txt").write_text("\n\n".join(wrapped), encoding="utf-8")
    with lzma.open(tmp_path / "b.jsonl.xz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"text": "\n\n".join(wrapped), "title": "x"}) + "\n")
    with open(tmp_path / "c.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for p in paras:
            w.writerow([p, "x"])
    # Unwrapping joins the two halves with a space where the line break was.
    expected = [p[:30].rstrip() + " " + p[30:].lstrip() for p in paras]
    assert list(read_corpus([tmp_path / "a.txt"])) == expected
    assert list(read_corpus([tmp_path / "b.jsonl.xz"])) == expected
    assert list(read_corpus([tmp_path / "c.csv"])) == paras


def test_read_corpus_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        list(read_corpus([tmp_path / "missing.txt"]))
    (tmp_path / "bad.jsonl").write_text('{"title": 1}\n')
    with pytest.raises(DataError, match="expected a JSON object with 'text'"):
        list(read_corpus([tmp_path / "bad.jsonl"]))
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 au lait")
    with pytest.raises(DataError, match="cannot read corpus file"):
        list(read_corpus([tmp_path / "bad.txt"]))


PRETRAIN_CHILD = """
import sys
from pathlib import Path
from edge_tl.bases.pretrain import PretrainConfig, pretrain
corpus, work, valid = map(Path, sys.argv[1:])
cfg = PretrainConfig(**{cfg!r})
pretrain([corpus], work, cfg, valid=[valid], log=print)
"""


@pytest.mark.parametrize("seed", [0, 1])
def test_tiny_pretrain_interrupt_and_resume(tmp_path, seed):
    """SIGKILL a pretraining process after a random number of its per-step checkpoints, then
    rerun: it resumes at the checkpoint's step, finishes the schedule and has learnt."""
    import torch

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(_paragraphs(400)), encoding="utf-8")
    valid = tmp_path / "valid.txt"
    valid.write_text("\n\n".join(_paragraphs(60)[::-1]), encoding="utf-8")
    fields = dict(
        size="tiny",
        max_tokens=40 * 16 * 20,  # 40 steps, two passes over the corpus
        batch_size=16,
        bptt=20,
        valid_tokens=500,
        min_freq=1,
        bf16=False,
        threads=1,
        checkpoint_minutes=0.0,  # a checkpoint after every step
    )
    cfg = PretrainConfig(**fields)
    work = tmp_path / "work"
    code = PRETRAIN_CHILD.format(cfg=fields)
    proc = popen_child(
        [sys.executable, "-c", code, corpus, work, valid],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_writes(proc, work / "checkpoint.pt", random.Random(seed).randint(1, 30))
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (work / "stats.json").exists()  # killed before the end
    step = torch.load(work / "checkpoint.pt", weights_only=True)["step"]  # whole: atomic
    assert 1 <= step < 40
    logs: list[str] = []
    threads = torch.get_num_threads()
    try:
        result = pretrain([corpus], work, cfg, valid=[valid], log=logs.append)
    finally:
        torch.set_num_threads(threads)  # the config's 1 must not slow the next tests
    assert result is not None
    assert f"resumed at step {step}/40" in "\n".join(logs), logs
    assert result.stats["steps"] == 40
    uniform = len(result.vocab)
    # A trained model must beat the uniform guess on held-out text from the same generator.
    assert math.isfinite(result.stats["valid_perplexity"])
    assert result.stats["valid_perplexity"] < uniform
    assert set(result.state_dict) >= {"0.encoder.weight", "1.decoder.weight"}


def test_cli_pretrain_packs_and_imports(tmp_path):
    from click.testing import CliRunner

    from edge_tl.bases.store import load_base
    from edge_tl.cli import cli

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(_paragraphs(1500)), encoding="utf-8")
    args = [
        "base",
        "pretrain",
        "--corpus",
        str(corpus),
        "--size",
        "tiny",
        "--out",
        "mini",
        "--max-tokens",
        str(128 * 70 * 2),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "Base mini: perplexity" in result.output
    base = load_base("mini")
    assert base.model_cfg.emb_sz == 32 and base.vocab[:2] == ["xxunk", "xxpad"]
    listed = CliRunner().invoke(cli, ["base", "list"])
    assert "mini" in listed.output


def test_cli_pretrain_corpus_too_small(tmp_path):
    from click.testing import CliRunner

    from edge_tl.cli import cli

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Just one short paragraph.", encoding="utf-8")
    result = CliRunner().invoke(
        cli, ["base", "pretrain", "--corpus", str(corpus), "--size", "tiny", "--out", "x"]
    )
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: the corpus has ")
    assert "fewer than one batch (128 x 70)" in last


def test_pretrain_learns_context_not_just_word_frequencies(tmp_path):
    """Regression: the first shipped base sat at the unigram perplexity (context never learnt).

    In this corpus every word fixes the next one, so a model that uses context ends far below
    the perplexity of the best context-free guess (the unigram distribution).
    """
    import numpy as np

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(_paragraphs(400)), encoding="utf-8")
    valid = tmp_path / "valid.txt"
    valid.write_text("\n\n".join(_paragraphs(60)[::-1]), encoding="utf-8")
    cfg = PretrainConfig(
        size="tiny",
        max_tokens=80 * 16 * 20,
        batch_size=16,
        bptt=20,
        valid_tokens=500,
        min_freq=1,
        bf16=False,
        threads=1,
        lr=5e-3,
    )
    result = pretrain([corpus], tmp_path / "work", cfg, valid=[valid], log=lambda m: None)
    assert result is not None
    z = np.load(tmp_path / "work" / "tokens.npz")
    counts = np.bincount(z["train"], minlength=len(result.vocab)) + 1.0
    p = counts / counts.sum()
    unigram_ppl = math.exp(-float(np.log(p[z["valid"]]).mean()))
    assert result.stats["unigram_perplexity"] == pytest.approx(unigram_ppl, rel=1e-3)
    assert result.stats["valid_perplexity"] < 0.5 * unigram_ppl, (
        result.stats["valid_perplexity"],
        unigram_ppl,
    )


def test_pretrain_device_choice(monkeypatch):
    import torch

    from edge_tl.bases.pretrain import pick_device
    from edge_tl.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == "cpu" and pick_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="no CUDA device"):
        pick_device("cuda")
    with pytest.raises(ConfigError, match="unknown device"):
        pick_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == "cuda" and pick_device("cpu") == "cpu"


def test_cli_pretrain_cuda_without_a_gpu_is_a_clear_error(tmp_path, monkeypatch):
    import torch
    from click.testing import CliRunner

    from edge_tl.cli import cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(_paragraphs(50)), encoding="utf-8")
    result = CliRunner().invoke(
        cli,
        [
            "base",
            "pretrain",
            "--corpus",
            str(corpus),
            "--size",
            "tiny",
            "--out",
            "x",
            "--device",
            "cuda",
        ],
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("Error: --device cuda, but torch")


def test_backward_pretraining_reads_every_stream_reversed(tmp_path, monkeypatch):
    """backward = true trains on the reversed token stream (ULMFiT's backward base)."""
    import numpy as np

    from edge_tl.bases import pretrain as pt

    train_ids = np.arange(10, 40, dtype=np.int32)
    seen = {}

    def stop(train, vocab, cfg, workdir, dev, log):
        seen[cfg.backward] = train.tolist()
        raise KeyboardInterrupt

    monkeypatch.setattr(pt, "_start", stop)
    for backward in (False, True):
        work = tmp_path / f"w{backward}"
        work.mkdir()
        # the prepare step's cache: pretraining reads its tokens from there
        np.savez(work / "tokens.npz", train=train_ids, valid=np.arange(50, 60, dtype=np.int32))
        (work / "vocab.json").write_text(json.dumps([f"t{i}" for i in range(64)]))
        with pytest.raises(KeyboardInterrupt):
            pretrain([], work, PretrainConfig(backward=backward), log=lambda m: None)
    assert seen[False] == list(range(10, 40))
    assert seen[True] == list(range(39, 9, -1))
