"""`edge-tl train` end to end on a tiny config: scratch and transfer, data checks, no leaks."""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import tinydata
import torch
from click.testing import CliRunner

from edge_tl.cli import cli
from edge_tl.config import ModelConfig
from edge_tl.store import datasets as data
from edge_tl.store import keys
from edge_tl.store.models import load_model
from edge_tl.train import runner as runner_mod

CANARY = "zqcanary7731"
TINY = ModelConfig(vocab_size=8, emb_sz=16, n_hid=32, n_layers=2)
TOML = """
[train]
bs = 8
lm_bs = 8
bptt = 16
max_len = 64
min_freq = 1
dtype = "fp32"
lin_ftrs = [8]
stages = [1, 1]
lm_frozen_epochs = 0
checkpoint_minutes = 0.0
arch = {vocab_size = 8, emb_sz = 16, n_hid = 32, n_layers = 2}
"""
POS = "good great fine excellent lovely superb".split()
NEG = "bad awful poor terrible boring dull".split()
FILL = "the a movie film plot actor scene and it was".split()


def make_texts(n: int, seed: int = 0, canary: bool = False) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    labels = [("pos", "neg")[i % 2] for i in range(n)]
    texts = []
    for lab in labels:
        words = POS if lab == "pos" else NEG
        n_words = rng.randint(6, 30)
        texts.append(
            " ".join(rng.choice(words if rng.random() < 0.35 else FILL) for _ in range(n_words))
        )
    if canary:
        texts[0] = f"{texts[0]} {CANARY}"
    return texts, labels


@pytest.fixture(autouse=True)
def small_torch():
    # oneDNN compiles a kernel per new LSTM shape (~0.1-1 s each); tiny tests use the native
    # kernels instead. The benchmark runs the real default.
    torch.backends.mkldnn.enabled = False
    yield
    torch.backends.mkldnn.enabled = True


@pytest.fixture
def tiny_setup(tmp_path: Path):
    keys.init_identity(None)
    texts, labels = make_texts(40, canary=True)
    # unlabelled rows first: labelled rows must be matched to their own tokens by index
    data.save_dataset("tiny", make_texts(6, 1)[0] + texts, [None] * 6 + labels)
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TOML)
    return cfg


