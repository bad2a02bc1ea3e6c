"""`edge-tl compare`: the transfer-vs-scratch learning curve as resumable units.

A plan is every (arm, protocol, size, seed) unit. Arms: `transfer` (LM fine-tuning from a base,
then the classifier schedule), `scratch` (same architecture and classifier schedule, random
init, no LM), `tfidf` (TF-IDF + logistic regression) and `train` (what `edge-tl train` ships:
transfer's network on train's own split, mixed with its TF-IDF head; compare/shipped.py).
Protocols of the transfer and train arms:
`supervised` (LM fine-tuned on the N training texts) and `semi` (LM fine-tuned once on every
text of the data set plus its unlabelled rows and --lm-data, reused for every size and seed).
The other arms see labels only (protocol "none"). Each finished unit is written to
results.json at once (atomic), so an interrupted run continues where it stopped.
Every arm but `train` trains on all N labelled rows; the N rows are stratified, nested and
fixed by seed.
This module runs a comparison; one unit is compare/unit.py, the plan and the time estimate
compare/plan.py, the shared LM compare/lm.py, the results file and its lock compare/results.py.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from edge_tl.bases.store import base_info
from edge_tl.compare import report
from edge_tl.compare.lm import SEMI_LM, lm_digest
from edge_tl.compare.plan import (
    LM_ARMS,
    ComparePlan,
    Speed,
    Unit,
    fit_budget,
    measure_speed,
    plan_seconds,
    with_scratch_speed,
)
from edge_tl.compare.results import check_setup, load_results, locked, save_results
from edge_tl.compare.resume import (
    setup_digest,
)
from edge_tl.compare.unit import UnitContext, now, run_unit, versions
from edge_tl.config import to_dict
from edge_tl.errors import ConfigError, DataError
from edge_tl.store.datasets import Dataset, open_dataset, stratified_nested_subsets
from edge_tl.train.config import HEAD_KEYS, TrainConfig, config_dict
from edge_tl.train.engine import tokenize
from edge_tl.train.settings import Run, resolve_runtime

TEST_SEED = 0  # the test subset is the same for every run
# Knobs that change speed, not results: a comparison may be resumed with other values.
RUNTIME_ONLY = {"threads": 0, "workers": 0, "checkpoint_minutes": 10.0}
# ---------------------------------------------------------------- runtime and records


def runtime(
    cfg: TrainConfig, shape: Any, profile: Any, progress: bool, echo: Callable[[str], None]
) -> tuple[Run, dict[str, Any]]:
    """Device, dtype, threads and planned batch sizes (the profile and the memory planner)."""

    hw, prof, run = resolve_runtime(cfg, profile, shape, progress, log=echo)
    info = {
        "profile": prof.name,
        "device": run.device,
        "dtype": run.dtype,
        "threads": torch.get_num_threads(),
        "bs": run.bs,
        "lm_bs": run.lm_bs,
        "cpu": hw.cpu_model,
        "logical_cores": hw.logical_cores,
        "cuda": hw.cuda[0].name if hw.cuda and run.device == "cuda" else None,
    }
    return run, info


def _mean_tokens(texts: list[str], workers: int) -> float:

    rng = random.Random(0)
    sample = rng.sample(texts, min(len(texts), 100))
    return max(1.0, sum(len(d) for d in tokenize(sample, workers)) / max(1, len(sample)))


def _measured(doc: dict[str, Any], device: dict[str, Any]) -> dict[str, float]:
    """Seconds per training row of finished units on this device, by arm/protocol."""
    per: dict[str, list[float]] = {}
    for r in doc["runs"].values():
        same = (r.get("device") or {}).get("device") == device["device"]
        if same and r.get("size"):
            own = r["seconds"] - r.get("timings", {}).get("shared_lm", 0.0)
            per.setdefault(f"{r['arm']}/{r['protocol']}", []).append(own / r["size"])
    return {k: sum(v) / len(v) for k, v in per.items()}


@dataclass
class _Data:
    """The comparison's data sets, opened and checked."""

    ds: Dataset
    ts: Dataset
    texts: list[str]
    labels: list[str]
    names: list[str]
    test_texts: list[str]
    test_labels: list[str]
    lm_sets: dict[str, Dataset]

    def lm_texts(self) -> list[str]:
        """Every text the shared LM may read: the data set's and each --lm-data set's."""
        return list(self.ds.texts) + [t for d in self.lm_sets.values() for t in d.texts]


