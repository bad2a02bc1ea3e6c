"""What a comparison runs (its units) and how long they take: the estimate and the budget rule."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from edge_tl.awd_lstm import build_classifier, build_lm
from edge_tl.errors import ConfigError
from edge_tl.train.config import TrainConfig
from edge_tl.train.engine import autocast_ctx
from edge_tl.train.settings import Run, classifier_dtype

# train: what `edge-tl train` ships (network + TF-IDF head, compare/shipped.py), LM as transfer's
ARMS = ("transfer", "scratch", "tfidf", "train")
DEFAULT_ARMS = ARMS[:3]  # the transfer-vs-scratch curve
LM_ARMS = ("transfer", "train")  # the arms that fine-tune an LM (per protocol)
PROTOCOLS = ("supervised", "semi")
LABELS_ONLY = "none"  # protocol of the arms that never see unlabelled text
DEFAULT_SIZES = (500, 1000, 2500, 5000, 10000, 20000)
REFERENCES = ("none", "imdb")
TFIDF_SECONDS_PER_DOC = 0.06  # 7 Cs x 5 folds: 20k rows took 1,195 s on a busy 2-core CPU


@dataclass(frozen=True)
class Unit:
    """One resumable run: an arm under a protocol at a training size and seed."""

    arm: str
    protocol: str
    size: int
    seed: int

    @property
    def key(self) -> str:
        """Its id in results.json."""
        return f"{self.arm}/{self.protocol}/{self.size}/{self.seed}"


@dataclass(frozen=True)
class ComparePlan:
    """What to compare: data sets, sizes, seeds, protocols, arms and the test subset."""

    data: str
    test: str
    sizes: tuple[int, ...] = DEFAULT_SIZES
    seeds: tuple[int, ...] = (0, 1, 2)
    protocols: tuple[str, ...] = ("supervised",)
    arms: tuple[str, ...] = DEFAULT_ARMS
    base: str = "default"
    lm_data: tuple[str, ...] = ()
    test_rows: int = 0  # 0 = every labelled row of the test set
    references: str = "none"  # published curves drawn beside ours ("imdb")

    def __post_init__(self) -> None:
        checks = [
            (
                bool(self.sizes)
                and all(s >= 1 for s in self.sizes)
                and len(set(self.sizes)) == len(self.sizes),
                "--sizes",
                "distinct sizes >= 1",
            ),
            (
                bool(self.seeds)
                and all(s >= 0 for s in self.seeds)
                and len(set(self.seeds)) == len(self.seeds),
                "seeds",
                "distinct seeds >= 0",
            ),
            (
                bool(self.protocols) and set(self.protocols) <= set(PROTOCOLS),
                "--protocol",
                "supervised, semi or both",
            ),
            (bool(self.arms) and set(self.arms) <= set(ARMS), "--arms", ", ".join(ARMS)),
            (self.test_rows >= 0, "--test-rows", ">= 0 (0 = all)"),
            (self.references in REFERENCES, "--references", " or ".join(REFERENCES)),
        ]
        for ok, key, want in checks:
            if not ok:
                raise ConfigError(f"compare: {key} must be {want}")

    def units(self) -> list[Unit]:
        """Every unit, smallest size first (a partial curve is useful), cheap arms first."""
        out = []
        for size in sorted(self.sizes):
            for seed in self.seeds:
                if "tfidf" in self.arms:
                    out.append(Unit("tfidf", LABELS_ONLY, size, seed))
                if "scratch" in self.arms:
                    out.append(Unit("scratch", LABELS_ONLY, size, seed))
                for arm in (a for a in LM_ARMS if a in self.arms):
                    out += [Unit(arm, p, size, seed) for p in PROTOCOLS if p in self.protocols]
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }


# ---------------------------------------------------------------- estimate and budget


@dataclass(frozen=True)
class Speed:
    """Measured throughput (tokens/s) and corpus statistics the estimate rests on."""

    lm_tps: float
    clas_tps: float
    infer_tps: float
    tokens_per_doc: float
    test_rows: int
    lm_docs: int = 0  # texts of the shared (semi) LM
    measured: dict[str, float] = dataclasses.field(default_factory=dict)  # arm/protocol -> s/doc
    # The scratch arm's classifier when it trains (and is scored) in another dtype (fp32 under
    # autocast: train_data.classifier_dtype); 0 = the same as clas_tps / infer_tps.
    scratch_clas_tps: float = 0.0
    scratch_infer_tps: float = 0.0


def unit_seconds(u: Unit, sp: Speed, cfg: TrainConfig, test_rows: int) -> float:
    """Estimated wall time of one unit."""
    if f"{u.arm}/{u.protocol}" in sp.measured:  # from finished units: seconds per training doc
        return sp.measured[f"{u.arm}/{u.protocol}"] * u.size
    if u.arm == "tfidf":
        return 1.0 + TFIDF_SECONDS_PER_DOC * u.size
    clas_tps, infer_tps = sp.clas_tps, sp.infer_tps
    if u.arm == "scratch" and sp.scratch_clas_tps > 0:
        clas_tps, infer_tps = sp.scratch_clas_tps, sp.scratch_infer_tps
    tok, tok_c = sp.tokens_per_doc, min(sp.tokens_per_doc, cfg.max_len)
    s = u.size * tok / infer_tps + u.size * tok_c * sum(cfg.stages[1:]) / clas_tps
    s += test_rows * tok / infer_tps
    if u.arm in LM_ARMS and u.protocol == "supervised":
        s += u.size * tok * (cfg.lm_frozen_epochs + cfg.lm_epochs) / sp.lm_tps
    return s


def plan_seconds(
    plan: ComparePlan, sp: Speed, cfg: TrainConfig, done: set[str], lm_ready: bool
) -> float:
    """Estimated wall time of the units of `plan` not in `done` (+ the shared LM if needed)."""
    todo = [u for u in plan.units() if u.key not in done]
    test_rows = plan.test_rows or sp.test_rows
    s = sum(unit_seconds(u, sp, cfg, test_rows) for u in todo)
    if not lm_ready and any(u.protocol == "semi" for u in todo):
        s += sp.lm_docs * sp.tokens_per_doc * (cfg.lm_frozen_epochs + cfg.lm_epochs) / sp.lm_tps
    return s


def fit_budget(
    plan: ComparePlan,
    seconds: Callable[[ComparePlan], float],
    budget_s: float,
    can_drop_test_rows: bool,
    min_test_rows: int = 500,
) -> tuple[ComparePlan, list[str]]:
    """The largest plan within budget: drop the largest sizes, then seeds, then test rows."""
    dropped: list[str] = []
    while seconds(plan) > budget_s:
        if len(plan.sizes) > 1:
            big = max(plan.sizes)
            plan = dataclasses.replace(plan, sizes=tuple(s for s in plan.sizes if s != big))
            dropped.append(f"size {big}")
        elif len(plan.seeds) > 1:
            dropped.append(f"seed {plan.seeds[-1]}")
            plan = dataclasses.replace(plan, seeds=plan.seeds[:-1])
        elif can_drop_test_rows and (plan.test_rows == 0 or plan.test_rows > min_test_rows):
            rows = plan.test_rows or 2 * min_test_rows  # resolved by the caller when 0
            new = max(min_test_rows, rows // 2)
            dropped.append(f"test rows {rows} -> {new}")
            plan = dataclasses.replace(plan, test_rows=new)
        else:
            need = seconds(plan) / 60
            raise ConfigError(
                f"even the smallest plan (size {plan.sizes[0]}, seed {plan.seeds[0]}) needs "
                f"~{need:.1f} min, more than --budget-minutes {budget_s / 60:g}",
                "raise the budget, or pass smaller --sizes or fewer --arms",
            )
    return plan, dropped


def with_scratch_speed(
    sp: Speed,
    plan: ComparePlan,
    done: set[str],
    cfg: TrainConfig,
    run: Run,
    measure: Callable[..., tuple[float, float, float]],
    shape: Any,
) -> Speed:
    """`sp` plus the scratch arm's own classifier speed when it trains in another dtype than
    the run's (fp32 under bf16 autocast: 2-3x slower, so the bf16 figure under-estimated it)."""
    if not any(u.arm == "scratch" and u.key not in done for u in plan.units()):
        return sp
    dtype = classifier_dtype(cfg, run, False)
    if dtype == run.dtype:
        return sp
    _, clas, infer = measure(
        shape, dataclasses.replace(run, dtype=dtype), cfg, sp.tokens_per_doc, lm=False
    )
    return dataclasses.replace(sp, scratch_clas_tps=clas, scratch_infer_tps=infer)


