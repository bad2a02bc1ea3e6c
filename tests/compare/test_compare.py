"""`edge-tl compare`: a tiny curve end to end through the CLI, resume after an interruption,
the budget rule, error lines, and the tables and plot of edge_tl.compare.report."""

from __future__ import annotations

import csv
import io
import json
import random
import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from tinydata import FILLER, NEG, POS, TRANSFER_TOML, tiny_base

from edge_tl.bases.store import import_base
from edge_tl.cli import cli
from edge_tl.compare import report
from edge_tl.compare import resume as resume_mod
from edge_tl.compare import unit as unit_mod
from edge_tl.compare.plan import ComparePlan, Speed, Unit, fit_budget, plan_seconds, unit_seconds
from edge_tl.errors import ConfigError
from edge_tl.store import keys
from edge_tl.store.datasets import save_dataset
from edge_tl.train import recipe as train_mod
from edge_tl.train.config import ULMFIT_RECIPE
from edge_tl.train.settings import Run

CANARY = "zqxcanaryzqx"
CONFIG = TRANSFER_TOML


def _texts(rng: random.Random, n: int, label: str | None) -> list[str]:
    out = []
    for _ in range(n):
        words = rng.choices(FILLER, k=10)
        if label is not None:
            words += rng.choices(POS if label == "pos" else NEG, k=3)
        rng.shuffle(words)
        out.append(" ".join(words))
    return out


@pytest.fixture
def tiny_setup(tmp_path: Path) -> Iterator[Path]:
    """Device identity, tiny train/test datasets (with unlabelled rows), a tiny base, config."""
    keys.init_identity(None)
    rng = random.Random(0)
    texts, labels = [], []
    for lab in ("pos", "neg") * 20:
        texts += _texts(rng, 1, lab)
        labels.append(lab)
    unl = [f"{t} {CANARY}" for t in _texts(rng, 16, None)]
    save_dataset("tiny-train", texts + unl, labels + [None] * len(unl))
    t_texts, t_labels = [], []
    for lab in ("pos", "neg") * 15:
        t_texts += _texts(rng, 1, lab)
        t_labels.append(lab)
    save_dataset("tiny-test", t_texts, t_labels)
    b = tiny_base(tmp_path / "tiny.etlb")
    assert import_base(b, allow_unsigned=True) == "tiny"
    (tmp_path / "tiny.toml").write_text(CONFIG, encoding="utf-8")
    threads = torch.get_num_threads()
    yield tmp_path
    torch.set_num_threads(threads)  # the config's `threads = 1` must not leak into other tests


def _compare(setup: Path, *extra: str) -> tuple[int, str]:
    args = [
        "compare",
        "--data",
        "tiny-train",
        "--test",
        "tiny-test",
        "--base",
        "tiny",
        "--config",
        str(setup / "tiny.toml"),
        "--out",
        str(setup / "out"),
        "--quiet",
        "--sizes",
        "12,24",
        "--seeds",
        "1",
        "--protocol",
        "both",
        *extra,
    ]
    r = CliRunner().invoke(cli, args)
    return r.exit_code, r.output


def _count(monkeypatch, mod, name: str, calls: list[str], fail_at: int | None = None) -> None:
    real = getattr(mod, name)

    def wrapper(*a, **k):
        calls.append(name)
        if fail_at is not None and len(calls) == fail_at:
            raise KeyboardInterrupt  # as if the user pressed ctrl-C mid-run
        return real(*a, **k)

    monkeypatch.setattr(mod, name, wrapper)