def run_compare(
    plan: ComparePlan,
    cfg: TrainConfig,
    out: Path,
    *,
    profile: Any = None,
    budget_minutes: float | None = None,
    dry_run: bool = False,
    progress: bool = False,
    echo: Callable[[str], None] = print,
    work: Path | None = None,
) -> dict[str, Any]:
    """Run (or continue) a comparison into `out` (shared LM and lock in `work`, default `out`);
    returns the results document."""
    out = Path(out)
    work = Path(work) if work is not None else out
    # The arms are the network alone (the `transfer+tfidf` series is compare's own mean), but
    # the `train` arm, which trains with the head as `train` does: its settings stay aside.
    head_cfg, cfg = cfg, dataclasses.replace(cfg, tfidf_head=False)
    with locked(work):
        out.mkdir(parents=True, exist_ok=True)
        doc = load_results(out)
        old = doc.get("setup") or {}
        if plan.test_rows == 0 and old.get("test_rows"):
            plan = dataclasses.replace(plan, test_rows=old["test_rows"])
        data = _open_data(plan)
        bi = base_info(plan.base)
        if bi.model_cfg is None:
            raise ConfigError(f"base {plan.base!r} cannot be read: {bi.problem}")
        shape = bi.model_cfg
        run, dev = runtime(cfg, shape, profile, progress, echo)
        doc["device"] = dev
        done = set(doc["runs"])
        sp = _speed(plan, cfg, run, shape, doc, data, done)
        lm_ready = (work / SEMI_LM).exists()

        def seconds(p: ComparePlan) -> float:
            return plan_seconds(p, sp, cfg, done, lm_ready)

        plan = _fit_budget(plan, seconds, budget_minutes, not old, len(data.test_texts), echo)
        n_test = _cut_test_rows(plan, data)
        todo = [u for u in plan.units() if u.key not in done]
        _echo_plan(plan, todo, n_test, dev, sp, seconds(plan), echo)
        setup = _setup(plan, data, bi.sha256, shape, cfg, n_test)
        _check_against(old, setup, out)
        doc.update(
            setup=setup,
            plan=plan.to_dict(),
            versions=versions(),
            estimate={
                "seconds": seconds(plan),
                "tokens_per_text": sp.tokens_per_doc,
                "lm_tokens_per_s": sp.lm_tps,
                "clas_tokens_per_s": sp.clas_tps,
                "infer_tokens_per_s": sp.infer_tps,
            },
        )
        if dry_run:
            return doc
        ctx = UnitContext(
            plan,
            cfg,
            run,
            work,
            echo,
            data.names,
            data.texts,
            data.labels,
            data.test_texts,
            data.test_labels,
            {s: stratified_nested_subsets(data.labels, list(plan.sizes), s) for s in plan.seeds},
            shape,
            lm_digest(setup),
            data.lm_texts,
            setup_digest=setup_digest(setup),
            head_cfg=dataclasses.replace(head_cfg, tfidf_head=True),
        )
        save_results(out, doc)
        _run_units(ctx, todo, doc, out, echo)
        return doc


def _open_data(plan: ComparePlan) -> _Data:
    """The training, test and --lm-data sets; DataError where they cannot make a comparison."""
    ds, ts = open_dataset(plan.data), open_dataset(plan.test)
    texts, labels = ds.labelled()
    names = sorted(set(labels))
    if len(names) < 2:
        raise DataError(
            f"dataset {plan.data!r} has fewer than two labels",
            "compare needs rows of two or more labels",
        )
    t_texts, t_labels = ts.labelled()
    unknown = sorted(set(t_labels) - set(names))
    if not t_texts or unknown:
        what = f"label {unknown[0]!r}, which {plan.data!r} lacks" if unknown else "no labels"
        raise DataError(
            f"test set {plan.test!r} has {what}", "test on data with the training data's labels"
        )
    lm_sets = {n: open_dataset(n) for n in plan.lm_data}
    n_unlab = len(ds.unlabelled_texts()) + sum(len(d) for d in lm_sets.values())
    if "semi" in plan.protocols and set(LM_ARMS) & set(plan.arms) and n_unlab == 0:
        raise DataError(
            f"protocol semi needs unlabelled text, and dataset {plan.data!r} has no "
            "unlabelled rows",
            "import some, or pass --lm-data NAME",
        )
    return _Data(ds, ts, texts, labels, names, t_texts, t_labels, lm_sets)


def _speed(
    plan: ComparePlan,
    cfg: TrainConfig,
    run: Run,
    shape: Any,
    doc: dict[str, Any],
    data: _Data,
    done: set[str],
) -> Speed:
    """Tokens/s of this machine for the estimate: measured now if any network unit is left."""
    tpd = _mean_tokens(data.texts, cfg.workers)
    n_lm = len(data.ds) + sum(map(len, data.lm_sets.values()))
    sp = Speed(1.0, 1.0, 1.0, tpd, len(data.test_texts), n_lm, _measured(doc, doc["device"]))
    if any(u.arm != "tfidf" and u.key not in done for u in plan.units()):
        lm_tps, clas_tps, infer_tps = measure_speed(shape, run, cfg, tpd)
        sp = dataclasses.replace(sp, lm_tps=lm_tps, clas_tps=clas_tps, infer_tps=infer_tps)
        sp = with_scratch_speed(sp, plan, done, cfg, run, measure_speed, shape)
    return sp


