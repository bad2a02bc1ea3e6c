"""A checkpoint inside an LM epoch carries the LSTM state; a reader rejects one that names it
and lacks a tensor (docs/model-format.md, checkpoint v1)."""

from __future__ import annotations

import pytest
import torch

from edge_tl.errors import ModelError
from edge_tl.store.checkpoints import _join_rng, _split_rng, capture_rng


def test_the_lstm_state_goes_through_the_checkpoint_tensors() -> None:
    hidden = [(torch.randn(1, 4, 8), torch.randn(1, 4, 8)) for _ in range(3)]
    tensors: dict = {}
    head = _split_rng({**capture_rng(), "hidden": hidden}, "now", tensors)
    assert head["hidden_layers"] == 3 and "hidden" not in head
    back = _join_rng(head, "now", tensors)
    assert len(back["hidden"]) == 3
    for (h, c), (h2, c2) in zip(hidden, back["hidden"], strict=True):
        assert torch.equal(h, h2) and torch.equal(c, c2)
    assert "hidden" not in _join_rng(_split_rng(capture_rng(), "now", {}), "now", tensors)


def test_a_checkpoint_naming_a_missing_lstm_tensor_is_rejected() -> None:
    tensors: dict = {}
    head = _split_rng({**capture_rng(), "hidden": [(torch.ones(1, 2, 3),) * 2]}, "now", tensors)
    del tensors["rng.hidden_now.0.c"]
    with pytest.raises(ModelError, match="LSTM state 'now' is incomplete"):
        _join_rng(head, "now", tensors)
