"""fastai WT103 interop: convert fastai's pretrained download into a bundle, and back.

This is the ONLY module that reads a pickle, and only on the trusted packing machine: fastai ships
its vocabulary as `itos_wt103.pkl`. Even there the unpickler refuses every class except fastcore's
`L`, and the weights are read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import io
import os
import pickle
import socket
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge_tl.awd_lstm import lm_state_keys
from edge_tl.bases.bundle import FASTAI_TOKENIZER, Base, pack_bundle
from edge_tl.config import ModelConfig
from edge_tl.errors import BundleError
from edge_tl.store.files import atomic_write

WEIGHT_FILES = ("lstm_fwd.pth", "lstm_wt103.pth")  # fastai v2 name, fastai v1 name
VOCAB_FILE = "itos_wt103.pkl"
WT103_URL = "https://s3.amazonaws.com/fast-ai-modelzoo/wt103-fwd.tgz"  # fastai URLs.WT103_FWD
WT103_HOST = "s3.amazonaws.com"
PROBE_TIMEOUT_S = 3.0
WT103_CORPUS: dict[str, Any] = {
    "name": "WikiText-103",
    "description": (
        "fastai's AWD-LSTM pretrained on WikiText-103 (103M tokens of verified Good and Featured "
        "English Wikipedia articles; Merity et al. 2016), forward direction"
    ),
    "license": (
        "WikiText-103 text: CC BY-SA 3.0; fastai pretrained weights: distributed by fast.ai "
        "with the fastai library (Apache-2.0)"
    ),
    "url": WT103_URL,
}
PACK_HINT = "pass the folder fastai downloads to ~/.fastai/models/wt103-fwd/"


class _VocabUnpickler(pickle.Unpickler):
    """Accepts a pickled list of str (or fastcore `L` of str); refuses every other class."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("fastcore.foundation", "L"):
            return _LStandIn
        raise BundleError(
            f"{VOCAB_FILE}: holds an object of type {module}.{name}, not a list of strings",
            PACK_HINT,
        )


class _LStandIn:
    """Receives the state of a pickled fastcore `L` without running any of fastcore's code."""

    items: Any = None


def read_itos(path: Path) -> list[str]:
    """Read fastai's `itos_*.pkl` vocabulary (a list of strings) without trusting classes."""
    try:
        with open(path, "rb") as f:
            obj = _VocabUnpickler(f).load()
    except FileNotFoundError as e:
        raise BundleError(f"{path}: not found", PACK_HINT) from e
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise BundleError(f"{path}: not a readable vocabulary pickle ({e})", PACK_HINT) from e
    if isinstance(obj, _LStandIn):
        obj = obj.items
    if not isinstance(obj, list) or not all(isinstance(t, str) for t in obj):
        raise BundleError(f"{path}: does not hold a list of strings", PACK_HINT)
    return obj


def find_fastai_files(src_dir: Path) -> tuple[Path, Path]:
    """The weights (`lstm_fwd.pth` or `lstm_wt103.pth`) and `itos_wt103.pkl` in `src_dir`."""
    src_dir = Path(src_dir)
    if not src_dir.is_dir():
        raise BundleError(f"{src_dir}: not a folder", PACK_HINT)
    found = [src_dir / n for n in WEIGHT_FILES if (src_dir / n).is_file()]
    if not found:
        raise BundleError(f"{src_dir}: holds neither {' nor '.join(WEIGHT_FILES)}", PACK_HINT)
    if len(found) > 1:
        raise BundleError(
            f"{src_dir}: holds both {WEIGHT_FILES[0]} and {WEIGHT_FILES[1]}",
            "keep only the one you mean to pack",
        )
    vocab = src_dir / VOCAB_FILE
    if not vocab.is_file():
        raise BundleError(f"{src_dir}: {VOCAB_FILE} is missing", PACK_HINT)
    return found[0], vocab


def load_fastai_state(path: Path) -> dict[str, Any]:
    """A fastai LM checkpoint as a plain state dict, in fastai's clean (load_pretrained) form."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise BundleError(
            f"{path}: not a plain tensor checkpoint ({str(e).splitlines()[0][:160]})", PACK_HINT
        ) from e
    # fastai's save_model writes {'model': sd, 'opt': ...}; load_pretrained unwraps it the same way
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise BundleError(f"{path}: not a state dict of tensors", PACK_HINT)
    sd = dict(obj)
    # Like fastai's clean_raw_keys: WeightDropout's `module.weight_hh_l0` duplicates `_raw`.
    for k in list(sd):
        if k.endswith(".module.weight_hh_l0"):
            raw = k[: -len(".module.weight_hh_l0")] + ".weight_hh_l0_raw"
            if raw in sd:
                del sd[k]
    if "0.encoder.weight" not in sd:
        raise BundleError(f"{path}: has no 0.encoder.weight: not an AWD-LSTM LM", PACK_HINT)
    # Both are the encoder's own tensor in fastai; some files omit them.
    sd.setdefault("0.encoder_dp.emb.weight", sd["0.encoder.weight"])
    sd.setdefault("1.decoder.weight", sd["0.encoder.weight"])
    return sd


def infer_config(sd: Mapping[str, Any], vocab: list[str] | None = None) -> ModelConfig:
    """ModelConfig from an AWD-LSTM LM state dict's shapes."""
    import torch

    vocab_size, emb_sz = sd["0.encoder.weight"].shape
    n_layers = 0
    while f"0.rnns.{n_layers}.weight_hh_l0_raw" in sd:
        n_layers += 1
    if n_layers == 0:
        raise BundleError("checkpoint has no 0.rnns.0.weight_hh_l0_raw: not an AWD-LSTM LM")
    n_hid = sd["0.rnns.0.weight_hh_l0_raw"].shape[1] if n_layers > 1 else emb_sz
    pad = vocab.index("xxpad") if vocab and "xxpad" in vocab else 1
    tie = bool(torch.equal(sd["1.decoder.weight"], sd["0.encoder.weight"]))
    cfg = ModelConfig(
        vocab_size=int(vocab_size),
        emb_sz=int(emb_sz),
        n_hid=int(n_hid),
        n_layers=n_layers,
        pad_token=pad,
        tie_weights=tie,
        out_bias="1.decoder.bias" in sd,
    )
    return cfg


