"""bench/semi_lm.py: the curve's shared LM leaves the vault as a checked fp16 file and comes
back encrypted for this device, usable by the comparison it belongs to and refused if damaged."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from semi_lm import export_lm, import_lm  # noqa: E402

from edge_tl.compare.lm import SEMI_LM, load_lm, save_lm  # noqa: E402
from edge_tl.config import ModelConfig  # noqa: E402
from edge_tl.errors import ModelError  # noqa: E402
from edge_tl.store import keys  # noqa: E402
from edge_tl.train.recipe import LMResult  # noqa: E402


def _lm() -> LMResult:
    g = torch.Generator().manual_seed(0)
    state = {"w": torch.randn(7, 5, generator=g), "ids": torch.arange(4)}
    return LMResult(
        vocab=["xxunk", "xxpad", "a"],
        model_cfg=ModelConfig(vocab_size=3, emb_sz=5, n_hid=6, n_layers=2),
        encoder_state=state,
        base="tiny",
        base_sha256="0" * 64,
        tokens=123,
        seconds=4.5,
        metrics={"lm_perplexity": 67.0},
    )


def test_export_import_round_trip_and_refusals(tmp_path: Path, edge_tl_home) -> None:
    keys.init_identity(None)
    work, other = tmp_path / "work", tmp_path / "other"
    work.mkdir()
    save_lm(work / SEMI_LM, _lm(), "digest-a")
    out = tmp_path / "semi-lm.etlm"
    side = export_lm(work, out)
    assert side["compare_digest"] == "digest-a" and side["tokens"] == 123
    assert b"\x00" in out.read_bytes()  # plain bytes, not an age file
    import_lm(out, other)
    back = load_lm(other / SEMI_LM, "digest-a")
    want = _lm().encoder_state["w"].to(torch.float16).to(torch.float32)
    assert torch.equal(back.encoder_state["w"], want)  # fp16-rounded, fp32 again
    assert back.encoder_state["w"].dtype == torch.float32
    assert torch.equal(back.encoder_state["ids"], torch.arange(4))
    with pytest.raises(ModelError, match="another comparison"):
        load_lm(other / SEMI_LM, "digest-b")
    with pytest.raises(SystemExit, match="exists"):
        import_lm(out, other)
    data = bytearray(out.read_bytes())
    data[-3] ^= 1
    out.write_bytes(bytes(data))
    with pytest.raises(SystemExit, match="sha256"):
        import_lm(out, tmp_path / "third")