def test_tiny_curve_end_to_end_resumes_and_skips(tiny_setup, monkeypatch, edge_tl_home):
    out = tiny_setup / "out"
    # 1) interrupted in the 4th classifier training (size 24, scratch)
    calls: list[str] = []
    with monkeypatch.context() as m:
        _count(m, train_mod, "train_classifier", calls, fail_at=4)
        code, output = _compare(tiny_setup)
    assert code != 0
    assert "plan: 8 units (0 finished, skipped), sizes 12,24, seeds 0, 30 test rows" in output
    assert "estimated time: ~" in output
    doc = json.loads((out / "results.json").read_text())
    first = set(doc["runs"])
    assert first == {
        "tfidf/none/12/0",
        "scratch/none/12/0",
        "transfer/supervised/12/0",
        "transfer/semi/12/0",
        "tfidf/none/24/0",
    }
    # 2) the rerun trains only what is missing
    calls = []
    lm_calls: list[str] = []
    tfidf_calls: list[str] = []
    with monkeypatch.context() as m:
        _count(m, train_mod, "train_classifier", calls)
        _count(m, train_mod, "finetune_lm", lm_calls)
        _count(m, unit_mod, "tfidf_accuracy", tfidf_calls)
        code, output = _compare(tiny_setup)
    assert code == 0, output
    assert "plan: 8 units (5 finished, skipped)" in output
    assert (len(calls), len(lm_calls), len(tfidf_calls)) == (3, 1, 0)  # semi LM is reused
    doc = json.loads((out / "results.json").read_text())
    assert set(doc["runs"]) == first | {
        "scratch/none/24/0",
        "transfer/supervised/24/0",
        "transfer/semi/24/0",
    }
    for key, r in doc["runs"].items():
        assert key == f"{r['arm']}/{r['protocol']}/{r['size']}/{r['seed']}"
        assert 0.0 <= r["accuracy"] <= 1.0 and r["test_rows"] == 30
        assert sum(map(sum, r["confusion_matrix"])) == 30
        assert {"edge_tl", "torch", "fastai"} <= set(r["versions"])
        assert r["device"]["device"] == "cpu" and r["seconds"] > 0 and r["timings"]
        assert r["config"]["seed"] == 0
    assert doc["runs"]["tfidf/none/24/0"]["accuracy"] >= 0.9  # the signal words separate it
    assert doc["runs"]["scratch/none/12/0"]["config"]["scratch"] is True
    for key in ("transfer/semi/24/0", "transfer/supervised/12/0"):  # the transfer + TF-IDF mean
        ens = doc["runs"][key]["metrics"]["ensemble"]
        assert 0.0 <= ens["accuracy"] <= 1.0 and sum(map(sum, ens["confusion_matrix"])) == 30
        assert ens["tfidf_c"] == doc["runs"][f"tfidf/none/{key.split('/')[2]}/0"]["metrics"]["c"]
    assert "ensemble" not in doc["runs"]["scratch/none/12/0"]["metrics"]
    # arms are the network alone (train's TF-IDF head off), and the setup (and so its digests)
    # is what it was before the head existed
    assert not {"tfidf_head", "tfidf_weight"} & set(doc["setup"]["train_config"])
    assert all(
        r["config"]["tfidf_head"] is False for r in doc["runs"].values() if r["arm"] != "tfidf"
    )
    assert doc["runs"]["transfer/supervised/12/0"]["timings"]["lm"] > 0
    assert doc["semi_lm"]["texts"] == 56  # all 40 labelled texts + 16 unlabelled, once
    assert doc["runs"]["transfer/semi/12/0"]["timings"]["shared_lm"] > 0
    assert "shared_lm" not in doc["runs"]["transfer/semi/24/0"]["timings"]
    # 3) a third run trains nothing at all
    calls = []
    with monkeypatch.context() as m:
        _count(m, train_mod, "train_classifier", calls)
        _count(m, train_mod, "finetune_lm", calls)
        _count(m, unit_mod, "tfidf_accuracy", calls)
        code, output = _compare(tiny_setup)
    assert code == 0 and calls == [] and "8 units (8 finished, skipped)" in output
    # tables agree with results.json
    rows = list(csv.DictReader(io.StringIO((out / "table.csv").read_text())))
    by = {(r["series"], int(r["size"])): r for r in rows}
    for r in doc["runs"].values():
        assert float(by[(f"{r['arm']}/{r['protocol']}", r["size"])]["mean"]) == pytest.approx(
            r["accuracy"], abs=1e-4
        )
    gap = (
        doc["runs"]["transfer/semi/24/0"]["accuracy"] - doc["runs"]["scratch/none/24/0"]["accuracy"]
    )
    assert float(by[("transfer/semi − scratch", 24)]["mean"]) == pytest.approx(gap, abs=1e-4)
    ens = doc["runs"]["transfer/semi/24/0"]["metrics"]["ensemble"]["accuracy"]
    assert float(by[("transfer+tfidf/semi", 24)]["mean"]) == pytest.approx(ens, abs=1e-4)
    md = (out / "table.md").read_text()
    assert f"{doc['runs']['tfidf/none/12/0']['accuracy']:.3f} ± 0.000 (1)" in md
    png = (out / "curve.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    # the shared LM is encrypted, and no file anywhere holds the training text
    assert (out / "semi-lm.age").read_bytes().startswith(b"age-encryption.org/v1")
    for root in (out, edge_tl_home):
        for p in root.rglob("*"):
            assert not p.is_file() or CANARY.encode() not in p.read_bytes(), p


def test_shared_lm_resumes_from_its_checkpoint(tiny_setup, monkeypatch, edge_tl_home):
    from edge_tl.store import checkpoints as checkpoint

    real, saved = checkpoint.save_checkpoint, []

    def save_then_stop(c):  # killed right after the first epoch's checkpoint
        real(c)
        saved.append(c.position)
        raise KeyboardInterrupt

    args = ("--arms", "transfer", "--protocol", "semi", "--sizes", "12")
    with monkeypatch.context() as m:
        m.setattr(resume_mod, "save_checkpoint", save_then_stop)
        code, output = _compare(tiny_setup, *args)
    assert code != 0 and [(p.phase, p.stage, p.epoch) for p in saved] == [("lm", 1, 0)]
    (ck,) = (edge_tl_home / "runs").glob("compare-semi-*.ckpt")
    assert ck.read_bytes().startswith(b"age-encryption.org/v1")
    code, output = _compare(tiny_setup, *args)
    assert code == 0, output
    assert "shared LM (semi): fine-tuning on 56 texts, resuming at stage 2" in output
    assert not ck.exists()  # removed once the LM is saved
    doc = json.loads((tiny_setup / "out" / "results.json").read_text())
    assert list(doc["runs"]) == ["transfer/semi/12/0"] and doc["semi_lm"]["lm_epochs_run"] == 1


@pytest.mark.parametrize(
    ("arm", "protocol", "phase"),
    [
        ("scratch", "semi", "clas"),
        ("transfer", "supervised", "lm"),
        ("transfer", "supervised", "clas"),
    ],
)
def test_an_interrupted_unit_resumes_and_ends_as_an_uninterrupted_one(
    tiny_setup, monkeypatch, edge_tl_home, arm, protocol, phase
):
    """A long unit killed after a checkpoint continues from it, not from its start."""
    from edge_tl.store import checkpoints as checkpoint

    args = ("--arms", arm, "--protocol", protocol, "--sizes", "24")
    code, output = _compare(tiny_setup, *args, "--out", str(tiny_setup / "ref"))
    assert code == 0, output
    (ref,) = json.loads((tiny_setup / "ref" / "results.json").read_text())["runs"].values()
    real, saved = checkpoint.save_checkpoint, []

    def save_then_stop(c):  # killed right after the unit's first checkpoint of `phase`
        real(c)
        saved.append(c.position)
        if c.name.startswith("compare-unit-") and c.position.phase == phase:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(resume_mod, "save_checkpoint", save_then_stop)
        code, output = _compare(tiny_setup, *args)
    assert code != 0 and saved[-1].phase == phase
    (ck,) = (edge_tl_home / "runs").glob("compare-unit-*.ckpt")
    assert ck.read_bytes().startswith(b"age-encryption.org/v1")
    code, output = _compare(tiny_setup, *args)
    assert code == 0, output
    assert f"{ref['arm']}/{ref['protocol']}/24/0: resuming at {phase} stage" in output
    assert not ck.exists()
    (rec,) = json.loads((tiny_setup / "out" / "results.json").read_text())["runs"].values()
    assert rec["confusion_matrix"] == ref["confusion_matrix"]
    assert rec["accuracy"] == ref["accuracy"]


def test_an_interrupted_unit_resumes_with_other_threads(tiny_setup, monkeypatch, edge_tl_home):
    """threads change speed, not results: the unit's checkpoint still applies."""
    from edge_tl.store import checkpoints as checkpoint

    real = checkpoint.save_checkpoint

    def save_then_stop(c):
        real(c)
        raise KeyboardInterrupt

    args = ("--arms", "scratch", "--sizes", "24")
    with monkeypatch.context() as m:
        m.setattr(resume_mod, "save_checkpoint", save_then_stop)
        assert _compare(tiny_setup, *args)[0] != 0
    (ck,) = (edge_tl_home / "runs").glob("compare-unit-*.ckpt")
    (tiny_setup / "tiny.toml").write_text(
        CONFIG.replace("threads = 1", "threads = 2"), encoding="utf-8"
    )
    code, output = _compare(tiny_setup, *args)
    assert code == 0, output
    assert "scratch/none/24/0: resuming at clas stage 2" in output
    assert not ck.exists()


def test_rerun_with_other_settings_is_refused(tiny_setup):
    code, output = _compare(tiny_setup, "--arms", "tfidf")
    assert code == 0, output
    (tiny_setup / "tiny.toml").write_text(CONFIG.replace("bs = 8", "bs = 4"), encoding="utf-8")
    code, output = _compare(tiny_setup, "--arms", "tfidf")
    assert code == 1
    assert output.splitlines()[-1] == (
        f"Error: {tiny_setup / 'out' / 'results.json'} holds runs made with another "
        "train_config. rerun with the same settings, or pass another --out to start a new "
        "comparison"
    )


def test_rerun_with_other_threads_continues(tiny_setup):
    """threads, workers and checkpoint_minutes change speed, not results: a comparison resumes
    with other values and skips what it finished."""
    code, output = _compare(tiny_setup, "--arms", "tfidf")
    assert code == 0, output
    assert "threads = 1" in CONFIG
    (tiny_setup / "tiny.toml").write_text(
        CONFIG.replace("threads = 1", "threads = 2") + "checkpoint_minutes = 3.0\n",
        encoding="utf-8",
    )
    code, output = _compare(tiny_setup, "--arms", "tfidf")
    assert code == 0, output
    assert "plan: 2 units (2 finished, skipped)" in output


def test_dry_run_budget_drops_and_says_so(tiny_setup):
    code, output = _compare(
        tiny_setup,
        "--arms",
        "tfidf",
        "--dry-run",
        "--budget-minutes",
        "0.05",
        "--sizes",
        "12,24,36",
    )
    assert code == 0, output
    assert "dropped size 36, size 24" in output  # tf-idf: 1 s + 0.06 s per row
    assert "plan: 1 units (0 finished, skipped), sizes 12, seeds 0" in output
    assert output.endswith("dry run: nothing trained\n")
    assert not (tiny_setup / "out" / "results.json").exists()


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        (
            ["--sizes", "12,x"],
            "Error: --sizes '12,x' is not a comma-separated list of whole "
            "numbers. write e.g. --sizes 500,1000",
        ),
        (["--sizes", "12,500"], "Error: subset size 500 is larger than the 40 labelled rows."),
        (
            ["--arms", "transfer,magic"],
            "Error: compare: --arms must be transfer, scratch, tfidf, train.",
        ),
        (
            ["--base", "nope"],
            "Error: base 'nope' not found. run `edge-tl base list` to see the installed bases",
        ),
    ],
)
def test_errors(tiny_setup, extra, error):
    code, output = _compare(tiny_setup, *extra)
    assert code == 1 and output.splitlines()[-1] == error