def pack_from_fastai(
    src_dir: Path,
    *,
    name: str,
    out: Path,
    sign_key: Path | None = None,
    dtype: str = "fp16",
    description: str | None = None,
) -> Path:
    """Convert fastai's WT103 download (weights + itos pickle) into a bundle at `out`."""
    wfile, vfile = find_fastai_files(src_dir)
    vocab = read_itos(vfile)
    sd = load_fastai_state(wfile)
    cfg = infer_config(sd, vocab)
    if len(vocab) != cfg.vocab_size:
        raise BundleError(
            f"{src_dir}: {VOCAB_FILE} has {len(vocab)} tokens but the weights have "
            f"{cfg.vocab_size} rows",
            "the two files come from different downloads; fetch them again together",
        )
    extra = sorted(set(sd) - set(lm_state_keys(cfg)))
    if extra:
        raise BundleError(f"{wfile}: unexpected state-dict key {extra[0]!r}", PACK_HINT)
    desc = description or f"fastai AWD-LSTM WT103 forward LM, converted from {wfile.name}"
    return pack_bundle(
        out,
        name=name,
        model_cfg=cfg,
        vocab=vocab,
        state_dict=sd,
        tokenizer=FASTAI_TOKENIZER,
        corpus=WT103_CORPUS,
        description=desc,
        dtype=dtype,
        sign_key=sign_key,
    )


def unpack_to_fastai(base: Base, out_dir: Path) -> tuple[Path, Path]:
    """Write `<name>.pth` (plain tensors) and `<name>_itos.pkl` for fastai's `load_pretrained`."""

    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # fastai's load_ignore_keys copies tensors by position, so keep lm_state_keys order.
    sd = {k: base.state_dict[k] for k in lm_state_keys(base.model_cfg)}
    buf = io.BytesIO()
    torch.save(sd, buf)
    wgts, vocab = out_dir / f"{base.name}.pth", out_dir / f"{base.name}_itos.pkl"
    atomic_write(wgts, buf.getvalue(), 0o644)
    atomic_write(vocab, pickle.dumps(list(base.vocab), protocol=4), 0o644)
    return wgts, vocab


def network_reachable(
    host: str = WT103_HOST, port: int = 443, timeout: float = PROBE_TIMEOUT_S
) -> bool:
    """True when a TCP connection to `host:port` opens within `timeout` seconds (DNS included)."""
    if os.environ.get("EDGE_TL_OFFLINE", "") not in ("", "0"):
        return False
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except (OSError, RuntimeError):  # sandboxes and test fixtures block with their own errors
            ok.append(False)

    # A thread bounds the whole probe: getaddrinfo has no timeout of its own.
    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(ok and ok[0])


def fetch_wt103(out: Path, *, name: str = "wt103", sign_key: Path | None = None) -> Path:
    """Download fastai's WT103 with fastai itself (connected machines only), then pack it."""
    if not network_reachable():
        raise BundleError(
            f"cannot reach {WT103_HOST} within {PROBE_TIMEOUT_S:.0f} s to download WT103",
            "download it on a connected machine (`edge-tl base fetch wt103` there), or pack an "
            "existing download with `edge-tl base pack --from-fastai DIR --name wt103 --out "
            "wt103.etlb`, then copy the bundle here and `edge-tl base import` it",
        )
    from fastai.data.external import untar_data

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(60)  # a stalled transfer fails instead of hanging forever
    try:
        src = Path(untar_data(WT103_URL, c_key="model"))
    except OSError as e:
        raise BundleError(f"downloading WT103 failed ({e})", "try again when online") from e
    finally:
        socket.setdefaulttimeout(old)
    return pack_from_fastai(src, name=name, out=out, sign_key=sign_key)


__all__ = [
    "WT103_CORPUS",
    "fetch_wt103",
    "find_fastai_files",
    "infer_config",
    "load_fastai_state",
    "network_reachable",
    "pack_from_fastai",
    "read_itos",
    "unpack_to_fastai",
]