def measure_speed(
    shape: Any, run: Run, cfg: TrainConfig, seq: int, steps: int = 1, lm: bool = True
) -> tuple[float, float, float]:
    """Time a few LM, classifier and inference batches of `shape`; tokens/s of each (LM 0.0
    when not `lm`)."""

    dev, kind = torch.device(run.device), torch.device(run.device).type
    g = torch.Generator().manual_seed(0)
    seq = max(8, min(int(seq), cfg.max_len))

    def timed(step: Callable[[], None], n: int) -> float:
        step()  # warm-up (allocator, kernels)
        sync = torch.cuda.synchronize if kind == "cuda" else lambda: None
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        sync()
        return (time.perf_counter() - t0) / n

    lm_tps = 0.0
    if lm:
        model = build_lm(shape).to(dev)
        opt = torch.optim.Adam(model.parameters())
        x = torch.randint(9, shape.vocab_size, (run.lm_bs, cfg.bptt + 1), generator=g).to(dev)

        def lm_step() -> None:
            model.reset()
            with autocast_ctx(run.dtype, kind):
                out = model(x[:, :-1])[0]  # (bs, bptt, vocab)
            F.cross_entropy(out.float().flatten(0, 1), x[:, 1:].flatten()).backward()
            opt.step()
            opt.zero_grad()

        lm_tps = run.lm_bs * cfg.bptt / timed(lm_step, steps)
    clas = build_classifier(
        shape, 2, seq_len=cfg.bptt, max_len=cfg.max_len, lin_ftrs=list(cfg.lin_ftrs)
    ).to(dev)
    opt = torch.optim.Adam(clas.parameters())
    xc = torch.randint(9, shape.vocab_size, (run.bs, seq), generator=g).to(dev)
    yc = torch.randint(0, 2, (run.bs,), generator=g).to(dev)

    def clas_step() -> None:
        with autocast_ctx(run.dtype, kind):
            out = clas(xc)[0]  # (bs, n_class)
        F.cross_entropy(out.float(), yc).backward()
        opt.step()
        opt.zero_grad()

    def infer_step() -> None:
        with torch.no_grad(), autocast_ctx(run.dtype, kind):
            clas(xc)

    clas_tps = run.bs * seq / timed(clas_step, steps)
    clas.eval()
    infer_tps = run.bs * seq / timed(infer_step, steps)
    return lm_tps, clas_tps, infer_tps


__all__ = [
    "ARMS",
    "DEFAULT_ARMS",
    "LM_ARMS",
    "PROTOCOLS",
    "LABELS_ONLY",
    "DEFAULT_SIZES",
    "REFERENCES",
    "TFIDF_SECONDS_PER_DOC",
    "Unit",
    "ComparePlan",
    "Speed",
    "unit_seconds",
    "plan_seconds",
    "fit_budget",
    "measure_speed",
    "with_scratch_speed",
]
