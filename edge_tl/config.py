"""Typed configuration: dataclasses, strictly loaded (unknown keys and wrong types are errors)."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, TypeVar

from edge_tl.errors import ConfigError

T = TypeVar("T")

# fastai's AWD-LSTM vocabulary conventions (fastai.text.core.defaults.text_spec_tok).
SPECIAL_TOKENS = ["xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxrep", "xxwrep", "xxup", "xxmaj"]


@dataclass(frozen=True)
class ModelConfig:
    """Shape of an AWD-LSTM (fastai layout). The WT103 base is emb 400, hidden 1152, 3 layers."""

    vocab_size: int = 60000
    emb_sz: int = 400
    n_hid: int = 1152
    n_layers: int = 3
    pad_token: int = 1
    tie_weights: bool = True
    out_bias: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "emb_sz", "n_hid", "n_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model config: {name} must be >= 1, got {getattr(self, name)}")

    def lstm_layers(self) -> list[tuple[int, int]]:
        """(n_in, n_out) of every LSTM layer, bottom first (fastai: the last one outputs emb_sz)."""
        return [
            (
                self.emb_sz if i == 0 else self.n_hid,
                self.emb_sz if i == self.n_layers - 1 else self.n_hid,
            )
            for i in range(self.n_layers)
        ]

    def n_params(self, with_decoder: bool = True) -> int:
        """Number of trainable parameters of the LM (decoder weight tied to the embedding)."""
        n = self.vocab_size * self.emb_sz
        for n_in, n_out in self.lstm_layers():
            n += 4 * n_out * (n_in + n_out) + 8 * n_out
        if with_decoder:
            n += self.vocab_size if self.out_bias else 0
            if not self.tie_weights:
                n += self.vocab_size * self.emb_sz
        return n


@dataclass(frozen=True)
class Dropouts:
    """AWD-LSTM dropout probabilities (fastai's awd_lstm_lm_config / awd_lstm_clas_config)."""

    output_p: float = 0.1
    hidden_p: float = 0.15
    input_p: float = 0.25
    embed_p: float = 0.02
    weight_p: float = 0.2


LM_DROPOUTS = Dropouts()
CLAS_DROPOUTS = Dropouts(output_p=0.4, hidden_p=0.3, input_p=0.4, embed_p=0.05, weight_p=0.5)


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain-dict form of a config dataclass (for JSON manifests and checkpoints)."""
    return dataclasses.asdict(obj)


def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Build dataclass `cls` from `data`, rejecting unknown keys and wrong types by name."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table of settings, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}",
            f"allowed keys are: {', '.join(sorted(names))}",
        )
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _check_type(value, hints[key], f"{where}: key {key!r}")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from e


# Scalar types: (accepts, what the error says is expected). bool is not a number here.
_SCALARS: dict[type, tuple[Any, str]] = {
    float: (lambda v: not isinstance(v, bool) and isinstance(v, int | float), "a number"),
    int: (lambda v: not isinstance(v, bool) and isinstance(v, int), "a whole number"),
    bool: (lambda v: isinstance(v, bool), "true or false"),
    str: (lambda v: isinstance(v, str), "a string"),
}


def _check_type(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _check_union(value, tp, where)
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected nothing, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (arg, *_) = typing.get_args(tp) or (Any,)
        items = [_check_type(v, arg, where) for v in value]
        return tuple(items) if origin is tuple else items
    if tp in _SCALARS:
        accepts, expected = _SCALARS[tp]
        if not accepts(value):
            raise ConfigError(f"{where}: expected {expected}, got {value!r}")
        return float(value) if tp is float else value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    return value  # Any, and types this loader does not check


def _check_union(value: Any, tp: Any, where: str) -> Any:
    for arg in typing.get_args(tp):
        try:
            return _check_type(value, arg, where)
        except ConfigError:
            continue
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def _type_name(tp: Any) -> str:
    return " or ".join(getattr(a, "__name__", str(a)) for a in typing.get_args(tp)) or str(tp)


__all__ = [
    "SPECIAL_TOKENS",
    "ModelConfig",
    "Dropouts",
    "LM_DROPOUTS",
    "CLAS_DROPOUTS",
    "to_dict",
    "from_dict",
]
