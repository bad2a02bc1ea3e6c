"""The network of an export as a stateless torch module: fastai's classifier (and, with a
backward network, ULMFiT's forward + backward) on (input_ids, lengths), zero state per call."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from edge_tl.awd_lstm import build_classifier
from edge_tl.errors import ExportError
from edge_tl.store.models import TrainedModel

DEFAULT_BPTT = 72
DEFAULT_MAX_LEN = 72 * 20


def seq_settings(model: TrainedModel) -> tuple[int, int]:
    """The bptt and max_len the model was trained with (fastai's pooling window)."""
    tc = model.train_config or {}
    bptt = int(tc.get("bptt", tc.get("seq_len", DEFAULT_BPTT)))
    max_len = int(tc.get("max_len", DEFAULT_MAX_LEN))
    return bptt, max_len


def fastai_classifier(model: TrainedModel, state: dict[str, Any] | None = None):
    """The fastai classifier of `model`, weights loaded (`state`, default the forward
    network's), in eval mode."""

    bptt, max_len = seq_settings(model)
    clf = build_classifier(
        model.model_cfg,
        len(model.labels),
        seq_len=bptt,
        max_len=max_len,
        lin_ftrs=list(model.lin_ftrs),
    )
    state = {k: torch.as_tensor(v) for k, v in (state or model.state_dict).items()}
    try:
        clf.load_state_dict(state)
    except RuntimeError as e:
        raise ExportError(
            f"model {model.name!r}: weights do not fit its config ({str(e).splitlines()[0]})",
            "the stored model is inconsistent; retrain or re-import it",
        ) from e
    return clf.eval()


def stateless_wrapper(model: TrainedModel, keep_ids: list[int] | None = None):
    """A torch module (input_ids, lengths) -> probs equal to fastai's one-text-at-a-time output
    (with a backward network: the mean of both directions, the backward one reading each row's
    first `lengths` ids reversed)."""
    forward = _one_direction(model, keep_ids, None)
    if model.backward is None:
        return forward
    backward = _one_direction(model, keep_ids, model.backward.state_dict)

    class TwoWay(nn.Module):
        """ULMFiT's forward + backward: the mean of both networks' probabilities."""

        def __init__(self) -> None:
            super().__init__()
            self.fwd, self.bwd = forward, backward

        def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            pos = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
            # position p of a row reads id lengths-1-p; past the row's end any id will do
            # (the LSTMs are causal and pooling stops at lengths)
            src = torch.clamp(lengths.unsqueeze(1) - 1 - pos, min=0)  # (batch, seq)
            rev = input_ids.gather(1, src)
            return (self.fwd(input_ids, lengths) + self.bwd(rev, lengths)) / 2

    return TwoWay().eval()


def _one_direction(model: TrainedModel, keep_ids: list[int] | None, state: Any):
    """One network as a stateless module (input_ids, lengths) -> probs."""
    clf = fastai_classifier(model, state)
    bptt, max_len = seq_settings(model)
    awd = clf[0].module
    emb_w = awd.encoder.weight.detach()  # (vocab, emb)
    if keep_ids is not None:
        emb_w = emb_w[torch.as_tensor(keep_ids)]

    class Stateless(nn.Module):
        """Embedding -> plain LSTMs (zero state per call) -> masked concat pool -> head."""

        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding.from_pretrained(emb_w.clone(), freeze=True)
            self.rnns = nn.ModuleList()
            for wd in awd.rnns:
                inner = wd.module
                lstm = nn.LSTM(inner.input_size, inner.hidden_size, 1, batch_first=True)
                # Eval-mode WeightDropout uses the raw recurrent weight unchanged.
                lstm.load_state_dict(
                    {
                        "weight_ih_l0": inner.weight_ih_l0.detach(),
                        "weight_hh_l0": wd.weight_hh_l0_raw.detach(),
                        "bias_ih_l0": inner.bias_ih_l0.detach(),
                        "bias_hh_l0": inner.bias_hh_l0.detach(),
                    }
                )
                self.rnns.append(lstm)
            self.head = copy.deepcopy(clf[1].layers).eval()
            self.bptt, self.max_len = bptt, max_len

        def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            x = self.emb(input_ids)  # (batch, seq, emb)
            for rnn in self.rnns:
                # No state passed: every call starts from zeros, so rows never leak into each other.
                x, _ = rnn(x)  # (batch, seq, hid)
            seq = x.shape[1]
            pos = torch.arange(seq, device=x.device).unsqueeze(0)  # (1, seq)
            lens = lengths.unsqueeze(1)  # (batch, 1)
            # fastai pools only the last max_len outputs, in whole bptt chunks.
            over = torch.clamp(lens - self.max_len, min=0)
            start = torch.div(over + self.bptt - 1, self.bptt, rounding_mode="floor") * self.bptt
            keep = (pos >= start) & (pos < lens)  # (batch, seq)
            keep3 = keep.unsqueeze(2)  # (batch, seq, 1)
            idx = (lens - 1).unsqueeze(2).expand(-1, 1, x.shape[2])  # (batch, 1, hid)
            last = x.gather(1, idx).squeeze(1)  # (batch, hid)
            mx = x.masked_fill(~keep3, float("-inf")).max(dim=1).values  # (batch, hid)
            n = (lens - start).to(x.dtype)  # (batch, 1)
            avg = x.masked_fill(~keep3, 0.0).sum(dim=1) / n  # (batch, hid)
            logits = self.head(torch.cat([last, mx, avg], dim=1))  # (batch, n_class)
            return torch.softmax(logits, dim=1)

    return Stateless().eval()


__all__ = [
    "DEFAULT_BPTT",
    "DEFAULT_MAX_LEN",
    "fastai_classifier",
    "seq_settings",
    "stateless_wrapper",
]
