"""A federation's settings: one typed record, sent to every node as Flower's run config."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from edge_tl.config import from_dict
from edge_tl.errors import ConfigError
from edge_tl.store.models import check_name


@dataclass(frozen=True)
class FedSettings:
    """What the coordinator federates and how: `lm_rounds` of language-model fine-tuning,
    then `rounds` of the classifier and its TF-IDF head (FedAvg over weight deltas)."""

    out: str  # the model's name in the coordinator's store
    data: str  # each node's vault dataset (comma-separated: one per simulated node)
    labels: str  # comma-separated label names, in model order; every node must use these
    base: str = "default"  # every node starts from this base and keeps its vocabulary
    base_sha256: str = ""  # filled in by the coordinator: nodes refuse another base
    rounds: int = 5
    local_epochs: int = 1
    lr: float = 2e-3  # Adam on each node, every layer trained
    bs: int = 32
    bptt: int = 72
    max_len: int = 432  # tokens per text the classifier reads (the last ones): a multiple of bptt
    lin_ftrs: int = 50  # width of the classifier head's hidden layer
    seed: int = 42
    min_nodes: int = 2  # a round starts with this many nodes and succeeds with this many
    fraction: float = 1.0  # share of available nodes asked to train each round
    secagg: bool = True  # SecAgg+: the coordinator sees only the sum of the updates
    secagg_timeout: float = 600.0  # seconds a SecAgg+ stage waits for replies
    proximal_mu: float = 0.0  # FedProx: > 0 pulls local weights towards the global ones
    max_examples: int = 10_000  # SecAgg+ max_weight: the most rows one node may count
    valid_pct: float = 0.1  # rows each node holds out to report the global model's accuracy
    freeze_embedding: bool = False  # keep the base's embedding (smaller updates)
    lm_rounds: int = 1  # rounds of language-model fine-tuning on every node's text, first
    lm_epochs: int = 1  # epochs each node fine-tunes the language model per LM round
    lm_lr: float = 1e-3  # Adam learning rate of the language-model rounds
    head: bool = True  # federate a TF-IDF head over the base's words and mix it in
    head_weight: float = 0.5  # the head's share of the mixed probabilities (fallback of auto)
    head_weight_auto: bool = True  # choose the share by the mix's log loss on held-out rows
    head_weight_min_rows: int = 100  # ... when the nodes hold out at least this many together
    dp_noise: float = 0.0  # DP noise multiplier z (> 0: each node clips, the sum gets noise)
    dp_clip: float = 1.0  # DP: the L2 norm each node's update is clipped to
    dp_delta: float = 1e-5  # DP: the delta of the (epsilon, delta) reported

    def __post_init__(self) -> None:
        check_name(self.out)
        for name in ("rounds", "local_epochs", "bs", "bptt", "max_len", "lin_ftrs", "min_nodes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"federation setting {name} must be >= 1")
        if self.lm_rounds < 0 or self.lm_epochs < 1 or self.lm_lr <= 0:
            raise ConfigError("federation settings need lm_rounds >= 0, lm_epochs >= 1, lm_lr > 0")
        if not 0.0 <= self.head_weight <= 1.0:
            raise ConfigError("federation setting head_weight must be in [0, 1]")
        if self.dp_noise < 0 or self.dp_clip <= 0 or not 0 < self.dp_delta < 1:
            raise ConfigError(
                "differential privacy needs dp_noise >= 0, dp_clip > 0 and 0 < dp_delta < 1"
            )
        if self.max_len % self.bptt:  # fastai's pooling assumes whole bptt chunks
            raise ConfigError(
                f"max_len {self.max_len} is not a multiple of bptt {self.bptt}",
                f"pass --max-len {self.bptt * max(1, round(self.max_len / self.bptt))}",
            )
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError("federation setting fraction must be in (0, 1]")
        if not 0.0 <= self.valid_pct < 0.5:
            raise ConfigError("federation setting valid_pct must be in [0, 0.5)")
        if self.lr <= 0 or self.proximal_mu < 0:
            raise ConfigError("federation settings lr must be > 0 and proximal_mu >= 0")
        if self.secagg and self.min_nodes < 2:
            raise ConfigError(
                "SecAgg+ needs at least 2 nodes per round (one node's sum is its update)",
                "pass --min-nodes 2 or more, or --no-secagg",
            )
        if len(self.label_list()) < 2 or len(set(self.label_list())) != len(self.label_list()):
            raise ConfigError(
                f"labels {self.labels!r} must name at least 2 distinct labels",
                "pass --labels neg,pos (comma-separated)",
            )

    def total_rounds(self) -> int:
        """Language-model rounds and classifier rounds together."""
        return self.lm_rounds + self.rounds

    def is_lm_round(self, rnd: int) -> bool:
        """Whether round `rnd` (1-based, counted over the whole run) fine-tunes the LM."""
        return rnd <= self.lm_rounds

    def label_list(self) -> list[str]:
        """The label names, in model order."""
        return [x.strip() for x in self.labels.split(",") if x.strip()]

    def data_list(self) -> list[str]:
        """The dataset names (one, or one per simulated node)."""
        return [x.strip() for x in self.data.split(",") if x.strip()]

    def to_run_config(self) -> dict[str, Any]:
        """Flower's run config (flat str/int/float/bool values)."""
        return dataclasses.asdict(self)


def settings_from_config(cfg: Any) -> FedSettings:
    """FedSettings from a Flower run config (unknown keys and wrong types refused)."""
    names = {f.name for f in dataclasses.fields(FedSettings)}
    data = {k: v for k, v in dict(cfg).items() if k in names}
    for f in dataclasses.fields(FedSettings):
        # Flower's TOML round-trip may turn 1.0 into 1: a float setting takes either.
        if f.type == "float" and isinstance(data.get(f.name), int):
            data[f.name] = float(data[f.name])
    return from_dict(FedSettings, data, "federation settings")


__all__ = ["FedSettings", "settings_from_config"]