def _fit_budget(
    plan: ComparePlan,
    seconds: Callable[[ComparePlan], float],
    budget_minutes: float | None,
    fresh: bool,
    n_test: int,
    echo: Callable[[str], None],
) -> ComparePlan:
    """The plan cut to --budget-minutes (the largest units first), or as it is."""
    if budget_minutes is None:
        return plan
    full = seconds(plan)
    if plan.test_rows == 0:
        plan = dataclasses.replace(plan, test_rows=n_test)
    plan, dropped = fit_budget(plan, seconds, budget_minutes * 60, fresh)
    if dropped:
        echo(
            f"budget {budget_minutes:g} min: the full plan needs ~{full / 60:.1f} min; "
            f"dropped {', '.join(dropped)}"
        )
    return plan


def _cut_test_rows(plan: ComparePlan, data: _Data) -> int:
    """Keep the plan's fixed stratified test subset in `data`; the number of test rows."""
    n_test = min(plan.test_rows or len(data.test_texts), len(data.test_texts))
    if n_test < len(data.test_texts):
        keep = stratified_nested_subsets(data.test_labels, [n_test], TEST_SEED)[n_test]
        data.test_texts = [data.test_texts[i] for i in keep]
        data.test_labels = [data.test_labels[i] for i in keep]
    return n_test


def _echo_plan(
    plan: ComparePlan,
    todo: list[Unit],
    n_test: int,
    dev: dict[str, Any],
    sp: Speed,
    estimate: float,
    echo: Callable[[str], None],
) -> None:
    units = plan.units()
    echo(
        f"plan: {len(units)} units ({len(units) - len(todo)} finished, skipped), sizes "
        f"{','.join(map(str, sorted(plan.sizes)))}, seeds {','.join(map(str, plan.seeds))},"
        f" {n_test} test rows; {dev['device']} {dev['dtype']}, {dev['threads']} threads, "
        f"batch {dev['bs']} (LM {dev['lm_bs']})"
    )
    scratch = (
        f"scratch in fp32 {sp.scratch_clas_tps:,.0f} / {sp.scratch_infer_tps:,.0f}; "
        if sp.scratch_clas_tps
        else ""
    )
    echo(
        f"estimated time: ~{estimate / 60:.1f} min (measured LM {sp.lm_tps:,.0f}, "
        f"classifier {sp.clas_tps:,.0f}, inference {sp.infer_tps:,.0f} tokens/s; "
        f"{scratch}{sp.tokens_per_doc:.0f} tokens per text)"
    )


def _setup(
    plan: ComparePlan,
    data: _Data,
    base_sha256: str | None,
    shape: Any,
    cfg: TrainConfig,
    n_test: int,
) -> dict[str, Any]:
    """What every unit of the comparison shares; a resumed comparison must match it."""
    return {
        "data": plan.data,
        "data_fingerprint": data.ds.fingerprint,
        "test": plan.test,
        "test_fingerprint": data.ts.fingerprint,
        "test_rows": n_test,
        "test_seed": TEST_SEED,
        "base": plan.base,
        "base_sha256": base_sha256,
        "model_config": to_dict(shape),
        "lm_data": {n: d.fingerprint for n, d in data.lm_sets.items()},
        # the head is always off here
        "train_config": {
            **{k: v for k, v in config_dict(cfg).items() if k not in HEAD_KEYS},
            **RUNTIME_ONLY,
        },
    }


def _check_against(old: dict[str, Any], setup: dict[str, Any], out: Path) -> None:
    """ConfigError if the folder holds results of another setup."""
    if old.get("train_config") is not None:
        # Results from before lm_frozen_through_rnn existed were trained fastai's way; from
        # before best_epoch and valid_min_rows, with the last epoch and a 10 % split; from
        # before train_on_unused_valid, with the validation rows held out.
        old["train_config"] = {
            "lm_frozen_through_rnn": True,
            "best_epoch": False,
            "valid_min_rows": 0,
            "train_on_unused_valid": False,
            **old["train_config"],
            **RUNTIME_ONLY,
        }
    check_setup(old or None, setup, out)


def _run_units(
    ctx: UnitContext,
    todo: list[Unit],
    doc: dict[str, Any],
    out: Path,
    echo: Callable[[str], None],
) -> None:
    """Each unit in turn, its record saved (and the report redrawn) as soon as it ends."""
    t_start = time.perf_counter()
    for k, u in enumerate(todo):
        rec = run_unit(ctx, u, doc)
        doc["runs"][u.key] = rec
        doc["updated"] = now()
        save_results(out, doc)
        report.write_report(doc, out)
        left = (time.perf_counter() - t_start) / (k + 1) * (len(todo) - k - 1)
        echo(
            f"[{k + 1}/{len(todo)}] {u.key}: accuracy {rec['accuracy']:.4f} "
            f"({rec['seconds'] / 60:.1f} min; ~{left / 60:.0f} min left)"
        )
    report.write_report(doc, out)


__all__ = ["RUNTIME_ONLY", "TEST_SEED", "run_compare", "runtime"]
