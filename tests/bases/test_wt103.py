"""fastai WT103 conversion: real layout at full size, stock fastai loading, offline fetch."""

from __future__ import annotations

import os
import pickle
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from edge_tl.awd_lstm import build_classifier, build_lm, lm_state_keys
from edge_tl.bases.bundle import Base, read_bundle, read_manifest
from edge_tl.bases.store import import_base, load_base
from edge_tl.bases.wt103 import WT103_CORPUS, pack_from_fastai, read_itos, unpack_to_fastai
from edge_tl.cli import cli
from edge_tl.config import SPECIAL_TOKENS, ModelConfig
from edge_tl.errors import BundleError

WT103 = ModelConfig()  # 60k vocab, emb 400, hidden 1152, 3 layers
TINY = ModelConfig(vocab_size=40, emb_sz=6, n_hid=10, n_layers=3)


def fastai_state(cfg: ModelConfig, seed: int = 0, extra_hh: bool = True) -> dict:
    """A state dict as fastai saves an AWD-LSTM LM: tied tensors shared, old `module.weight_hh`."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    enc = torch.randn(cfg.vocab_size, cfg.emb_sz, generator=g) * 0.1
    sd["0.encoder.weight"] = enc
    sd["0.encoder_dp.emb.weight"] = enc
    for k, shape in lm_state_keys(cfg).items():
        if k.startswith("0.rnns."):
            sd[k] = torch.randn(shape, generator=g) * 0.05
            if extra_hh and k.endswith("weight_hh_l0_raw"):
                # fastai files also carry WeightDropout's dropped copy; it must be ignored.
                sd[k.replace("weight_hh_l0_raw", "module.weight_hh_l0")] = torch.zeros(shape)
    sd["1.decoder.weight"] = enc
    sd["1.decoder.bias"] = torch.randn(cfg.vocab_size, generator=g) * 0.1
    return sd


def itos(n: int) -> list[str]:
    return SPECIAL_TOKENS + [f"tok{i}" for i in range(n - len(SPECIAL_TOKENS))]


def fastai_dir(
    folder: Path,
    cfg: ModelConfig,
    wname: str = "lstm_fwd.pth",
    wrap: bool = False,
    vocab: list[str] | None = None,
) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    sd = fastai_state(cfg)
    obj = {"model": sd, "opt": {"hypers": [{"lr": 0.01}], "state": [{}]}} if wrap else sd
    torch.save(obj, folder / wname)
    with open(folder / "itos_wt103.pkl", "wb") as f:
        pickle.dump(vocab if vocab is not None else itos(cfg.vocab_size), f)
    return sd


def assert_lm_matches(state: dict, src: dict, cfg: ModelConfig) -> None:
    """Every LM tensor equals the fastai source (after the bundle's fp16 rounding)."""
    for k in lm_state_keys(cfg):
        assert torch.equal(state[k], src[k].half().float()), k


# ---------------------------------------------------------------- full size


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> Iterator[tuple[Path, dict]]:
    """A synthetic full-size WT103 download (random weights, real keys/shapes/vocab) packed once."""
    src = tmp_path_factory.mktemp("wt103-fwd")
    sd = fastai_dir(src, WT103)
    out = pack_from_fastai(src, name="wt103", out=src / "wt103.etlb")
    (src / "lstm_fwd.pth").unlink()  # 222 MB; pytest keeps old temp folders around
    yield out, sd
    shutil.rmtree(src, ignore_errors=True)


def test_full_size_pack_import_load_every_tensor(full):
    bundle, src = full
    m = read_manifest(bundle)
    assert m["model_config"] == {
        "vocab_size": 60000,
        "emb_sz": 400,
        "n_hid": 1152,
        "n_layers": 3,
        "pad_token": 1,
        "tie_weights": True,
        "out_bias": True,
    }
    assert m["corpus"] == WT103_CORPUS and m["weights"]["dtype"] == "fp16"
    assert bundle.stat().st_size < 90e6  # tied embedding stored once, fp16
    assert import_base(bundle, allow_unsigned=True) == "wt103"
    base = load_base("wt103")
    assert base.vocab == itos(60000) and base.model_cfg == WT103
    lm = build_lm(base.model_cfg)
    lm.load_state_dict(base.state_dict, strict=True)
    assert_lm_matches(lm.state_dict(), src, WT103)
    clas = build_classifier(base.model_cfg, 2)
    enc = {k[2:]: v for k, v in base.state_dict.items() if k.startswith("0.")}
    clas[0].module.load_state_dict(enc, strict=True)
    got = clas[0].module.state_dict()
    for k in enc:
        assert torch.equal(got[k], src[f"0.{k}"].half().float()), k


def test_stock_fastai_learners_load_an_unpacked_bundle(full, tmp_path):
    from fastai.text.all import (
        AWD_LSTM,
        CrossEntropyLossFlat,
        DataLoader,
        DataLoaders,
        awd_lstm_clas_config,
        awd_lstm_lm_config,
        language_model_learner,
        text_classifier_learner,
    )

    bundle, src = full
    base = read_bundle(bundle, allow_unsigned=True)
    wgts, vocab_file = unpack_to_fastai(base, tmp_path)
    assert read_itos(vocab_file) == base.vocab
    # A task vocabulary: some WT103 tokens in another order, and words WT103 never saw.
    new_vocab = SPECIAL_TOKENS + ["tok500", "tok7", "brandnew", "tok59990", "zzz"] + ["xxfake"] * 2
    dls = DataLoaders(DataLoader([0]), DataLoader([0]))
    dls.vocab, dls.c = new_vocab, 2
    learn = language_model_learner(
        dls,
        AWD_LSTM,
        config=dict(awd_lstm_lm_config),
        pretrained=True,
        pretrained_fnames=[wgts.stem, vocab_file.stem],
        path=tmp_path,
        model_dir=".",
    )
    got = learn.model.state_dict()
    old = {w: i for i, w in enumerate(base.vocab)}
    enc = src["0.encoder.weight"].half().float()
    for i, w in enumerate(new_vocab):
        want = enc[old[w]] if w in old else enc.mean(0)
        assert torch.allclose(got["0.encoder.weight"][i], want), w
        assert torch.equal(got["0.encoder_dp.emb.weight"][i], got["0.encoder.weight"][i])
    bias = src["1.decoder.bias"].half().float()
    assert torch.equal(got["1.decoder.bias"][9], bias[old["tok500"]])
    for k in lm_state_keys(WT103):
        if k.startswith("0.rnns."):
            assert torch.equal(got[k], src[k].half().float()), k
    clas = text_classifier_learner(
        dls,
        AWD_LSTM,
        config=dict(awd_lstm_clas_config),
        pretrained=False,
        n_out=2,
        loss_func=CrossEntropyLossFlat(),
    )
    clas.load_pretrained(wgts, vocab_file, model=clas.model[0])
    got = clas.model[0].module.state_dict()
    for k in lm_state_keys(WT103):
        if k.startswith("0.rnns."):
            assert torch.equal(got[k[2:]], src[k].half().float()), k
    wgts.unlink()


# ---------------------------------------------------------------- layout variants


@pytest.mark.parametrize("wname, wrap", [("lstm_fwd.pth", False), ("lstm_wt103.pth", True)])
def test_fastai_v1_and_v2_layouts(tmp_path, wname, wrap):
    src = fastai_dir(tmp_path / "dl", TINY, wname=wname, wrap=wrap)
    out = pack_from_fastai(tmp_path / "dl", name="tiny", out=tmp_path, dtype="fp32")
    assert out == tmp_path / "tiny.etlb"
    base = read_bundle(out, allow_unsigned=True)
    for k in lm_state_keys(TINY):  # `_raw` kept, the zeroed module.weight_hh_l0 dropped
        assert torch.equal(base.state_dict[k], src[k]), k


def test_fastcore_L_vocab_is_read_without_running_fastcore(tmp_path):
    from fastcore.foundation import L

    with open(tmp_path / "v.pkl", "wb") as f:
        pickle.dump(L(itos(12)), f)
    assert read_itos(tmp_path / "v.pkl") == itos(12)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_vocab_pickle_cannot_run_code(tmp_path):
    fastai_dir(tmp_path, TINY)
    evil = _Evil(tmp_path / "pwned")
    (tmp_path / "itos_wt103.pkl").write_bytes(pickle.dumps([evil]))
    with pytest.raises(BundleError) as e:
        pack_from_fastai(tmp_path, name="x", out=tmp_path / "x.etlb")
    assert "itos_wt103.pkl: holds an object of type posix.system, not a list of strings" in str(
        e.value
    )
    assert not evil.marker.exists()


def test_weights_with_foreign_objects_are_refused(tmp_path):
    fastai_dir(tmp_path, TINY)
    evil = _Evil(tmp_path / "pwned")
    torch.save({"model": fastai_state(TINY), "learner": evil}, tmp_path / "lstm_fwd.pth")
    with pytest.raises(BundleError, match="lstm_fwd.pth: not a plain tensor checkpoint"):
        pack_from_fastai(tmp_path, name="x", out=tmp_path / "x.etlb")
    assert not evil.marker.exists()


def test_folder_problems_are_named(tmp_path):
    d = tmp_path / "dl"
    hint = "pass the folder fastai downloads to ~/.fastai/models/wt103-fwd/"
    cases = []
    d.mkdir()
    cases.append(f"{d}: holds neither lstm_fwd.pth nor lstm_wt103.pth. {hint}")
    for msg in cases:
        with pytest.raises(BundleError) as e:
            pack_from_fastai(d, name="x", out=tmp_path / "x.etlb")
        assert str(e.value) == msg
    fastai_dir(d, TINY)
    (d / "itos_wt103.pkl").unlink()
    with pytest.raises(BundleError, match="itos_wt103.pkl is missing"):
        pack_from_fastai(d, name="x", out=tmp_path / "x.etlb")
    fastai_dir(d, TINY, wname="lstm_wt103.pth")
    with pytest.raises(BundleError, match="holds both lstm_fwd.pth and lstm_wt103.pth"):
        pack_from_fastai(d, name="x", out=tmp_path / "x.etlb")
    (d / "lstm_wt103.pth").unlink()
    with open(d / "itos_wt103.pkl", "wb") as f:
        pickle.dump(itos(39), f)
    with pytest.raises(BundleError) as e:
        pack_from_fastai(d, name="x", out=tmp_path / "x.etlb")
    assert e.value.message == f"{d}: itos_wt103.pkl has 39 tokens but the weights have 40 rows"
    assert not (tmp_path / "x.etlb").exists()


# ---------------------------------------------------------------- CLI


def test_cli_pack_verify_and_signed_import(tmp_path):
    fastai_dir(tmp_path / "dl", TINY)
    r = CliRunner()
    res = r.invoke(cli, ["base", "keygen", "--out", str(tmp_path / "k.key")])
    assert res.exit_code == 0, res.output
    out = tmp_path / "t.etlb"
    res = r.invoke(
        cli,
        [
            "base",
            "pack",
            "--from-fastai",
            str(tmp_path / "dl"),
            "--name",
            "tiny",
            "--out",
            str(out),
            "--sign-key",
            str(tmp_path / "k.key"),
        ],
    )
    assert res.exit_code == 0, res.output
    fp = read_manifest(out)["signer"]
    assert res.output.startswith(f"Packed base tiny -> {out} (") and f"signed by {fp}" in res.output
    res = r.invoke(cli, ["base", "verify", str(out), "--trust", str(tmp_path / "k.pub")])
    assert res.exit_code == 0
    assert res.output == (
        f"OK t.etlb: base tiny, 40 tokens, emb 6, hidden 10, 3 layers, fp16; "
        f"signature by {fp} verified\n"
    )
    res = r.invoke(cli, ["base", "import", str(out), "--trust", str(tmp_path / "k.pub")])
    assert res.output == f"Imported base tiny (signature by {fp} verified)\n"
    res = r.invoke(
        cli,
        [
            "base",
            "pack",
            "--from-fastai",
            str(tmp_path / "nope"),
            "--name",
            "x",
            "--out",
            str(tmp_path / "x.etlb"),
        ],
    )
    assert res.exit_code == 1
    assert res.output == (
        f"Error: {tmp_path / 'nope'}: not a folder. pass the folder fastai "
        "downloads to ~/.fastai/models/wt103-fwd/\n"
    )


FETCH_ERROR = (
    "Error: cannot reach s3.amazonaws.com within 3 s to download WT103. download it on a "
    "connected machine (`edge-tl base fetch wt103` there), or pack an existing download with "
    "`edge-tl base pack --from-fastai DIR --name wt103 --out wt103.etlb`, then copy the bundle "
    "here and `edge-tl base import` it\n"
)


def test_fetch_without_network_fails_fast(no_network, tmp_path):
    t0 = time.monotonic()
    res = CliRunner().invoke(cli, ["base", "fetch", "wt103", "--out", str(tmp_path / "w.etlb")])
    elapsed = time.monotonic() - t0
    assert res.exit_code == 1 and res.output == FETCH_ERROR
    assert elapsed < 4
    # Exactly one probe was made (and blocked); clear it so the fixture does not fail the test.
    assert len(no_network) == 1 and "s3.amazonaws.com" in no_network[0]
    no_network.clear()
    assert not (tmp_path / "w.etlb").exists()


def test_fetch_offline_switch_makes_no_attempt(no_network, monkeypatch):
    monkeypatch.setenv("EDGE_TL_OFFLINE", "1")
    res = CliRunner().invoke(cli, ["base", "fetch", "wt103"])
    assert res.exit_code == 1 and res.output == FETCH_ERROR
    assert no_network == []


def test_unpack_round_trips_through_fastai_files(tmp_path):
    sd = fastai_state(TINY, extra_hh=False)
    base = Base("tiny", TINY, itos(40), {k: sd[k] for k in lm_state_keys(TINY)}, {})
    wgts, vocab = unpack_to_fastai(base, tmp_path)
    loaded = torch.load(wgts, weights_only=True)
    assert list(loaded) == list(lm_state_keys(TINY))  # positional loading needs this order
    assert read_itos(vocab) == base.vocab
