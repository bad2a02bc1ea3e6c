"""compare's `train` arm: what `edge-tl train` ships (network + TF-IDF head, stacked or at the
chosen share), scored beside its parts and the mixing levers, and nothing per row left on disk."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_compare import CANARY, _compare, tiny_setup  # noqa: F401  (fixture)

from edge_tl.compare import report
from edge_tl.compare.shipped import first_sentences, stacker
from edge_tl.store.models import load_model, save_model
from edge_tl.train import recipe as train_mod
from edge_tl.train.config import TrainConfig


def test_train_arm_records_the_mix_its_parts_and_the_levers(tiny_setup, edge_tl_home):  # noqa: F811
    toml = tiny_setup / "tiny.toml"  # validation rows held out, as from 1,000 labels
    toml.write_text(toml.read_text() + "train_on_unused_valid = false\n")
    code, output = _compare(
        tiny_setup, "--arms", "train,tfidf", "--protocol", "semi", "--sizes", "24"
    )
    assert code == 0, output
    out = tiny_setup / "out"
    doc = json.loads((out / "results.json").read_text())
    r = doc["runs"]["train/semi/24/0"]
    m = r["metrics"]
    # the record's accuracy is the mix at the chosen share: the test sweep, computed apart from
    # it, says the same at that share
    assert r["accuracy"] == pytest.approx(m["test_sweep"][f"{m['tfidf_weight']:.2f}"])
    assert m["test_sweep"]["0.00"] == pytest.approx(m["network_accuracy"])
    assert m["test_sweep"]["1.00"] == pytest.approx(m["head_accuracy"])
    assert m["tfidf_weight_chosen_by"].startswith("fallback")  # 2-3 held-out rows < 100
    assert m["valid_rows"] < 24  # train's own split: the network did not see every row
    lv = m["levers"]
    assert lv["fixed_0.5"] == pytest.approx(m["test_sweep"]["0.50"])
    assert m["tfidf_mix"] == "share" and lv["share"] == r["accuracy"]
    assert set(lv) == {
        "share",
        "fixed_0.5",
        "weight_any_rows",
        "stacked",
        "nb_head",
        "trigram_head",
    }
    assert 0.0 <= lv["nb_head"]["head_accuracy"] <= 1.0
    assert set(m["short"]) == {
        "network_accuracy",
        "head_accuracy",
        "accuracy",
        "share",
        "fixed_0.5",
        "weight_any_rows",
        "stacked",
    }
    assert r["config"]["tfidf_head"] is True and r["config"]["tfidf_weight_auto"] is True
    # the table carries the shipped mix and both parts; no text reached the results folder
    md = (out / "table.md").read_text()
    for col in ("what `train` ships (semi)", "its network (semi)", "its TF-IDF head"):
        assert col in md
    for f in out.iterdir():
        assert CANARY.encode() not in f.read_bytes()


def test_train_arm_ships_the_stacked_mix_when_enough_rows_choose(tiny_setup, edge_tl_home):  # noqa: F811
    toml = tiny_setup / "tiny.toml"  # 2 held-out rows are "enough" here; 100 by default
    toml.write_text(toml.read_text() + "train_on_unused_valid = false\ntfidf_weight_min_rows = 2\n")
    code, output = _compare(tiny_setup, "--arms", "train", "--protocol", "semi", "--sizes", "24")
    assert code == 0, output
    r = json.loads((tiny_setup / "out" / "results.json").read_text())["runs"]["train/semi/24/0"]
    m = r["metrics"]
    assert m["tfidf_mix"] == "stacked", m["tfidf_weight_chosen_by"]
    # what ships is the stacker the levers fit on the same held-out rows; the share apart
    assert r["accuracy"] == m["levers"]["stacked"]
    assert m["short"]["accuracy"] == m["short"]["stacked"]
    assert m["levers"]["share"] == pytest.approx(m["test_sweep"][f"{m['tfidf_weight']:.2f}"])


def test_held_out_probabilities_stay_in_memory(tiny_setup, edge_tl_home, monkeypatch):  # noqa: F811
    seen = {}
    real = train_mod.train_classifier

    def keep(*a, **k):
        seen["m"] = real(*a, **k)
        return seen["m"]

    monkeypatch.setattr(train_mod, "train_classifier", keep)
    code, output = _compare(tiny_setup, "--arms", "train", "--protocol", "semi", "--sizes", "24")
    assert code == 0, output
    m = seen["m"]
    assert len(m.held_out["neural"]) == len(m.held_out["y"]) == m.metrics["valid_rows"]
    m.name = "held"
    save_model(m)
    assert load_model("held").held_out is None


def test_stacking_follows_the_informative_model():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    good = np.where(y[:, None] == np.arange(2), 0.9, 0.1)  # right, with confidence 0.9
    noise = rng.uniform(0.05, 0.95, 200)
    bad = np.stack([noise, 1 - noise], 1)  # uninformative
    yt = rng.integers(0, 2, 100)
    good_t = np.where(yt[:, None] == np.arange(2), 0.8, 0.2)
    noise_t = rng.uniform(0.05, 0.95, 100)
    bad_t = np.stack([noise_t, 1 - noise_t], 1)
    for net, head, net_t, head_t in ((bad, good, bad_t, good_t), (good, bad, good_t, bad_t)):
        p = stacker(net, head, y, seed=0)(net_t, head_t)
        assert (p.argmax(1) == yt).mean() == 1.0
    assert stacker(bad, good, np.zeros(200, int), seed=0) is None


def test_first_sentences():
    text = "Dull. Predictable!<br />A mess? Yes. No"
    assert first_sentences(text) == "Dull. Predictable!"
    assert first_sentences("no stop at all") == "no stop at all"


def test_report_shows_the_train_arm_and_its_parts():
    runs = {
        f"train/semi/500/{s}": {
            "arm": "train",
            "protocol": "semi",
            "size": 500,
            "seed": s,
            "accuracy": a,
            "metrics": {"network_accuracy": n, "head_accuracy": h},
        }
        for s, (a, n, h) in enumerate([(0.85, 0.80, 0.83), (0.87, 0.82, 0.84)])
    }
    cells = report.aggregate(runs)
    assert cells["train/semi"][500].mean == pytest.approx(0.86)
    assert cells["train-network/semi"][500].mean == pytest.approx(0.81)
    assert cells["train-head/semi"][500].mean == pytest.approx(0.835)


def test_a_train_unit_needs_the_head():
    from edge_tl.compare.shipped import shipped_metrics

    class M:
        tfidf_head, held_out = None, None

    with pytest.raises(ValueError, match="head"):
        shipped_metrics(M(), TrainConfig(), [], [], [], ["a", "b"], lambda t: None)


def test_in_sample_validation_rows_choose_nothing(tiny_setup, edge_tl_home):  # noqa: F811
    toml = tiny_setup / "tiny.toml"
    toml.write_text(toml.read_text() + "train_on_unused_valid = true\n")
    code, output = _compare(tiny_setup, "--arms", "train", "--protocol", "semi", "--sizes", "24")
    assert code == 0, output
    doc = json.loads((tiny_setup / "out" / "results.json").read_text())
    m = doc["runs"]["train/semi/24/0"]["metrics"]
    assert m["levers"]["weight_any_rows"] is None and m["levers"]["stacked"] is None
    assert m["short"]["stacked"] is None and m["tfidf_weight"] == 0.5
    assert doc["runs"]["train/semi/24/0"]["config"]["train_on_unused_valid"] is True


def test_train_arm_with_a_backward_base_averages_both_directions(tiny_setup, edge_tl_home):  # noqa: F811
    """backward_base: the arm fine-tunes the backward base once (shared, reversed texts), trains
    the backward network beside the forward one and scores the mean of both, as `train` does."""
    import tinydata

    from edge_tl.bases.store import import_base

    bwd = tinydata.tiny_base(tiny_setup / "bwd.etlb", "tinybwd", seed=1)
    assert import_base(bwd, allow_unsigned=True) == "tinybwd"
    toml = tiny_setup / "tiny.toml"
    toml.write_text(
        toml.read_text()
        + 'train_on_unused_valid = false\ntfidf_weight_min_rows = 2\nbackward_base = "tinybwd"\n'
    )
    code, output = _compare(tiny_setup, "--arms", "train", "--protocol", "semi", "--sizes", "24")
    assert code == 0, output
    doc = json.loads((tiny_setup / "out" / "results.json").read_text())
    r = doc["runs"]["train/semi/24/0"]
    assert r["config"]["backward_base"] == "tinybwd"
    assert "backward" in r["timings"] and doc["semi_lm_backward"]["texts"] > 0
    m = r["metrics"]
    for key in ("forward_network_accuracy", "backward_network_accuracy", "backward_lm_perplexity"):
        assert key in m, key
    # the forward network alone, with its own mix, on the same test rows and short texts
    fo = m["forward_only"]
    assert set(fo) == {"tfidf_mix", "full", "short"}
    assert 0.0 <= fo["full"]["accuracy"] <= 1.0 and 0.0 <= fo["short"]["network_accuracy"] <= 1.0
    work = list(tiny_setup.rglob("semi-lm-bwd.age"))
    assert work, "the backward shared LM is stored (encrypted) beside the forward one"
    assert CANARY.encode() not in work[0].read_bytes()
