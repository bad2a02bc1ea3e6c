"""Federations on Flower's Simulation Runtime with the tiny base: the model learns, stores,
exports and predicts; nothing a node sends or writes holds its text; faults leave it working."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import CANARY, held_out_accuracy, tiny_settings

from edge_tl.cli import cli


def capturing_app(sent: list[bytes], require_secagg: bool = True) -> Any:
    """The real ClientApp with an outermost mod that keeps every reply's wire bytes."""
    from flwr.client import ClientApp
    from flwr.common.serde import message_to_proto

    from edge_tl.fed.client import client_fn, secagg_guard

    def capture(msg: Any, ctxt: Any, call_next: Any) -> Any:
        out = call_next(msg, ctxt)
        sent.append(message_to_proto(out).SerializeToString())
        return out

    return ClientApp(client_fn=client_fn, mods=[capture, secagg_guard(require_secagg)])


def test_secagg_federation_learns_exports_and_leaks_no_text(
    fed_store: Path, tmp_path: Path, plaintext_leaks: Any
) -> None:
    from edge_tl.deploy.predict import Classifier
    from edge_tl.fed.simulation import simulate

    sent: list[bytes] = []
    m = simulate(tiny_settings(lm_rounds=1), 3, client_app=capturing_app(sent))
    rounds = m.metrics["federated_rounds"]
    assert [(r["round"], r["phase"]) for r in rounds] == [
        (1, "lm"),
        (2, "classifier"),
        (3, "classifier"),
        (4, "classifier"),
    ]
    assert m.metrics["rejected_updates"] == []
    # the head's words are the base's: every node's, none of its own
    assert m.tfidf_head is not None and CANARY not in m.tfidf_head.features
    assert {"great", "awful"} <= set(m.tfidf_head.features)
    assert m.vocab[:9] == ["xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxrep", "xxwrep"] + [
        "xxup",
        "xxmaj",
    ]
    assert CANARY not in m.vocab  # the vocabulary is the base's: no node's word joins it
    assert held_out_accuracy("fedm") >= 0.9

    onnx_path = tmp_path / "fedm.onnx"
    res = CliRunner().invoke(cli, ["export", "fedm", "--out", str(onnx_path)])
    assert res.exit_code == 0, res.output
    clf = Classifier(onnx_path)
    assert clf.predict(["the film was great and superb", "the plot was awful and dull"]) == [
        "pos",
        "neg",
    ]

    # 4 rounds x 3 nodes x 4 SecAgg+ stages; every reply a node sent, as bytes on the wire
    assert len(sent) == 48
    assert not [b for b in sent if CANARY.encode() in b or CANARY.encode("utf-16-le") in b]
    assert plaintext_leaks(CANARY) == []


def test_cli_simulate_plain_fedavg_reports_rounds(fed_store: Path) -> None:
    args = ["fed", "simulate", "--nodes", "3", "--data", "a,b,c", "--labels", "neg,pos"]
    args += ["--out", "clim", "--base", "tiny", "--rounds", "2", "--lr", "0.02", "--bs", "8"]
    args += [
        "--max-len",
        "32",
        "--bptt",
        "8",
        "--local-epochs",
        "3",
        "--no-secagg",
        "--valid-pct",
        "0.2",
        "--head-weight-min-rows",
        "40",
    ]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[-4].startswith("round 1 (language model): 3 nodes, held-out accuracy ")
    assert lines[-3].startswith("round 2: 3 nodes, held-out accuracy ")
    assert lines[-2].startswith("round 3: 3 nodes, held-out accuracy ")
    assert float(lines[-2].rsplit(" ", 1)[1]) >= 0.75
    assert lines[-1] == "stored model 'clim' (edge-tl export clim --out clim.onnx)"
    from edge_tl.store.models import load_model

    m = load_model("clim")  # 3 x 16 held-out rows >= 40: the share the last round chose
    last = m.metrics["federated_rounds"][-1]
    assert last["held_out_rows"] == 48 and m.tfidf_head.weight == last["head_weight"]
    res = CliRunner().invoke(cli, args)  # the same name again: refused before any round
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1] == (
        "Error: model 'clim' already exists. choose another --out name, or remove it with "
        "`edge-tl models rm clim`"
    )


def test_a_node_that_cannot_decrypt_is_left_out(fed_store: Path) -> None:
    """Node c's vault file is damaged: it reports why, the other two finish under SecAgg+."""
    from edge_tl.fed.simulation import simulate
    from edge_tl.store.datasets import dataset_info

    vault = next(p for p in (fed_store / "vault").iterdir() if dataset_info("c").id in p.name)
    blob = bytearray(vault.read_bytes())
    blob[-40:-20] = bytes(20)
    vault.write_bytes(bytes(blob))
    m = simulate(tiny_settings(rounds=2), 3)
    why = m.metrics["rejected_updates"]
    assert why and all("cannot decrypt" in w or "DecryptError" in w for w in why), why
    assert [r["round"] for r in m.metrics["federated_rounds"]] == [1, 2]
    assert held_out_accuracy("fedm") >= 0.8


def test_a_restarted_coordinator_resumes_from_its_checkpoint(
    fed_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edge_tl.fed.server as server
    from edge_tl.errors import StoreError
    from edge_tl.fed.checkpoint import checkpoint_path
    from edge_tl.fed.simulation import simulate

    def crash(*_a: Any, **_k: Any) -> None:
        raise StoreError("disk full (simulated)")

    with monkeypatch.context() as mp:
        mp.setattr(server, "save_model", crash)
        with pytest.raises(StoreError, match="disk full"):
            simulate(tiny_settings(rounds=1), 3)
    ck = checkpoint_path("fedm")
    assert ck.is_file() and not ck.read_bytes().startswith(b"edge_tl")  # encrypted at rest
    sent: list[bytes] = []
    m = simulate(tiny_settings(rounds=2), 3, client_app=capturing_app(sent))
    assert [r["round"] for r in m.metrics["federated_rounds"]] == [1, 2]
    assert len(sent) == 3 * 4  # one round ran, not two
    assert not ck.exists()