def test_semi_needs_unlabelled_text(tiny_setup):
    r = CliRunner().invoke(
        cli,
        [
            "compare",
            "--data",
            "tiny-test",
            "--test",
            "tiny-test",
            "--protocol",
            "semi",
            "--base",
            "tiny",
            "--sizes",
            "10",
            "--out",
            str(tiny_setup / "o"),
        ],
    )
    assert r.exit_code == 1
    assert r.output.splitlines()[-1] == (
        "Error: protocol semi needs unlabelled text, and dataset 'tiny-test' has no unlabelled "
        "rows. import some, or pass --lm-data NAME"
    )


# ---------------------------------------------------------------- pure parts


def test_units_order_and_keys():
    p = ComparePlan("d", "t", sizes=(20, 10), seeds=(0, 1), protocols=("supervised", "semi"))
    keys_ = [u.key for u in p.units()]
    assert keys_[:4] == [
        "tfidf/none/10/0",
        "scratch/none/10/0",
        "transfer/supervised/10/0",
        "transfer/semi/10/0",
    ]
    assert len(keys_) == 16 and len(set(keys_)) == 16 and keys_[-1] == "transfer/semi/20/1"
    with pytest.raises(ConfigError, match="--protocol"):
        ComparePlan("d", "t", protocols=("weak",))


