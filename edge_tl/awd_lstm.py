"""AWD-LSTM models in fastai's exact layout, built from a typed ModelConfig (no downloads)."""

from __future__ import annotations

from typing import Any

from edge_tl.config import CLAS_DROPOUTS, LM_DROPOUTS, Dropouts, ModelConfig, to_dict


def fastai_config(cfg: ModelConfig, drops: Dropouts, lm: bool) -> dict[str, Any]:
    """The `config` dict fastai's get_language_model / get_text_classifier expect."""
    out: dict[str, Any] = {
        "emb_sz": cfg.emb_sz,
        "n_hid": cfg.n_hid,
        "n_layers": cfg.n_layers,
        "pad_token": cfg.pad_token,
        "bidir": False,
        **to_dict(drops),
    }
    if lm:
        out.update(tie_weights=cfg.tie_weights, out_bias=cfg.out_bias)
    return out


def build_lm(cfg: ModelConfig, drops: Dropouts = LM_DROPOUTS, drop_mult: float = 1.0):
    """A fastai AWD-LSTM language model (SequentialRNN(AWD_LSTM, LinearDecoder))."""
    from fastai.text.models.awdlstm import AWD_LSTM
    from fastai.text.models.core import get_language_model

    return get_language_model(AWD_LSTM, cfg.vocab_size, fastai_config(cfg, drops, True), drop_mult)


def build_classifier(
    cfg: ModelConfig,
    n_class: int,
    drops: Dropouts = CLAS_DROPOUTS,
    drop_mult: float = 0.5,
    seq_len: int = 72,
    max_len: int = 72 * 20,
    lin_ftrs: list[int] | None = None,
):
    """A fastai AWD-LSTM text classifier (SentenceEncoder + PoolingLinearClassifier)."""
    from fastai.text.models.awdlstm import AWD_LSTM
    from fastai.text.models.core import get_text_classifier

    return get_text_classifier(
        AWD_LSTM,
        cfg.vocab_size,
        n_class,
        seq_len=seq_len,
        config=fastai_config(cfg, drops, False),
        drop_mult=drop_mult,
        lin_ftrs=lin_ftrs,
        pad_idx=cfg.pad_token,
        max_len=max_len,
    )


def lm_state_keys(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of a fastai AWD-LSTM LM with its shape (the WT103 file layout)."""
    keys: dict[str, tuple[int, ...]] = {
        "0.encoder.weight": (cfg.vocab_size, cfg.emb_sz),
        "0.encoder_dp.emb.weight": (cfg.vocab_size, cfg.emb_sz),
    }
    for i, (n_in, n_out) in enumerate(cfg.lstm_layers()):
        p = f"0.rnns.{i}"
        keys[f"{p}.weight_hh_l0_raw"] = (4 * n_out, n_out)
        keys[f"{p}.module.weight_ih_l0"] = (4 * n_out, n_in)
        keys[f"{p}.module.bias_ih_l0"] = (4 * n_out,)
        keys[f"{p}.module.bias_hh_l0"] = (4 * n_out,)
    keys["1.decoder.weight"] = (cfg.vocab_size, cfg.emb_sz)
    if cfg.out_bias:
        keys["1.decoder.bias"] = (cfg.vocab_size,)
    return keys
