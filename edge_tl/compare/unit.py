"""One unit of a comparison: train an arm on N rows, score it on the test rows, record it."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from edge_tl.bases.store import load_base
from edge_tl.compare.ensemble import ensemble_metrics, in_label_order
from edge_tl.compare.lm import SEMI_LM, SEMI_LM_BACKWARD, shared_backward_lm, shared_lm
from edge_tl.compare.plan import ComparePlan, Unit
from edge_tl.compare.resume import (
    checkpoint_meta,
    lm_from_checkpoint,
    unit_checkpoint_name,
    unit_checkpoints,
)
from edge_tl.compare.shipped import ARM as SHIPPED
from edge_tl.compare.shipped import forward_only_metrics, shipped_metrics
from edge_tl.metrics import argmax, metrics_from_predictions
from edge_tl.train import directions
from edge_tl.train import recipe as _train
from edge_tl.train.baseline import TfidfConfig, tfidf_accuracy
from edge_tl.train.config import TrainConfig, config_dict
from edge_tl.train.engine import numericalize, tokenize
from edge_tl.train.evaluate import network_proba
from edge_tl.train.settings import Run

VALID_ROWS = 64  # fastai wants a validation set; these are training rows, nothing is picked on them
# What a network unit's record keeps of the model's own metrics.
KEPT_METRICS = (
    "forward_network_accuracy",
    "backward_network_accuracy",
    "backward_lm_perplexity",
    "lm_valid_loss",
    "lm_perplexity",
    "lm_tokens_per_s",
    "clas_tokens_per_s",
    "clas_tokens",
    "stages",
    "dtype",
    "device",
)


def versions() -> dict[str, str]:
    """Versions of edge_tl, torch, fastai and scikit-learn."""
    out = {}
    for pkg in ("edge_tl", "torch", "fastai", "scikit-learn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def now() -> str:
    """UTC time, as results.json records it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class UnitContext:
    """What every unit of one comparison shares: plan, data, subsets, runtime, caches."""

    plan: ComparePlan
    cfg: TrainConfig
    run: Run
    work: Path
    echo: Callable[[str], None]
    names: list[str]
    texts: list[str]
    labels: list[str]
    test_texts: list[str]
    test_labels: list[str]
    subsets: dict[int, dict[int, list[int]]]
    shape: Any
    digest: str
    lm_texts: Callable[[], list[str]]
    setup_digest: str = ""
    docs: dict[int, list[str]] = dataclasses.field(default_factory=dict)
    test_docs: list[list[str]] | None = None
    base: Any = None
    semi: _train.LMResult | None = None
    semi_backward: _train.LMResult | None = None
    # the `train` arm's settings: the comparison's, with the TF-IDF head as `train` has it
    head_cfg: TrainConfig | None = None

    def tokenized(self, rows: list[int]) -> list[list[str]]:
        """The tokens of training rows `rows`, each row tokenized once per comparison."""
        todo = [i for i in rows if i not in self.docs]
        if todo:
            self.docs.update(
                zip(todo, tokenize([self.texts[i] for i in todo], self.cfg.workers), strict=True)
            )
        return [self.docs[i] for i in rows]

    def load_base(self) -> Any:
        if self.base is None:
            self.base = load_base(self.plan.base)
        return self.base


def _network_probs(ctx: UnitContext, m: Any, docs: list[list[str]]) -> Any:
    """Trained model `m`'s probabilities (in its label order) on tokenized texts (with a
    backward network, the mean of both directions)."""
    dtype = m.metrics.get("dtype", ctx.run.dtype)  # what it trained in (fp32 for scratch on CPU)
    ids = numericalize(docs, m.vocab)
    return network_proba(m, ids, ctx.run.bs, dtype, ctx.run.device).tolist()