def test_fit_budget_drops_sizes_then_seeds_then_test_rows():
    def cost(p: ComparePlan) -> float:  # seconds: size x seeds x test rows / 1000
        return sum(p.sizes) * len(p.seeds) * p.test_rows / 1000

    p = ComparePlan("d", "t", sizes=(100, 200, 400), seeds=(0, 1, 2), test_rows=4000)
    assert fit_budget(p, cost, 1e9, True) == (p, [])
    q, dropped = fit_budget(p, cost, 100 * 2 * 4000 / 1000, True)
    assert dropped == ["size 400", "size 200", "seed 2"] and q.sizes == (100,)
    assert q.seeds == (0, 1) and q.test_rows == 4000
    q, dropped = fit_budget(p, cost, 100 * 1000 / 1000, True)
    assert dropped[-3:] == ["seed 1", "test rows 4000 -> 2000", "test rows 2000 -> 1000"]
    with pytest.raises(ConfigError, match="even the smallest plan"):
        fit_budget(p, cost, 1.0, False)


def test_estimate_adds_the_shared_lm_once_and_prefers_measured_speed():
    cfg = train_mod.TrainConfig(**ULMFIT_RECIPE)  # LM 1 + 1 epochs; classifier stages 1,1,1,2
    sp = Speed(
        lm_tps=100.0,
        clas_tps=50.0,
        infer_tps=1000.0,
        tokens_per_doc=10.0,
        test_rows=200,
        lm_docs=1000,
    )
    scratch = unit_seconds(Unit("scratch", "none", 100, 0), sp, cfg, 200)
    assert scratch == pytest.approx(100 * 10 / 1000 + 100 * 10 * 4 / 50 + 200 * 10 / 1000)
    sup = unit_seconds(Unit("transfer", "supervised", 100, 0), sp, cfg, 200)
    assert sup == pytest.approx(scratch + 100 * 10 * 2 / 100)
    p = ComparePlan(
        "d", "t", sizes=(100,), seeds=(0, 1), arms=("transfer",), protocols=("semi",), test_rows=200
    )
    shared_lm = 1000 * 10 * 2 / 100
    assert plan_seconds(p, sp, cfg, set(), False) == pytest.approx(2 * scratch + shared_lm)
    assert plan_seconds(p, sp, cfg, set(), True) == pytest.approx(2 * scratch)
    assert plan_seconds(p, sp, cfg, {"transfer/semi/100/0"}, True) == pytest.approx(scratch)
    fast = Speed(100.0, 50.0, 1000.0, 10.0, 200, 1000, measured={"scratch/none": 0.01})
    assert unit_seconds(Unit("scratch", "none", 100, 0), fast, cfg, 200) == pytest.approx(1.0)