def test_cli_scratch_end_to_end_and_no_canary_on_disk(
    tiny_setup: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    edge_tl_home: Path,
    plaintext_leaks,
) -> None:
    work, tmp = tmp_path / "cwd", tmp_path / "tmp"
    work.mkdir()
    tmp.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)
    # also the settings that are off by default: the best epoch, a larger validation split
    toml = tiny_setup.read_text().replace(
        "lm_frozen_epochs = 0",
        "scratch_lm = true\nlm_frozen_epochs = 0\nbest_epoch = true\nvalid_min_rows = 200",
    )
    tiny_setup.write_text(toml)
    res = CliRunner().invoke(
        cli,
        [
            "train",
            "--data",
            "tiny",
            "--out",
            "m1",
            "--scratch",
            "--config",
            str(tiny_setup),
            "--quiet",
            "--tfidf-weight",
            "0.7",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "plan: profile" in res.output and "device cpu, dtype fp32" in res.output
    assert "saved model 'm1': validation accuracy" in res.output
    m = load_model("m1")
    assert m.base is None and m.labels == ["neg", "pos"]
    assert m.dataset_fingerprint == data.open_dataset("tiny").fingerprint
    assert m.train_config["stages"] == [1, 1] and m.train_config["scratch"] is True
    assert CANARY in m.vocab  # it was learnt ...
    # 40 rows: the validation split takes its cap, a fifth (valid_min_rows 200 > 10 %)
    assert m.metrics["lm_epochs_run"] == 1 and m.metrics["valid_rows"] == 8
    # the TF-IDF head (default on): fitted on all 40 labelled rows, canary n-grams included
    assert m.tfidf_head is not None and CANARY in m.tfidf_head.features
    assert {"neural_accuracy", "tfidf_accuracy", "tfidf_c"} <= set(m.metrics)
    # --tfidf-weight: stored with the head, in the config the model carries, and scored
    assert m.tfidf_head.weight == 0.7 == m.train_config["tfidf_weight"] == m.metrics["tfidf_weight"]
    assert m.train_config["tfidf_weight_auto"] is False  # a weight given is not chosen again
    assert m.metrics["tfidf_weight_chosen_by"] == "fixed"
    # stage 1's one epoch is the only one fit_stage ran: the kept best epoch (stage 0 trains
    # the head alone on cached features)
    assert m.metrics["best_epoch"]["stage"] == 1 and m.metrics["best_epoch"]["epoch"] == 0
    assert "(network " in res.output and "mixed at head weight 0.7)" in res.output
    # ... and is nowhere on disk in plaintext: not in the store, the working or temp folder,
    # HOME, XDG and library folders (the sandbox) or /dev/shm, in any common encoding.
    assert plaintext_leaks(CANARY) == []
    assert not list((edge_tl_home / "runs").glob("*.ckpt"))  # checkpoint removed at the end
    res = CliRunner().invoke(
        cli,
        [
            "train",
            "--data",
            "tiny",
            "--out",
            "m2",
            "--scratch",
            "--no-tfidf-head",
            "--config",
            str(tiny_setup),
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    m2 = load_model("m2")
    assert m2.tfidf_head is None and "neural_accuracy" not in m2.metrics
    assert m2.train_config["tfidf_head"] is False


@dataclass
class FakeBase:
    name: str
    model_cfg: ModelConfig
    vocab: list[str]
    state_dict: dict
    manifest: dict


def tiny_base() -> FakeBase:
    from edge_tl.awd_lstm import build_lm

    specials = ["xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxrep", "xxwrep", "xxup", "xxmaj"]
    vocab = specials + ["good", "bad", "the", "zzonlybase", "movie", "plot", "xxfake"]
    cfg = ModelConfig(vocab_size=len(vocab), emb_sz=16, n_hid=32, n_layers=2)
    torch.manual_seed(3)
    sd = build_lm(cfg).state_dict()
    return FakeBase("tinybase", cfg, vocab, sd, {"sha256": "cd" * 32})


def test_base_weights_are_mapped_onto_the_task_vocab() -> None:
    from edge_tl.train.config import TrainConfig
    from edge_tl.train.recipe import finetune_lm

    base = tiny_base()
    texts, _ = make_texts(20)
    cfg = TrainConfig(lm_frozen_epochs=0, lm_epochs=0, min_freq=1, bptt=16)
    lm = finetune_lm(texts, base, cfg)
    emb, old = lm.encoder_state["encoder.weight"], base.state_dict["0.encoder.weight"]
    assert lm.model_cfg.vocab_size == len(lm.vocab) and lm.model_cfg.n_hid == 32
    for tok in ("good", "bad", "the", "movie", "xxbos"):  # shared: copied row by row
        assert torch.equal(emb[lm.vocab.index(tok)], old[base.vocab.index(tok)]), tok
    new = [t for t in lm.vocab if t not in base.vocab and not t.startswith("xxfake")]
    assert new and torch.allclose(emb[lm.vocab.index(new[0])], old.mean(0))  # unseen: mean
    w = lm.encoder_state["rnns.0.weight_hh_l0_raw"]
    assert torch.equal(w, base.state_dict["0.rnns.0.weight_hh_l0_raw"])
    assert lm.base == "tinybase" and lm.base_sha256 == "cd" * 32


def _hardware(cpu_bf16: bool):
    """A 2-core, 16 GiB x86 laptop without a GPU, with or without native bf16."""
    from edge_tl.hardware.device import Hardware

    return Hardware(
        arch="x86_64",
        cpu_model="injected",
        physical_cores=2,
        logical_cores=2,
        isa=("avx2", "avx512f", *(["avx512_bf16"] if cpu_bf16 else [])),
        ram_total=16 * 2**30,
        ram_available=12 * 2**30,
    )


def _transfer(tiny_setup: Path, tmp_path: Path, *flags: str):
    """Import a real tiny base as `tinybase`, then `train --base tinybase` on the tiny data."""
    from edge_tl.bases.store import import_base

    assert import_base(tinydata.tiny_base(tmp_path / "tb.etlb", "tinybase"), allow_unsigned=True)
    toml = tiny_setup.read_text().replace("checkpoint_minutes = 0.0", "checkpoint_minutes = 5.0")
    tiny_setup.write_text(toml.replace('dtype = "fp32"', 'dtype = "auto"'))
    args = ["train", "--data", "tiny", "--out", "t1", "--base", "tinybase"]
    threads = torch.get_num_threads()
    try:
        return CliRunner().invoke(cli, [*args, "--config", str(tiny_setup), "--quiet", *flags])
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize(("cpu_bf16", "want"), [(True, "bf16"), (False, "fp32")])
def test_cli_transfer_from_a_base(
    tiny_setup: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpu_bf16: bool, want: str
) -> None:
    """Fine-tune a real (tiny) base from the store with --dtype auto on injected hardware: the
    runtime trains in bf16 exactly when the CPU has native bf16, and the model records it."""
    from edge_tl.train import settings

    monkeypatch.setattr(settings, "detect", lambda: _hardware(cpu_bf16))
    res = _transfer(tiny_setup, tmp_path, "--stages", "1")
    assert res.exit_code == 0, res.output
    assert "plan: profile laptop-cpu-16gb, device cpu, dtype " + want in res.output
    assert "language-model fine-tuning" in res.output and "LM done:" in res.output
    m = load_model("t1")
    assert m.base == "tinybase" and m.model_cfg.emb_sz == 8  # the base's shape, not the TOML's
    assert m.train_config["stages"] == [1] and m.metrics["lm_tokens_per_s"] > 0
    assert m.train_config["dtype"] == "auto" and m.metrics["dtype"] == want
    # chosen on the validation rows by default, but 4 rows are too few to say: 0.5 stays
    assert m.tfidf_head.weight == 0.5
    assert m.metrics["tfidf_weight_chosen_by"].startswith("fallback: 4 held-out rows < 100")
    res = CliRunner().invoke(cli, ["train", "--data", "tiny", "--out", "t1", "--base", "x"])
    assert res.exit_code == 1
    assert res.output.strip() == (
        "Error: model 't1' already exists. choose another --out name, "
        "or remove it with `edge-tl models rm t1`"
    )


def test_a_transferred_model_records_the_sha256_of_its_stored_base(
    tiny_setup: Path, tmp_path: Path
) -> None:
    """Provenance: the model names its base and the sha256 the store recorded at import."""
    from edge_tl.bases.store import base_info

    res = _transfer(tiny_setup, tmp_path, "--stages", "1", "--dtype", "fp32")
    assert res.exit_code == 0, res.output
    m = load_model("t1")
    assert m.base == "tinybase" and m.base_sha256 == base_info("tinybase").sha256


@pytest.mark.parametrize(
    "texts, labels, message",
    [
        (
            ["a b c"] * 12,
            ["pos"] * 12,
            "Error: the dataset has only one class ('pos'). a "
            "classifier needs rows of at least two labels",
        ),
        (
            ["a b c"] * 12,
            [None] * 12,
            "Error: the dataset has no labelled rows. import a dataset "
            "with a label column (unlabelled rows only help the LM: --lm-data)",
        ),
        (
            ["a b c"] * 14,
            ["pos"] * 12 + ["neg"] * 2,
            "Error: too few rows for the validation "
            "split: label 'neg' has 2 (need at least 10 per label for a 10% split). add labelled "
            "rows, or raise valid_pct in the train config",
        ),
    ],
)
def test_data_problems_are_reported_before_training(
    texts, labels, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The vault already refuses a one-class import, so the dataset is served in memory here.
    names = tuple(sorted({x for x in labels if x is not None}))
    ds = data.Dataset("bad", texts, labels, names, "fp")
    monkeypatch.setattr(runner_mod, "open_dataset", lambda name: ds)
    res = CliRunner().invoke(cli, ["train", "--data", "bad", "--out", "m", "--scratch"])
    assert res.exit_code == 1
    assert res.output.strip() == message


def test_bad_config_and_flags(tiny_setup: Path) -> None:
    r = CliRunner()
    tiny_setup.write_text("[train]\nbogus = 1\n")
    res = r.invoke(cli, ["train", "--data", "tiny", "--out", "m", "--config", str(tiny_setup)])
    assert res.exit_code == 1
    assert res.output.startswith("Error: train config: unknown key 'bogus'. allowed keys are:")
    tiny_setup.write_text('[train]\nbs = "big"\n')
    res = r.invoke(cli, ["train", "--data", "tiny", "--out", "m", "--config", str(tiny_setup)])
    assert res.output.strip() == (
        "Error: train config: key 'bs': expected a whole number, got 'big'."
    )
    res = r.invoke(cli, ["train", "--data", "tiny", "--out", "m", "--tfidf-weight", "2"])
    assert res.exit_code == 1 and res.output.startswith(
        "Error: train config: tfidf_weight must be a share between 0 and 1."
    )
    res = r.invoke(cli, ["train", "--data", "tiny", "--out", "m", "--stages", "1,x"])
    assert res.output.strip() == (
        "Error: --stages '1,x' is not a list of epoch counts. write e.g. --stages 1,1,1,2"
    )
    res = r.invoke(cli, ["train", "--resume", "m", "--data", "tiny"])
    assert res.exit_code == 2 and "--resume continues with the run's own settings" in res.output
    res = r.invoke(cli, ["train", "--resume", "m"])
    assert res.exit_code == 1 and res.output.startswith(
        "Error: no checkpoint to resume for model 'm'."
    )


def test_resolve_config_order() -> None:
    from edge_tl.hardware.profiles import load_profile
    from edge_tl.train.settings import resolve_config

    prof = load_profile("jetson-nano-4gb")
    cfg = resolve_config(prof, {"max_len": 256})
    assert cfg.bptt == prof.bptt and cfg.max_len == 256 and cfg.stages == (0, 0, 0, 10)
    assert resolve_config(None, {}).bptt == 72


@pytest.mark.parametrize("through_rnn", [False, True])
def test_frozen_lm_stage_skips_backward_through_the_lstms(monkeypatch, through_rnn: bool) -> None:
    """Frozen stage: the tied embedding trains (via the decoder), the LSTMs see no backward
    unless lm_frozen_through_rnn asks for fastai's exact recipe; the unfrozen stage always."""
    import edge_tl.train.recipe
    from edge_tl.train.config import TrainConfig
    from edge_tl.train.recipe import finetune_lm

    calls = {"frozen": 0, "unfrozen": 0}
    seen = {}
    real = edge_tl.awd_lstm.build_lm

    def spy(*a, **k):
        m = real(*a, **k)
        seen["model"] = m

        def hook(mod, gin, gout):
            frozen = not next(m[0].rnns[0].parameters()).requires_grad
            calls["frozen" if frozen else "unfrozen"] += 1

        m[0].rnns[0].register_full_backward_hook(hook)
        return m

    monkeypatch.setattr(edge_tl.train.recipe, "build_lm", spy)
    base = tiny_base()
    texts, _ = make_texts(20)
    cfg = TrainConfig(
        lm_frozen_epochs=1,
        lm_epochs=1,
        min_freq=1,
        bptt=16,
        lm_bs=4,
        dtype="fp32",
        lm_frozen_through_rnn=through_rnn,
    )
    lm = finetune_lm(texts, base, cfg)
    assert (calls["frozen"] > 0) == through_rnn
    assert calls["unfrozen"] > 0
    new, old = lm.encoder_state["encoder.weight"], base.state_dict["0.encoder.weight"]
    assert not torch.equal(new[lm.vocab.index("good")], old[base.vocab.index("good")])
    assert not any(h for h in seen["model"][0].encoder_dp._forward_hooks.values())  # cut removed


def test_max_len_under_two_bptt_is_refused_before_training(tiny_setup: Path) -> None:
    """--max-len from bptt to just under 2 x bptt passed validation, then crashed in fastai's
    masked_concat_pool after the LM stage and left a dead checkpoint: refused up front now."""
    from edge_tl.errors import ConfigError
    from edge_tl.store.checkpoints import checkpoint_path
    from edge_tl.train.config import TrainConfig

    for bad in (72, 100, 143):
        with pytest.raises(ConfigError, match="max_len must be >= 2 x bptt"):
            TrainConfig(max_len=bad)
    assert TrainConfig(max_len=144).max_len == 144
    res = CliRunner().invoke(cli, ["train", "--data", "tiny", "--out", "m", "--max-len", "100"])
    assert res.exit_code == 1
    assert res.output == (
        "Error: train config: max_len must be >= 2 x bptt (144 with bptt 72). got 100; change "
        "the flag or the config file that sets it\n"
    )
    assert not checkpoint_path("m").exists()


@pytest.mark.parametrize("bptt", [8, 10])
def test_pooling_works_at_max_len_of_two_bptt(bptt: int) -> None:
    """The bound TrainConfig enforces: at max_len = 2 x bptt every batch shape pools."""
    from edge_tl.awd_lstm import build_classifier
    from edge_tl.train.engine import pooled_features

    net = build_classifier(TINY, 2, seq_len=bptt, max_len=2 * bptt, lin_ftrs=[])
    g = torch.Generator().manual_seed(0)
    for long in range(bptt, 5 * bptt):
        ids = [torch.randint(2, 8, (n,), generator=g) for n in (1, bptt - 1, bptt, long)]
        feats = pooled_features(net[0], ids, 4, bptt, "fp32", False)
        assert feats.shape == (4, 3 * TINY.emb_sz) and torch.isfinite(feats).all()


def test_config_errors_name_the_key_the_value_and_the_range() -> None:
    from edge_tl.errors import ConfigError
    from edge_tl.train.config import TrainConfig

    cases = {
        "valid_pct": (1.5, "a share between 0 and 1"),
        "lm_lr": (0.0, "> 0"),
        "lm_bs": (-1, ">= 0 (0 = planner)"),
        "bptt": (4, ">= 8"),
        "max_vocab": (3, ">= 16"),
        "dtype": ("int8", "auto | bf16 | fp32 | fp16"),
    }
    for key, (value, allowed) in cases.items():
        with pytest.raises(ConfigError) as e:
            TrainConfig(**{key: value})
        assert str(e.value) == (
            f"train config: {key} must be {allowed}. got {value!r}; change the flag or the "
            "config file that sets it"
        )
        assert "TrainConfig(" not in str(e.value) and len(str(e.value)) < 160


def test_epoch_lines_instead_of_bars_when_stdout_is_not_a_terminal(capfd) -> None:
    """Bars only on a terminal: into a log, one line per epoch (no carriage returns)."""
    from edge_tl.train.config import TrainConfig
    from edge_tl.train.recipe import finetune_lm
    from edge_tl.train.settings import Run

    texts, _ = make_texts(20)
    cfg = TrainConfig(
        lm_frozen_epochs=0, lm_epochs=2, min_freq=1, bptt=16, lm_bs=4, dtype="fp32", arch=TINY
    )
    logs: list[str] = []
    finetune_lm(texts, None, cfg, run=Run(log=logs.append))
    out = capfd.readouterr()
    assert "\r" not in out.out + out.err and "█" not in out.out + out.err
    lines = [s for s in logs if s.startswith("epoch ")]
    assert [s.split(":")[0] for s in lines] == ["epoch 1/2", "epoch 2/2"], logs
    assert "train_loss " in lines[0] and "valid_loss " in lines[0] and "accuracy " in lines[0]
    quiet: list[str] = []
    finetune_lm(
        texts,
        None,
        cfg,
        run=Run(progress=False, log=quiet.append),
    )
    assert not [s for s in quiet if s.startswith("epoch ")]