def _test_metrics(ctx: UnitContext, m: Any) -> dict[str, Any]:
    """Accuracy etc. of trained model `m` on the (once tokenized) test rows, and `probs`: each
    row's probabilities in the comparison's label order (kept in memory only)."""
    if ctx.test_docs is None:
        ctx.test_docs = tokenize(ctx.test_texts, ctx.cfg.workers)
    probs = _network_probs(ctx, m, ctx.test_docs)
    c2i = {n: i for i, n in enumerate(m.labels)}
    out = metrics_from_predictions(
        [c2i[x] for x in ctx.test_labels], [argmax(p) for p in probs], m.labels
    )
    out["probs"] = in_label_order(probs, m.labels, ctx.names)
    return out


def run_unit(ctx: UnitContext, u: Unit, doc: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate one unit; its record for results.json."""
    rows = ctx.subsets[u.seed][u.size]
    texts, labels = [ctx.texts[i] for i in rows], [ctx.labels[i] for i in rows]
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    if u.arm == "tfidf":
        r, config, extra = _tfidf_unit(ctx, u, texts, labels, timings)
    else:
        r, config, extra = _network_unit(ctx, u, rows, texts, labels, doc, timings)
    return {
        "arm": u.arm,
        "protocol": u.protocol,
        "size": u.size,
        "seed": u.seed,
        "accuracy": r["accuracy"],
        "macro_f1": r["macro_f1"],
        "test_rows": r["n"],
        "labels": r["labels"],
        "confusion_matrix": r["confusion_matrix"],
        "seconds": time.perf_counter() - t0,
        "timings": timings,
        "metrics": extra,
        "config": config,
        "versions": versions(),
        "device": doc.get("device"),
        "finished": now(),
    }


def _tfidf_unit(
    ctx: UnitContext, u: Unit, texts: list[str], labels: list[str], timings: dict[str, float]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The TF-IDF + LR arm: fit on the unit's rows, score the test rows."""
    tcfg = TfidfConfig()
    r = tfidf_accuracy(texts, labels, ctx.test_texts, ctx.test_labels, u.seed, tcfg)
    timings.update(fit=r.pop("fit_seconds"), evaluate=r.pop("predict_seconds"))
    config: dict[str, Any] = {**dataclasses.asdict(tcfg), "cs": list(tcfg.cs), "seed": u.seed}
    extra = {k: r.pop(k) for k in ("c", "cv_accuracy", "cv_folds", "n_features")}
    return r, config, extra


def _network_unit(
    ctx: UnitContext,
    u: Unit,
    rows: list[int],
    texts: list[str],
    labels: list[str],
    doc: dict[str, Any],
    timings: dict[str, float],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A transfer or scratch unit: (LM,) classifier, test metrics and, for transfer, the
    transfer + TF-IDF series."""
    t0 = time.perf_counter()
    shipped = u.arm == SHIPPED
    cfg = dataclasses.replace(ctx.head_cfg if shipped and ctx.head_cfg else ctx.cfg, seed=u.seed)
    docs = ctx.tokenized(rows)
    timings["tokenize"] = time.perf_counter() - t0
    lm = lm_b = None
    if u.arm == "scratch":
        cfg = dataclasses.replace(cfg, scratch=True, arch=ctx.shape)
    elif u.protocol == "semi":
        fresh = ctx.semi is None and not (ctx.work / SEMI_LM).exists()
        lm = shared_lm(ctx, doc)  # before the unit's hooks: it sets and clears its own
        if fresh:  # trained once for every semi unit: kept out of this unit's per-row cost
            timings["shared_lm"] = lm.seconds
        if shipped and cfg.backward_base:  # ULMFiT's forward + backward: its own shared LM
            fresh = ctx.semi_backward is None and not (ctx.work / SEMI_LM_BACKWARD).exists()
            lm_b = shared_backward_lm(ctx, doc, lm)
            if fresh:
                timings["shared_lm_backward"] = lm_b.seconds
    # fastai wants a validation set; the network arms train on all N rows, so it is a spread of
    # them; the `train` arm holds out train's own split (it chooses the head's share there)
    step = max(1, len(rows) // VALID_ROWS)
    valid = None if shipped else (texts[::step][:VALID_ROWS], labels[::step][:VALID_ROWS])
    meta = checkpoint_meta(ctx.plan, ctx.setup_digest)
    name = unit_checkpoint_name(ctx.setup_digest, u.key)
    with unit_checkpoints(ctx.run, name, cfg, meta, ctx.echo) as (ck, extra):
        if ck is not None:
            p = ck.position
            ctx.echo(f"{u.key}: resuming at {p.phase} stage {p.stage + 1}, epoch {p.epoch + 1}")
        if u.arm == "transfer" and u.protocol != "semi":
            lm = _supervised_lm(ctx, ck, texts, docs, cfg, extra)
            timings["lm"] = lm.seconds
        t1 = time.perf_counter()
        m = _train.train_classifier(
            texts,
            labels,
            lm,
            cfg,
            valid=valid,
            label_names=ctx.names,
            run=ctx.run,
            docs=docs,
            name="compare",
            scratch=u.arm == "scratch",
        )
        timings["classifier"] = time.perf_counter() - t1
    fwd = m
    if lm_b is not None:  # the backward network (not checkpointed)
        t1 = time.perf_counter()
        bwd = directions.train_backward_classifier(
            texts, labels, lm_b, cfg, label_names=ctx.names, run=ctx.run, docs=docs
        )
        m = directions.combine(m, bwd, cfg)
        timings["backward"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    r = _test_metrics(ctx, m)
    timings["evaluate"] = time.perf_counter() - t2
    config = config_dict(cfg)
    config["arch"] = dataclasses.asdict(ctx.shape) if cfg.arch is not None else None
    extra = {k: m.metrics[k] for k in KEPT_METRICS if k in m.metrics}
    if shipped:  # what train ships: the mix; the network and the head beside it, and levers
        t3 = time.perf_counter()
        gold = [ctx.names.index(x) for x in ctx.test_labels]

        def network_of(texts: list[str]) -> Any:
            probs = _network_probs(ctx, m, tokenize(texts, cfg.workers))
            return in_label_order(probs, m.labels, ctx.names)

        r, more = shipped_metrics(m, cfg, r["probs"], ctx.test_texts, gold, ctx.names, network_of)
        extra.update(more)
        if fwd is not m:  # forward + backward: the forward network alone, as it would ship

            def forward_of(texts: list[str]) -> Any:
                probs = _network_probs(ctx, fwd, tokenize(texts, cfg.workers))
                return in_label_order(probs, fwd.labels, ctx.names)

            extra["forward_only"] = forward_only_metrics(fwd, ctx.test_texts, gold, forward_of)
        timings["shipped"] = time.perf_counter() - t3
    if u.arm == "transfer":  # the transfer + TF-IDF series: mean of the two models' probs
        t3 = time.perf_counter()
        gold = [ctx.names.index(x) for x in ctx.test_labels]
        extra["ensemble"] = ensemble_metrics(
            r["probs"], texts, labels, ctx.test_texts, gold, ctx.names, u.seed
        )
        timings["ensemble"] = time.perf_counter() - t3
    return r, config, extra


def _supervised_lm(
    ctx: UnitContext,
    ck: Any,
    texts: list[str],
    docs: list[list[str]],
    cfg: TrainConfig,
    extra: dict[str, Any],
) -> _train.LMResult:
    """The unit's own LM, fine-tuned on its N texts (or taken from its checkpoint)."""
    if ck is not None and ck.position.phase == "clas":
        return lm_from_checkpoint(ck, ctx.shape, ctx.plan.base)
    lm = _train.finetune_lm(
        texts,
        ctx.load_base(),
        cfg,
        run=ctx.run,
        docs=docs,
        vocab=list(ck.vocab) if ck is not None else None,
    )
    ctx.run.resume = None  # the classifier starts fresh after a resumed LM
    extra.update(lm.metrics, base_sha256=lm.base_sha256, lm_tokens=lm.tokens, lm_seconds=lm.seconds)
    return lm


__all__ = ["UnitContext", "now", "run_unit", "versions"]