def test_scratch_in_fp32_is_estimated_at_its_own_speed():
    """Under bf16 autocast scratch trains in fp32: its units use an fp32 measurement, and only
    when scratch units are left to run."""
    from edge_tl.compare.plan import with_scratch_speed

    cfg = train_mod.TrainConfig(**ULMFIT_RECIPE)
    sp = Speed(100.0, 50.0, 1000.0, 10.0, 200, 1000)
    calls = []

    def measure(shape, run, cfg, seq, lm=True):  # noqa: ANN001, ANN202
        calls.append((run.dtype, lm))
        return 0.0, 20.0, 400.0

    p = ComparePlan(
        "d",
        "t",
        sizes=(100,),
        seeds=(0,),
        arms=("transfer", "scratch"),
        protocols=("semi",),
        test_rows=200,
    )
    bf16 = Run(dtype="bf16")
    got = with_scratch_speed(sp, p, set(), cfg, bf16, measure, None)
    assert calls == [("fp32", False)] and (got.scratch_clas_tps, got.scratch_infer_tps) == (20, 400)
    slow = unit_seconds(Unit("scratch", "none", 100, 0), got, cfg, 200)
    assert slow == pytest.approx(100 * 10 / 400 + 100 * 10 * 4 / 20 + 200 * 10 / 400)
    # transfer keeps the run's speed; nothing is measured when no scratch unit is left, or
    # when the run is fp32 already
    same = unit_seconds(Unit("transfer", "semi", 100, 0), got, cfg, 200)
    assert same == unit_seconds(Unit("transfer", "semi", 100, 0), sp, cfg, 200)
    assert with_scratch_speed(sp, p, {"scratch/none/100/0"}, cfg, bf16, measure, None) is sp
    assert with_scratch_speed(sp, p, set(), cfg, Run(dtype="fp32"), measure, None) is sp
    assert len(calls) == 1


