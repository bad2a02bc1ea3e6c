"""`edge-tl compare`: the transfer-vs-scratch learning curve as resumable units.

A plan is every (arm, protocol, size, seed) unit. Arms: `transfer` (LM fine-tuning from a base,
then the classifier schedule), `scratch` (same architecture and classifier schedule, random
init, no LM) and `tfidf` (TF-IDF + logistic regression). Protocols of the transfer arm:
`supervised` (LM fine-tuned on the N training texts) and `semi` (LM fine-tuned once on every
text of the data set plus its unlabelled rows and --lm-data, reused for every size and seed).
The other arms see labels only (protocol "none"). Each finished unit is written to
results.json at once (atomic), so an interrupted run continues where it stopped.
Every arm trains on all N labelled rows; the N rows are stratified, nested and fixed by seed.
This module is the runner; the plan and the time estimate are in compare_plan, the shared LM file
in compare_lm, the results file and its lock in compare_results.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import train as _train
from .compare_lm import CLASSIFIER_ONLY, LM_DIGEST_FILL, SEMI_LM, lm_digest, shared_lm
from .compare_plan import (
    ARMS,
    DEFAULT_SIZES,
    PROTOCOLS,
    ComparePlan,
    Speed,
    Unit,
    fit_budget,
    measure_speed,
    plan_seconds,
    with_scratch_speed,
)
from .compare_plan import unit_seconds as unit_seconds  # part of this module's API (tests)
from .compare_results import check_setup, load_results, locked, save_results
from .compare_resume import (
    checkpoint_meta,
    lm_from_checkpoint,
    setup_digest,
    unit_checkpoint_name,
    unit_checkpoints,
)
from .errors import ConfigError, DataError
from .train_config import HEAD_KEYS
from .train_vault import make_runtime

TEST_SEED = 0  # the test subset is the same for every run
VALID_ROWS = 64  # fastai wants a validation set; these are training rows, nothing is picked on them
# Knobs that change speed, not results: a comparison may be resumed with other values.
RUNTIME_ONLY = {"threads": 0, "workers": 0, "checkpoint_minutes": 10.0}
# ---------------------------------------------------------------- runtime and records


def runtime(cfg: _train.TrainConfig, shape: Any, profile: Any, progress: bool,
            echo: Callable[[str], None]) -> tuple[_train.Run, dict[str, Any]]:  # fmt: skip
    """Device, dtype, threads and planned batch sizes (the profile and the memory planner)."""
    import torch

    hw, prof, run = make_runtime(cfg, profile, shape, progress, log=echo)
    info = {"profile": prof.name, "device": run.device, "dtype": run.dtype,
            "threads": torch.get_num_threads(), "bs": run.bs, "lm_bs": run.lm_bs,
            "cpu": hw.cpu_model, "logical_cores": hw.logical_cores,
            "cuda": hw.cuda[0].name if hw.cuda and run.device == "cuda" else None}  # fmt: skip
    return run, info


def versions() -> dict[str, str]:
    """Versions of edge_tl, torch, fastai and scikit-learn."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("edge_tl", "torch", "fastai", "scikit-learn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mean_tokens(texts: list[str], workers: int) -> float:
    from .fastcpu import tokenize

    rng = random.Random(0)
    sample = rng.sample(texts, min(len(texts), 100))
    return max(1.0, sum(len(d) for d in tokenize(sample, workers)) / max(1, len(sample)))


# ---------------------------------------------------------------- the runner


@dataclass
class _Ctx:
    plan: ComparePlan
    cfg: _train.TrainConfig
    run: _train.Run
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

    def tokenized(self, rows: list[int]) -> list[list[str]]:
        from .fastcpu import tokenize

        todo = [i for i in rows if i not in self.docs]
        if todo:
            self.docs.update(zip(todo, tokenize([self.texts[i] for i in todo], self.cfg.workers),
                                 strict=True))  # fmt: skip
        return [self.docs[i] for i in rows]

    def load_base(self) -> Any:
        if self.base is None:
            from .bases import load_base

            self.base = load_base(self.plan.base)
        return self.base


