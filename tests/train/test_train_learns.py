"""The classifier must learn: a keyword task a tiny AWD-LSTM solves, under the default stages.

Texts are random filler words; class "pos" hides one or two of great/superb at random positions,
"neg" one or two of awful/boring. Chance is 0.5; a pipeline that misaligns labels, loses the
head, freezes the wrong groups or starves a random-init encoder of learning rate stays there."""

from __future__ import annotations

import random

import pytest
import torch

from edge_tl.config import ModelConfig
from edge_tl.train.config import TrainConfig
from edge_tl.train.evaluate import evaluate_texts
from edge_tl.train.recipe import finetune_lm, train_classifier
from edge_tl.train.settings import Run

POS = ("great", "superb")
NEG = ("awful", "boring")
FILL = tuple(f"w{i}" for i in range(40))
ARCH = ModelConfig(vocab_size=8, emb_sz=32, n_hid=64, n_layers=2)


def make_texts(n: int, seed: int) -> tuple[list[str], list[str]]:
    """n texts of 20-60 tokens, labels alternating pos/neg."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = ("pos", "neg")[i % 2]
        toks = [rng.choice(FILL) for _ in range(rng.randint(20, 60))]
        for _ in range(rng.randint(1, 2)):
            toks[rng.randrange(len(toks))] = rng.choice(POS if label == "pos" else NEG)
        texts.append(" ".join(toks))
        labels.append(label)
    return texts, labels


def tiny_cfg(dtype: str = "fp32", **kw) -> TrainConfig:
    """Default schedule (stages, lr, lr_div, stage multipliers); tiny sizes, fp32, 1 thread."""
    return TrainConfig(
        arch=ARCH,
        bs=32,
        lm_bs=32,
        bptt=24,
        max_len=96,
        min_freq=1,
        lin_ftrs=(16,),
        dtype=dtype,
        threads=1,
        checkpoint_minutes=0.0,
        **kw,
    )


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False  # no per-shape oneDNN kernel builds for tiny LSTMs
    yield
    torch.backends.mkldnn.enabled = True
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def task():
    return make_texts(400, 0), make_texts(200, 1)


def _check(m, test) -> None:
    held_out = evaluate_texts(m, *test)["accuracy"]
    assert m.metrics["accuracy"] >= 0.9, m.metrics["confusion_matrix"]
    assert held_out >= 0.9, held_out


def test_defaults_are_what_this_test_exercises():
    cfg = TrainConfig()
    assert (cfg.stages, cfg.lr, cfg.discriminative) == ((0, 0, 0, 10), 1e-2, "off")


@pytest.mark.parametrize("cache", [True, False], ids=["head-cache", "no-cache"])
def test_scratch_default_stages_learn(task, cache):
    (texts, labels), test = task
    cfg = tiny_cfg(cache_head_features=cache)
    m = train_classifier(texts, labels, None, cfg, run=Run(bs=32, progress=False), scratch=True)
    _check(m, test)


def test_from_task_lm_default_stages_learn(task):
    (texts, labels), test = task
    cfg = tiny_cfg()
    run = Run(bs=32, lm_bs=32, progress=False)
    lm = finetune_lm(texts, None, cfg, run=run)
    m = train_classifier(texts, labels, lm, cfg, run=run)
    _check(m, test)


def test_labels_stay_with_their_docs(task):
    """Shuffled labels must not be learnable: held-out accuracy near chance."""
    (texts, labels), test = task
    wrong = labels[:]
    random.Random(3).shuffle(wrong)
    m = train_classifier(texts, wrong, None, tiny_cfg(), run=Run(bs=32, progress=False))
    assert evaluate_texts(m, *test)["accuracy"] < 0.75


def test_discriminative_on_is_the_ulmfit_schedule():
    from edge_tl.train.config import ULMFIT_RECIPE

    assert [TrainConfig().stage_lr(k) for k in range(4)] == [1e-2] * 4  # flat10: one lr
    cfg = TrainConfig(**ULMFIT_RECIPE)
    assert [cfg.stage_lr(k) for k in range(4)] == pytest.approx([2e-2, 1e-2, 5e-3, 1e-3])
    assert [cfg.stage_lr(k, pretrained=False) for k in range(4)] == [2e-2] * 4
    assert TrainConfig(discriminative="on").use_discriminative(pretrained=False)
    assert not TrainConfig(discriminative="off").use_discriminative(pretrained=True)


def test_threads_follow_the_cpu_use_now_not_the_load_average(monkeypatch):
    """The 1-minute load average lags: right after a job ended an idle 2-core machine still
    read busy and trained with 1 thread. CPU use sampled now decides, and the plan says why."""
    import os

    import psutil

    from edge_tl.train import engine

    monkeypatch.setattr(os, "getloadavg", lambda: (6.0, 6.0, 6.0), raising=False)  # stale
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    for per_cpu, want in [
        ([0.0, 3.0], 2),
        ([30.0, 10.0], 2),
        ([45.0, 10.0], 1),
        ([100.0, 0.0], 1),
        ([100.0, 100.0], 1),
        ([70.0, 90.0], 1),
    ]:
        monkeypatch.setattr(psutil, "cpu_percent", lambda interval, percpu, v=per_cpu: v)
        assert engine.auto_threads(2) == want, per_cpu
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval, percpu: [0.0, 0.0])
    assert engine.thread_plan(2) == (2, "all 2 cores, idle now")
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval, percpu: [100.0, 20.0])
    assert engine.thread_plan(2) == (
        1,
        "1.2 of 2 cores busy with other processes now; --threads N overrides",
    )
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {2, 3}, raising=False)
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval, percpu: [100.0] * 2 + [0.0] * 2)
    assert engine.thread_plan(2)[0] == 2  # only the usable cores count

    def unmeasurable(interval, percpu):
        raise OSError("no /proc/stat")

    monkeypatch.setattr(psutil, "cpu_percent", unmeasurable)
    assert engine.thread_plan(2) == (2, "all 2 cores: CPU use could not be measured")


def test_plan_line_says_why_this_many_threads(monkeypatch):
    from edge_tl.train import settings

    monkeypatch.setattr(settings, "thread_plan", lambda cores: (1, "why not"))
    before = torch.get_num_threads()
    try:
        _, _, run = settings.resolve_runtime(TrainConfig(), "cpu-small", ARCH, False)
        assert run.threads_why == "why not"
        _, _, run = settings.resolve_runtime(TrainConfig(threads=1), "cpu-small", ARCH, False)
        assert run.threads_why == "set by --threads, the train config or the device profile"
    finally:
        torch.set_num_threads(before)


def test_random_init_classifier_trains_in_fp32_under_cpu_autocast(task):
    """bf16 autocast kept a random-init IMDb classifier at chance (README): scratch runs in fp32."""
    (texts, labels), test = task
    logs: list[str] = []
    run = Run(dtype="bf16", bs=32, progress=False, log=logs.append)
    m = train_classifier(texts, labels, None, tiny_cfg(dtype="auto"), run=run, scratch=True)
    assert m.metrics["dtype"] == "fp32"
    assert any("classifier in fp32" in s for s in logs), logs
    _check(m, test)


@pytest.mark.parametrize(
    ("cfg_dtype", "device", "pretrained", "want"),
    [
        ("auto", "cpu", False, "fp32"),
        ("auto", "cpu", True, "bf16"),
        ("bf16", "cpu", False, "bf16"),
        ("auto", "cuda", False, "fp32"),
        ("auto", "cuda", True, "bf16"),
        ("bf16", "cuda", False, "bf16"),
    ],
)
def test_classifier_dtype_only_overrides_auto_without_a_base(cfg_dtype, device, pretrained, want):
    from edge_tl.train.settings import classifier_dtype

    run = Run(device=device, dtype="bf16")
    assert classifier_dtype(TrainConfig(dtype=cfg_dtype), run, pretrained) == want