def _runs(values: dict[tuple[str, str, int], list[float]]) -> dict:
    out = {}
    for (arm, protocol, size), accs in values.items():
        for seed, a in enumerate(accs):
            out[Unit(arm, protocol, size, seed).key] = {
                "arm": arm,
                "protocol": protocol,
                "size": size,
                "seed": seed,
                "accuracy": a,
            }
    return out


def test_report_header_names_arms_that_trained_in_another_dtype():
    runs = _runs({("transfer", "semi", 500): [0.8], ("scratch", "none", 500): [0.5]})
    runs["scratch/none/500/0"]["metrics"] = {"dtype": "fp32"}
    runs["transfer/semi/500/0"]["metrics"] = {"dtype": "bf16"}
    doc = {"runs": runs, "device": {"device": "cpu", "dtype": "bf16"}}
    assert report.markdown_table(doc).splitlines()[0].endswith("; cpu bf16 (scratch in fp32).")
    runs["scratch/none/500/0"]["metrics"]["dtype"] = "bf16"
    assert report.markdown_table(doc).splitlines()[0].endswith("; cpu bf16.")


def test_report_header_says_where_units_ran_when_devices_differ():
    runs = _runs({("transfer", "semi", 500): [0.8, 0.81], ("tfidf", "none", 500): [0.8]})
    cpu = {"device": "cpu", "cuda": None}
    runs["transfer/semi/500/0"]["device"] = {"device": "cuda", "cuda": "NVIDIA H200"}
    runs["transfer/semi/500/1"]["device"] = cpu
    runs["tfidf/none/500/0"]["device"] = cpu
    doc = {"runs": runs, "device": {"device": "cpu", "dtype": "bf16"}}
    head = report.markdown_table(doc).splitlines()[0]
    assert head.endswith("; cpu bf16; neural units: 1 on NVIDIA H200, 1 on cpu.")
    runs["transfer/semi/500/0"]["device"] = cpu
    assert report.markdown_table(doc).splitlines()[0].endswith("; cpu bf16.")