def _test_metrics(ctx: _Ctx, m: Any) -> dict[str, Any]:
    """Accuracy etc. of trained model `m` on the (once tokenized) test rows, and `probs`: each
    row's probabilities in the comparison's label order (kept in memory only)."""
    from .compare_ensemble import in_label_order
    from .evaluate import argmax, metrics_from_predictions, predict_proba_ids
    from .fastcpu import numericalize, tokenize
    from .model import build_classifier

    if ctx.test_docs is None:
        ctx.test_docs = tokenize(ctx.test_texts, ctx.cfg.workers)
    tc = m.train_config
    model = build_classifier(m.model_cfg, len(m.labels), seq_len=tc["bptt"],
                             max_len=tc["max_len"], lin_ftrs=list(m.lin_ftrs))  # fmt: skip
    model.load_state_dict(m.state_dict)
    model.to(ctx.run.device)
    dtype = m.metrics.get("dtype", ctx.run.dtype)  # what it trained in (fp32 for scratch on CPU)
    probs = predict_proba_ids(model, numericalize(ctx.test_docs, m.vocab), ctx.run.bs,
                              tc["bptt"], dtype, ctx.run.device)  # fmt: skip
    c2i = {n: i for i, n in enumerate(m.labels)}
    out = metrics_from_predictions([c2i[x] for x in ctx.test_labels], [argmax(p) for p in probs],
                                   m.labels)  # fmt: skip
    out["probs"] = in_label_order(probs, m.labels, ctx.names)
    return out


