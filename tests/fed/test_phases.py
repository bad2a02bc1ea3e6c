"""What a federation trains besides the classifier (the language model, the TF-IDF head), its
differential privacy, and a node holding data encrypted for another device."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import tinydata
from conftest import held_out_accuracy, node_rows, tiny_settings


def test_an_lm_round_lowers_the_nodes_lm_loss_and_moves_encoder_and_bias(
    fed_store: Path,
) -> None:
    import torch

    from edge_tl.bases.store import load_base
    from edge_tl.fed.local import load_node_data, train_lm_local
    from edge_tl.fed.weights import (
        LM_BIAS,
        get_arrays,
        initial_extras,
        initial_model,
        layout_of,
        model_shape,
    )

    s = tiny_settings(lm_rounds=1, lm_epochs=1, lm_lr=1e-2, data="a")
    base = load_base("tiny")
    model = initial_model(s, base)
    layout = layout_of(model, s, base.vocab)
    extras = initial_extras(layout, base)
    assert np.array_equal(extras[LM_BIAS], base.state_dict["1.decoder.bias"].numpy())
    data = load_node_data(s, {}, list(base.vocab))
    assert len(data.lm_ids) == len(data.ids)  # labelled rows only: the dataset has no others

    def lm_loss(bias: np.ndarray) -> float:
        from edge_tl.awd_lstm import build_lm
        from edge_tl.train.engine import lm_loader

        lm = build_lm(model_shape(base))
        lm[0].load_state_dict(model[0].module.state_dict())
        lm[1].decoder.bias.data = torch.from_numpy(bias.copy())
        lm.eval()
        lm.reset()
        with torch.no_grad():
            losses = [
                float(torch.nn.functional.cross_entropy(lm(x)[0].flatten(0, 1), y.flatten()))
                for x, y in lm_loader(data.lm_ids, 8, 8, False)
            ]
        return float(np.mean(losses))

    before = get_arrays(model, layout, extras)
    loss0 = lm_loss(extras[LM_BIAS])
    bias, metrics = train_lm_local(model, extras[LM_BIAS], data, s, model_shape(base))
    after = get_arrays(model, layout, {**extras, LM_BIAS: bias})
    moved = {k for k, a, b in zip(layout.keys, before, after, strict=True) if not np.allclose(a, b)}
    assert LM_BIAS in moved and "0.module.rnns.0.weight_hh_l0_raw" in moved
    assert not any(k.startswith("1.") for k in moved)  # the classifier's head is not trained
    assert lm_loss(bias) < loss0 - 0.1, (loss0, metrics)


def test_the_federated_head_counts_pooled_documents_and_classifies() -> None:
    from edge_tl.fed import head as fed_head
    from edge_tl.fed.weights import weighted_mean
    from edge_tl.tfidf_head import head_proba

    vocab = ["xxunk", "xxmaj", "The", "the", "film", "great", "good", "fine", "bad", "awful"]
    vocab += ["poor", "a", "movie", "plot", ",", "was", "the"]
    feats = fed_head.head_features(vocab)
    assert feats == "the film great good fine bad awful poor movie plot was".split()
    nodes = [tinydata.keyword_texts(n, seed) for n, seed in ((60, 1), (40, 2))]
    y = [[int(lab == "pos") for lab in labels] for _, labels in nodes]
    start = fed_head.zero_arrays(2, len(feats))
    local = [
        fed_head.fit_local(fed_head.count_matrix(t, feats), yy, 2, start, 0)
        for (t, _), yy in zip(nodes, y, strict=True)
    ]
    # what SecAgg+ hands the coordinator: the row-weighted mean of the nodes' arrays
    mean = weighted_mean([(a, len(yy)) for a, yy in zip(local, y, strict=True)])
    head = fed_head.head_of_arrays(feats, mean, 2, 0.5)
    assert head is not None
    pooled = [t for texts, _ in nodes for t in texts]
    for word in ("great", "awful", "the"):
        want = sum(word in t.lower().split() for t in pooled)
        got = [int(d) for f, d in zip(head.features, head.doc_freq, strict=True) if f == word]
        assert got == ([want] if want else [])
    texts, labels = tinydata.keyword_texts(60, 99)
    pred = head_proba(head, texts).argmax(1)
    assert np.mean(pred == np.array([int(lab == "pos") for lab in labels])) >= 0.9
    # a second round under the global idf: the mean stays put, it does not drift
    local2 = [
        fed_head.fit_local(fed_head.count_matrix(t, feats), yy, 2, mean, 0)
        for (t, _), yy in zip(nodes, y, strict=True)
    ]
    mean2 = weighted_mean([(a, len(yy)) for a, yy in zip(local2, y, strict=True)])
    assert np.allclose(mean2[2], mean[2]) and np.allclose(mean2[3], mean[3])


def test_epsilon_is_the_renyi_bound_of_the_gaussian_mechanism() -> None:
    from edge_tl.fed.privacy import epsilon

    assert epsilon(1.0, 1, 1e-5) == pytest.approx(0.5 + math.sqrt(2 * math.log(1e5)))
    for z, t in ((0.7, 3), (1.3, 10), (4.0, 50)):
        alphas = np.linspace(1.001, 2000, 400_000)
        brute = float(np.min(t * alphas / (2 * z * z) + math.log(1e5) / (alphas - 1)))
        assert epsilon(z, t, 1e-5) == pytest.approx(brute, rel=1e-4)
    assert epsilon(0.0, 3, 1e-5) == math.inf and epsilon(1.0, 0, 1e-5) == 0.0
    assert epsilon(1.0, 10, 1e-5) > epsilon(1.0, 5, 1e-5) > epsilon(2.0, 5, 1e-5)


def test_dp_clips_each_update_and_noises_the_mean() -> None:
    from edge_tl.fed.privacy import add_noise, clip_update

    rng = np.random.default_rng(0)
    delta = [rng.normal(0, 1, (30, 20)).astype(np.float32), rng.normal(0, 1, 50).astype(np.float32)]
    norm = clip_update(delta, 2.0)
    assert norm > 20 and math.sqrt(sum(float((d**2).sum()) for d in delta)) == pytest.approx(2.0)
    small = [np.full(4, 0.1, np.float32)]
    clip_update(small, 2.0)
    assert np.allclose(small[0], 0.1)  # under the clip: unchanged
    mean = [np.zeros((200, 100), np.float32)]
    std = add_noise(mean, 1.5, 2.0, 4)
    assert std == pytest.approx(0.75) and float(mean[0].std()) == pytest.approx(0.75, rel=0.03)


def test_a_dp_federation_reports_its_epsilon(fed_store: Path) -> None:
    from click.testing import CliRunner

    from edge_tl.cli import cli
    from edge_tl.fed.privacy import epsilon

    args = ["fed", "simulate", "--nodes", "3", "--data", "a,b,c", "--labels", "neg,pos"]
    args += ["--out", "dpm", "--base", "tiny", "--rounds", "2", "--lm-rounds", "0"]
    args += ["--bs", "8", "--max-len", "32", "--bptt", "8", "--lr", "0.02", "--no-secagg"]
    args += ["--dp-noise", "1.0", "--dp-clip", "0.1", "--json"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    import json

    out = json.loads(res.output[res.output.index("{") :])
    assert out["dp_rounds"] == 2, out["rejected_updates"]
    assert out["dp_epsilon"] == pytest.approx(epsilon(1.0, 2, 1e-5), abs=1e-4)


def test_a_node_holding_data_for_another_device_is_left_out(
    fed_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Node c's rows were encrypted for another device's key: it reports why, the others
    finish under SecAgg+."""
    from conftest import make_store

    from edge_tl.fed.simulation import simulate
    from edge_tl.store.datasets import dataset_info

    other = tmp_path / "other-device"
    with monkeypatch.context() as mp:
        mp.setenv("EDGE_TL_HOME", str(other))
        make_store(tmp_path, {"c": node_rows(80, 3)})
        foreign = next(p for p in (other / "vault").iterdir() if dataset_info("c").id in p.name)
    mine = next(p for p in (fed_store / "vault").iterdir() if dataset_info("c").id in p.name)
    shutil.copyfile(foreign, mine)
    m = simulate(tiny_settings(rounds=2), 3)
    why = m.metrics["rejected_updates"]
    assert why and all("cannot decrypt" in w and "wrong key" in w for w in why), why
    assert held_out_accuracy("fedm") >= 0.8