def test_report_means_gaps_references_and_plot():
    runs = _runs(
        {
            ("transfer", "supervised", 500): [0.80, 0.84, 0.82],
            ("scratch", "none", 500): [0.60, 0.70, 0.62],
            ("tfidf", "none", 500): [0.81, 0.81, 0.82],
            ("transfer", "supervised", 1000): [0.86],
        }
    )
    doc = {
        "runs": runs,
        "plan": {"references": "imdb"},
        "setup": {"test_rows": 5000, "test": "imdb-test", "data": "imdb-train"},
    }
    cells = report.aggregate(runs)
    c = cells["transfer/supervised"][500]
    assert c.mean == pytest.approx(0.82)
    assert c.std == pytest.approx(statistics.stdev([0.8, 0.84, 0.82]))
    g = report.gaps(runs)["transfer/supervised − scratch"]
    assert list(g) == [500]  # no scratch run at 1000: no gap there
    assert g[500].mean == pytest.approx(((0.8 - 0.6) + (0.84 - 0.7) + (0.82 - 0.62)) / 3)
    md = report.markdown_table(doc)
    header = md.splitlines()[2]
    assert header == (
        "| size | transfer (supervised) | scratch | TF-IDF + LR | transfer/supervised"
        " − scratch | published study: scratch | published study: ULMFiT | "
        "TF-IDF + LR (reference) |"
    )
    assert (
        "| 500 | 0.820 ± 0.020 (3) | 0.640 ± 0.053 (3) | 0.813 ± 0.006 (3) | +0.180 ± 0.035 |"
        " 0.541 | 0.767 | 0.811 |" in md
    )
    assert "| 1,000 | 0.860 ± 0.000 (1) |  |  |  | 0.633 | 0.825 | 0.841 |" in md
    assert "published" not in report.markdown_table({**doc, "plan": {"references": "none"}})
    rows = list(csv.DictReader(io.StringIO(report.csv_table(doc))))
    assert rows[0] == {
        "series": "transfer/supervised",
        "size": "500",
        "seeds": "3",
        "mean": "0.8200",
        "std": "0.0200",
        "min": "0.8000",
        "max": "0.8400",
    }
    import matplotlib.image

    png = report.plot_png(doc)
    img = matplotlib.image.imread(io.BytesIO(png), format="png")
    assert img.shape[0] > 300 and img.shape[1] > 500


@pytest.mark.parametrize("through_rnn", [True, False])
def test_results_from_before_lm_frozen_through_rnn_count_as_fastais_recipe(tiny_setup, through_rnn):
    """Old results.json (no such key) were trained with backward through the frozen LSTMs:
    they continue with lm_frozen_through_rnn = true and refuse false."""
    code, output = _compare(tiny_setup, "--arms", "tfidf")
    assert code == 0, output
    path = tiny_setup / "out" / "results.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    del doc["setup"]["train_config"]["lm_frozen_through_rnn"]
    path.write_text(json.dumps(doc), encoding="utf-8")
    (tiny_setup / "tiny.toml").write_text(
        CONFIG + f"lm_frozen_through_rnn = {str(through_rnn).lower()}\n", encoding="utf-8"
    )
    code, output = _compare(tiny_setup, "--arms", "tfidf")
    assert code == (0 if through_rnn else 1), output


def test_shared_lm_digest_ignores_classifier_recipe_but_not_lm_settings():
    from edge_tl.compare.lm import CLASSIFIER_ONLY, LM_DIGEST_FILL, lm_digest
    from edge_tl.train.config import TrainConfig, config_dict

    setup = {"data": "d", "train_config": config_dict(TrainConfig())}
    other_recipe = {
        **setup,
        "train_config": {
            **setup["train_config"],
            "stages": [0, 0, 0, 10],
            "lr": 0.01,
            "discriminative": "off",
        },
    }
    other_lm = {**setup, "train_config": {**setup["train_config"], "lm_epochs": 3}}
    assert lm_digest(other_recipe) == lm_digest(setup)
    assert lm_digest(other_lm) != lm_digest(setup)
    assert lm_digest({**setup, "data": "e"}) != lm_digest(setup)
    # known answer: the digest must not move when the classifier defaults do (stored LMs)
    assert lm_digest({"data": "d", "train_config": {"lm_epochs": 1, "stages": [3]}}) == (
        "904efbc5b51b848607db84eda09ddbd541a4fdf4d33588cfcc352fdd4ddf9d75"
    )
    later = {"lm_epochs": 1, "stages": [3], "train_on_unused_valid": True}
    assert lm_digest({"data": "d", "train_config": later}) == (
        "904efbc5b51b848607db84eda09ddbd541a4fdf4d33588cfcc352fdd4ddf9d75"
    )
    assert set(LM_DIGEST_FILL) == set(CLASSIFIER_ONLY)
