"""Encrypted model store: known answer, round trip, tampering, swaps, CLI list/info/rm."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_tl.awd_lstm import build_classifier
from edge_tl.cli import cli
from edge_tl.config import ModelConfig
from edge_tl.errors import DecryptError, ModelError, StoreError
from edge_tl.store import keys
from edge_tl.store.models import (
    MODEL_MAGIC,
    TrainedModel,
    list_models,
    load_model,
    model_from_bytes,
    model_path,
    model_to_bytes,
    pack_container,
    remove_model,
    save_model,
)

CFG = ModelConfig(vocab_size=16, emb_sz=8, n_hid=12, n_layers=2)
VOCAB = ["xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxrep", "xxwrep", "xxup", "xxmaj"] + [
    f"w{i}" for i in range(7)
]


def tiny_model(name: str = "m1", seed: int = 0) -> TrainedModel:
    torch.manual_seed(seed)
    net = build_classifier(CFG, 2, lin_ftrs=[6])
    return TrainedModel(
        name=name,
        model_cfg=CFG,
        vocab=list(VOCAB),
        labels=["neg", "pos"],
        state_dict={k: v.clone() for k, v in net.state_dict().items()},
        lin_ftrs=[6],
        train_config={"seed": 1},
        metrics={"accuracy": 0.75, "n": 4},
        base="b",
        base_sha256="ab" * 32,
        dataset_fingerprint="fp",
        created="2025-01-01T00:00:00Z",
    )


@pytest.fixture
def identity() -> str:
    return keys.init_identity(None)


def test_known_answer_container() -> None:
    blob = pack_container(MODEL_MAGIC, {"a": 1}, b"\x08" + b"\x00" * 7 + b"{}      ")
    assert blob == (
        b"edge_tl/model v1\n"
        + (8).to_bytes(8, "little")
        + b'{"a": 1}'
        + b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "
    )
    from safetensors.torch import save

    assert save({}) == b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "


def test_round_trip_plaintext_and_store(identity: str) -> None:
    m = tiny_model()
    back = model_from_bytes(model_to_bytes(m), "m")
    assert back.labels == m.labels and back.vocab == m.vocab and back.metrics == m.metrics
    for k, v in m.state_dict.items():
        assert torch.equal(back.state_dict[k], v), k
    path = save_model(m)
    assert path.name == "m1.etlm" and oct(path.stat().st_mode & 0o777) == "0o600"
    raw = path.read_bytes()
    assert raw.startswith(b"age-encryption.org/v1")
    # header and vocab are encrypted (markers long enough not to occur by chance in ciphertext)
    assert b"edge_tl/model" not in raw and b"xxunk" not in raw
    got = load_model("m1")
    assert got.base == "b" and got.dataset_fingerprint == "fp" and got.lin_ftrs == [6]
    net = build_classifier(CFG, 2, lin_ftrs=[6])
    net.load_state_dict(got.state_dict)  # exactly the layout build_classifier makes
    assert list_models() == ["m1"]


def test_truncated_or_flipped_file_is_rejected(identity: str) -> None:
    path = save_model(tiny_model())
    raw = path.read_bytes()
    for bad in (raw[:-1], raw[: len(raw) // 2], raw[:-40] + bytes([raw[-40] ^ 1]) + raw[-39:]):
        path.write_bytes(bad)
        with pytest.raises(DecryptError, match="cannot decrypt model m1: wrong key"):
            load_model("m1")


def test_swapped_file_is_rejected(identity: str) -> None:
    save_model(tiny_model("a"))
    model_path("a").rename(model_path("b"))
    with pytest.raises(ModelError, match="model b: the file holds model 'a'"):
        load_model("b")


def _resealed(h: dict, body: bytes) -> bytes:
    h = dict(h, tensors_sha256=hashlib.sha256(body).hexdigest())
    return pack_container(MODEL_MAGIC, h, body)


def _parts(m: TrainedModel) -> tuple[dict, bytes]:
    raw = model_to_bytes(m)
    n = int.from_bytes(raw[17:25], "little")
    return json.loads(raw[25 : 25 + n]), raw[25 + n :]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda h: h.pop("vocab"), "header key 'vocab' is missing"),
        (lambda h: h.update(extra=1), "header key 'extra' is unknown"),
        (lambda h: h.update(vocab=h["vocab"][:-1]), "vocab length differs from vocab_size"),
        (lambda h: h.update(labels=["a", "a"]), "labels must be at least 2 distinct names"),
        (lambda h: h.update(labels=["a", "b", "c"]), "is missing or unexpected|has shape"),
        (lambda h: h.update(lin_ftrs=[7]), "has shape"),
        (lambda h: h.update(version=2), "does not match edge_tl/model v1"),
        (lambda h: h.update(format="edge_tl/checkpoint"), "does not match edge_tl/model v1"),
    ],
)
def test_inner_header_defects(edit, message: str) -> None:
    h, body = _parts(tiny_model())
    edit(h)
    with pytest.raises(ModelError, match=message):
        model_from_bytes(_resealed(h, body), "model x")


def test_tensor_hash_and_magic_checked() -> None:
    raw = model_to_bytes(tiny_model())
    with pytest.raises(ModelError, match="does not match its sha256"):
        model_from_bytes(raw[:-1] + bytes([raw[-1] ^ 1]), "model x")
    with pytest.raises(ModelError, match="is not an edge_tl/model v1 file"):
        model_from_bytes(b"edge_tl/checkpoint v1\n" + raw[17:], "model x")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzzed_plaintext_never_half_loads(data: st.DataObject) -> None:
    raw = model_to_bytes(tiny_model())
    cut = data.draw(st.integers(0, len(raw) - 1))
    flip = data.draw(st.integers(0, len(raw) - 1))
    for bad in (raw[:cut], raw[:flip] + bytes([raw[flip] ^ 0x40]) + raw[flip + 1 :]):
        try:
            m = model_from_bytes(bad, "model x")
        except ModelError:
            continue
        # Only a flip inside free-form JSON text (e.g. a metric value) may still load.
        assert set(m.state_dict) == set(tiny_model().state_dict)


def test_cli_list_info_rm(identity: str) -> None:
    r = CliRunner()
    res = r.invoke(cli, ["models", "list"])
    assert res.exit_code == 0 and "no models yet" in res.output
    save_model(tiny_model("alpha"))
    res = r.invoke(cli, ["models", "list", "--json"])
    assert res.exit_code == 0 and json.loads(res.output) == ["alpha"]
    res = r.invoke(cli, ["models", "info", "alpha", "--json"])
    info = json.loads(res.output)
    n = sum(v.numel() for k, v in tiny_model().state_dict.items() if "num_batches" not in k)
    assert info["parameters"] == n and info["labels"] == ["neg", "pos"] and info["base"] == "b"
    res = r.invoke(cli, ["models", "info", "alpha"])
    assert res.exit_code == 0 and "accuracy:    0.7500 on 4 validation rows" in res.output
    assert "tfidf head:" not in res.output  # no head, no line
    head = {
        "tfidf_features": 1234,
        "tfidf_weight": 0.25,
        "neural_accuracy": 0.5,
        "tfidf_accuracy": 1.0,
    }
    save_model(dataclasses.replace(tiny_model("beta"), metrics={"accuracy": 0.75, "n": 4, **head}))
    res = r.invoke(cli, ["models", "info", "beta"])
    assert (
        "tfidf head:  1,234 n-grams, mixed at weight 0.25 (network alone 0.5000, head alone 1.0000)"
    ) in res.output
    res = r.invoke(cli, ["models", "rm", "alpha"])
    assert res.exit_code == 0 and not model_path("alpha").exists()
    res = r.invoke(cli, ["models", "rm", "alpha"])
    assert res.exit_code == 1
    assert res.output.strip() == (
        "Error: no model named 'alpha'. run `edge-tl models list` to see them"
    )
    res = r.invoke(cli, ["models", "info", "../etc"])
    assert res.exit_code == 1 and res.output.startswith("Error: invalid model name '../etc'.")


def test_remove_missing_raises() -> None:
    with pytest.raises(StoreError):
        remove_model("nothing")