def run_unit(ctx: _Ctx, u: Unit, doc: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate one unit; its record for results.json."""
    rows = ctx.subsets[u.seed][u.size]
    texts, labels = [ctx.texts[i] for i in rows], [ctx.labels[i] for i in rows]
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    if u.arm == "tfidf":
        from .baseline import TfidfConfig, tfidf_accuracy

        tcfg = TfidfConfig()
        r = tfidf_accuracy(texts, labels, ctx.test_texts, ctx.test_labels, u.seed, tcfg)
        timings.update(fit=r.pop("fit_seconds"), evaluate=r.pop("predict_seconds"))
        config: dict[str, Any] = {**dataclasses.asdict(tcfg), "cs": list(tcfg.cs), "seed": u.seed}
        extra = {k: r.pop(k) for k in ("c", "cv_accuracy", "cv_folds", "n_features")}
    else:
        cfg = dataclasses.replace(ctx.cfg, seed=u.seed)
        docs = ctx.tokenized(rows)
        timings["tokenize"] = time.perf_counter() - t0
        lm = None
        if u.arm == "scratch":
            cfg = dataclasses.replace(cfg, scratch=True, arch=ctx.shape)
        elif u.protocol == "semi":
            fresh = ctx.semi is None and not (ctx.work / SEMI_LM).exists()
            lm = shared_lm(ctx, doc)  # before the unit's hooks: it sets and clears its own
            if fresh:  # trained once for every semi unit: kept out of this unit's per-row cost
                timings["shared_lm"] = lm.seconds
        # fastai wants a validation set; we train on all N rows, so it is a spread of them
        step = max(1, len(rows) // VALID_ROWS)
        valid = (texts[::step][:VALID_ROWS], labels[::step][:VALID_ROWS])
        meta = checkpoint_meta(ctx.plan, ctx.setup_digest)
        name = unit_checkpoint_name(ctx.setup_digest, u.key)
        with unit_checkpoints(ctx.run, name, cfg, meta, ctx.echo) as (ck, extra):
            if ck is not None:
                p = ck.position
                ctx.echo(f"{u.key}: resuming at {p.phase} stage {p.stage + 1}, epoch {p.epoch + 1}")
            if u.arm == "transfer" and u.protocol != "semi":
                if ck is not None and ck.position.phase == "clas":
                    lm = lm_from_checkpoint(ck, ctx.shape, ctx.plan.base)
                else:
                    lm = _train.finetune_lm(texts, ctx.load_base(), cfg, run=ctx.run, docs=docs,
                                            vocab=list(ck.vocab) if ck is not None else None)
                    ctx.run.resume = None  # the classifier starts fresh after a resumed LM
                    extra.update(lm.metrics, base_sha256=lm.base_sha256, lm_tokens=lm.tokens,
                                 lm_seconds=lm.seconds)  # fmt: skip
                timings["lm"] = lm.seconds
            t1 = time.perf_counter()
            m = _train.train_classifier(texts, labels, lm, cfg, valid=valid,
                                        label_names=ctx.names, run=ctx.run, docs=docs,
                                        name="compare", scratch=u.arm == "scratch")  # fmt: skip
            timings["classifier"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        r = _test_metrics(ctx, m)
        timings["evaluate"] = time.perf_counter() - t2
        config = _train.config_dict(cfg)
        config["arch"] = dataclasses.asdict(ctx.shape) if cfg.arch is not None else None
        keep = ("lm_valid_loss", "lm_perplexity", "lm_tokens_per_s", "clas_tokens_per_s",
                "clas_tokens", "stages", "dtype", "device")  # fmt: skip
        extra = {k: m.metrics[k] for k in keep if k in m.metrics}
        if u.arm == "transfer":  # the transfer + TF-IDF series: mean of the two models' probs
            from .compare_ensemble import ensemble_metrics

            t3 = time.perf_counter()
            gold = [ctx.names.index(x) for x in ctx.test_labels]
            extra["ensemble"] = ensemble_metrics(r["probs"], texts, labels, ctx.test_texts, gold,
                                                 ctx.names, u.seed)  # fmt: skip
            timings["ensemble"] = time.perf_counter() - t3
    return {
        "arm": u.arm, "protocol": u.protocol, "size": u.size, "seed": u.seed,
        "accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "test_rows": r["n"],
        "labels": r["labels"], "confusion_matrix": r["confusion_matrix"],
        "seconds": time.perf_counter() - t0, "timings": timings, "metrics": extra,
        "config": config, "versions": versions(), "device": doc.get("device"),
        "finished": _now(),
    }  # fmt: skip


def _measured(doc: dict[str, Any], device: dict[str, Any]) -> dict[str, float]:
    """Seconds per training row of finished units on this device, by arm/protocol."""
    per: dict[str, list[float]] = {}
    for r in doc["runs"].values():
        same = (r.get("device") or {}).get("device") == device["device"]
        if same and r.get("size"):
            own = r["seconds"] - r.get("timings", {}).get("shared_lm", 0.0)
            per.setdefault(f"{r['arm']}/{r['protocol']}", []).append(own / r["size"])
    return {k: sum(v) / len(v) for k, v in per.items()}


def run_compare(
    plan: ComparePlan, cfg: _train.TrainConfig, out: Path, *, profile: Any = None,
    budget_minutes: float | None = None, dry_run: bool = False, progress: bool = False,
    echo: Callable[[str], None] = print, work: Path | None = None,
) -> dict[str, Any]:
    """Run (or continue) a comparison into `out` (shared LM and lock in `work`, default `out`);
    returns the results document."""
    from . import report
    from .bases import base_info
    from .config import to_dict
    from .data import open_dataset, stratified_nested_subsets

    out = Path(out)
    work = Path(work) if work is not None else out
    # The arms are the network alone; the `transfer+tfidf` series is compare's own mean.
    cfg = dataclasses.replace(cfg, tfidf_head=False)
    with locked(work):
        out.mkdir(parents=True, exist_ok=True)
        doc = load_results(out)
        old = doc.get("setup") or {}
        if plan.test_rows == 0 and old.get("test_rows"):
            plan = dataclasses.replace(plan, test_rows=old["test_rows"])
        ds, ts = open_dataset(plan.data), open_dataset(plan.test)
        texts, labels = ds.labelled()
        names = sorted(set(labels))
        if len(names) < 2:
            raise DataError(f"dataset {plan.data!r} has fewer than two labels",
                            "compare needs rows of two or more labels")  # fmt: skip
        t_texts, t_labels = ts.labelled()
        unknown = sorted(set(t_labels) - set(names))
        if not t_texts or unknown:
            what = f"label {unknown[0]!r}, which {plan.data!r} lacks" if unknown else "no labels"
            raise DataError(f"test set {plan.test!r} has {what}",
                            "test on data with the training data's labels")  # fmt: skip
        lm_sets = {n: open_dataset(n) for n in plan.lm_data}
        n_unlab = len(ds.unlabelled_texts()) + sum(len(d) for d in lm_sets.values())
        if "semi" in plan.protocols and "transfer" in plan.arms and n_unlab == 0:
            raise DataError(f"protocol semi needs unlabelled text, and dataset {plan.data!r} "
                            "has no unlabelled rows", "import some, or pass --lm-data NAME")
        bi = base_info(plan.base)
        if bi.model_cfg is None:
            raise ConfigError(f"base {plan.base!r} cannot be read: {bi.problem}")
        shape = bi.model_cfg
        run, dev = runtime(cfg, shape, profile, progress, echo)
        doc["device"] = dev
        tpd = _mean_tokens(texts, cfg.workers)
        sp = Speed(1.0, 1.0, 1.0, tpd, len(t_texts), len(ds) + sum(map(len, lm_sets.values())),
                   _measured(doc, dev))  # fmt: skip
        done = set(doc["runs"])
        lm_ready = (work / SEMI_LM).exists()
        if any(u.arm != "tfidf" and u.key not in done for u in plan.units()):
            sp = dataclasses.replace(sp, **dict(zip(("lm_tps", "clas_tps", "infer_tps"),
                                                    measure_speed(shape, run, cfg, tpd),
                                                    strict=True)))  # fmt: skip
            sp = with_scratch_speed(sp, plan, done, cfg, run, measure_speed, shape)

        def seconds(p: ComparePlan) -> float:
            return plan_seconds(p, sp, cfg, done, lm_ready)

        full = seconds(plan)
        if budget_minutes is not None:
            if plan.test_rows == 0:
                plan = dataclasses.replace(plan, test_rows=len(t_texts))
            plan, dropped = fit_budget(plan, seconds, budget_minutes * 60, not old)
            if dropped:
                echo(f"budget {budget_minutes:g} min: the full plan needs ~{full / 60:.1f} min; "
                     f"dropped {', '.join(dropped)}")  # fmt: skip
        n_test = min(plan.test_rows or len(t_texts), len(t_texts))
        if n_test < len(t_texts):
            keep = stratified_nested_subsets(t_labels, [n_test], TEST_SEED)[n_test]
            t_texts, t_labels = [t_texts[i] for i in keep], [t_labels[i] for i in keep]
        units = plan.units()
        todo = [u for u in units if u.key not in done]
        echo(f"plan: {len(units)} units ({len(units) - len(todo)} finished, skipped), sizes "
             f"{','.join(map(str, sorted(plan.sizes)))}, seeds {','.join(map(str, plan.seeds))},"
             f" {n_test} test rows; {dev['device']} {dev['dtype']}, {dev['threads']} threads, "
             f"batch {dev['bs']} (LM {dev['lm_bs']})")  # fmt: skip
        echo(f"estimated time: ~{seconds(plan) / 60:.1f} min (measured LM {sp.lm_tps:,.0f}, "
             f"classifier {sp.clas_tps:,.0f}, inference {sp.infer_tps:,.0f} tokens/s; "
             + (f"scratch in fp32 {sp.scratch_clas_tps:,.0f} / {sp.scratch_infer_tps:,.0f}; "
                if sp.scratch_clas_tps else "")
             + f"{tpd:.0f} tokens per text)")  # fmt: skip
        setup = {
            "data": plan.data, "data_fingerprint": ds.fingerprint, "test": plan.test,
            "test_fingerprint": ts.fingerprint, "test_rows": n_test, "test_seed": TEST_SEED,
            "base": plan.base, "base_sha256": bi.sha256, "model_config": to_dict(shape),
            "lm_data": {n: d.fingerprint for n, d in lm_sets.items()},
            "train_config": {**{k: v for k, v in _train.config_dict(cfg).items()
                                if k not in HEAD_KEYS}, **RUNTIME_ONLY},  # always off here
        }  # fmt: skip
        if old.get("train_config") is not None:
            # Results from before lm_frozen_through_rnn existed were trained fastai's way.
            old["train_config"] = {"lm_frozen_through_rnn": True, **old["train_config"],
                                   **RUNTIME_ONLY}  # fmt: skip
        check_setup(old or None, setup, out)
        doc.update(setup=setup, plan=plan.to_dict(), versions=versions(),
                   estimate={"seconds": seconds(plan), "tokens_per_text": tpd,
                             "lm_tokens_per_s": sp.lm_tps, "clas_tokens_per_s": sp.clas_tps,
                             "infer_tokens_per_s": sp.infer_tps})  # fmt: skip
        if dry_run:
            return doc
        subsets = {s: stratified_nested_subsets(labels, list(plan.sizes), s) for s in plan.seeds}

        def lm_texts() -> list[str]:
            return list(ds.texts) + [t for d in lm_sets.values() for t in d.texts]

        digest = lm_digest(setup)
        ctx = _Ctx(plan, cfg, run, work, echo, names, texts, labels, t_texts, t_labels, subsets,
                   shape, digest, lm_texts, setup_digest=setup_digest(setup))  # fmt: skip
        save_results(out, doc)
        t_start = time.perf_counter()
        for k, u in enumerate(todo):
            rec = run_unit(ctx, u, doc)
            doc["runs"][u.key] = rec
            doc["updated"] = _now()
            save_results(out, doc)
            report.write_report(doc, out)
            left = (time.perf_counter() - t_start) / (k + 1) * (len(todo) - k - 1)
            echo(f"[{k + 1}/{len(todo)}] {u.key}: accuracy {rec['accuracy']:.4f} "
                 f"({rec['seconds'] / 60:.1f} min; ~{left / 60:.0f} min left)")  # fmt: skip
        report.write_report(doc, out)
        return doc


__all__ = [
    "ARMS",
    "CLASSIFIER_ONLY",
    "LM_DIGEST_FILL",
    "lm_digest",
    "PROTOCOLS",
    "DEFAULT_SIZES",
    "ComparePlan",
    "Unit",
    "Speed",
    "fit_budget",
    "load_results",
    "measure_speed",
    "plan_seconds",
    "run_compare",
    "run_unit",
]
