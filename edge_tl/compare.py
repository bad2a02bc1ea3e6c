"""`edge-tl compare`: the transfer-vs-scratch learning curve as resumable units.

A plan is every (arm, protocol, size, seed) unit. Arms: `transfer` (LM fine-tuning from a base,
then the classifier schedule), `scratch` (same architecture and classifier schedule, random
init, no LM) and `tfidf` (TF-IDF + logistic regression). Protocols of the transfer arm:
`supervised` (LM fine-tuned on the N training texts) and `semi` (LM fine-tuned once on every
text of the data set plus its unlabelled rows and --lm-data, reused for every size and seed).
The other arms see labels only (protocol "none"). Each finished unit is written to
results.json at once (atomic), so an interrupted run continues where it stopped.
Every arm trains on all N labelled rows; the N rows are stratified, nested and fixed by seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import train as _train
from .errors import ConfigError, DataError, StoreError
from .fsutil import atomic_write

FORMAT = "edge_tl-compare/1"
RESULTS = "results.json"
ARMS = ("transfer", "scratch", "tfidf")
PROTOCOLS = ("supervised", "semi")
LABELS_ONLY = "none"  # protocol of the arms that never see unlabelled text
DEFAULT_SIZES = (500, 1000, 2500, 5000, 10000, 20000)
REFERENCES = ("none", "imdb")
TEST_SEED = 0  # the test subset is the same for every run
VALID_ROWS = 64  # fastai wants a validation set; these are training rows, nothing is picked on them
# Knobs that change speed, not results: a comparison may be resumed with other values.
RUNTIME_ONLY = {"threads": 0, "workers": 0, "checkpoint_minutes": 10.0}
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
    arms: tuple[str, ...] = ARMS
    base: str = "default"
    lm_data: tuple[str, ...] = ()
    test_rows: int = 0  # 0 = every labelled row of the test set
    references: str = "none"  # published curves drawn beside ours ("imdb")

    def __post_init__(self) -> None:
        checks = [
            (bool(self.sizes) and all(s >= 1 for s in self.sizes)
             and len(set(self.sizes)) == len(self.sizes), "--sizes", "distinct sizes >= 1"),
            (bool(self.seeds) and all(s >= 0 for s in self.seeds)
             and len(set(self.seeds)) == len(self.seeds), "seeds", "distinct seeds >= 0"),
            (bool(self.protocols) and set(self.protocols) <= set(PROTOCOLS), "--protocol",
             "supervised, semi or both"),
            (bool(self.arms) and set(self.arms) <= set(ARMS), "--arms", ", ".join(ARMS)),
            (self.test_rows >= 0, "--test-rows", ">= 0 (0 = all)"),
            (self.references in REFERENCES, "--references", " or ".join(REFERENCES)),
        ]  # fmt: skip
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
                if "transfer" in self.arms:
                    out += [Unit("transfer", p, size, seed) for p in PROTOCOLS
                            if p in self.protocols]  # fmt: skip
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}  # fmt: skip


# ---------------------------------------------------------------- results file


def load_results(out: Path) -> dict[str, Any]:
    """results.json of `out`, or an empty document."""
    path = Path(out) / RESULTS
    if not path.exists():
        return {"format": FORMAT, "setup": None, "plan": None, "runs": {}}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"cannot read {path}: {e}", "move it away to start over") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(
            doc.get("runs"), dict):  # fmt: skip
        raise StoreError(f"{path} is not an edge-tl compare results file",
                         "choose another --out folder")  # fmt: skip
    return doc


def save_results(out: Path, doc: dict[str, Any]) -> None:
    """Write results.json atomically (a killed run leaves the previous complete file)."""
    atomic_write(Path(out) / RESULTS, (json.dumps(doc, indent=1) + "\n").encode("utf-8"), 0o644)


def check_setup(old: dict[str, Any] | None, new: dict[str, Any], out: Path) -> None:
    """Refuse to mix runs made with other data, test rows, base or training config."""
    if not old:
        return
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            raise ConfigError(
                f"{Path(out) / RESULTS} holds runs made with another {key}",
                "rerun with the same settings, or pass another --out to start a new comparison",
            )


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """One compare at a time per output folder."""
    import fcntl

    Path(out).mkdir(parents=True, exist_ok=True)
    with open(Path(out) / ".lock", "a+b") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(f"another edge-tl compare is writing to {out}",
                             "wait for it to finish, or pass another --out") from None
        yield


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


def unit_seconds(u: Unit, sp: Speed, cfg: _train.TrainConfig, test_rows: int) -> float:
    """Estimated wall time of one unit."""
    if f"{u.arm}/{u.protocol}" in sp.measured:  # from finished units: seconds per training doc
        return sp.measured[f"{u.arm}/{u.protocol}"] * u.size
    if u.arm == "tfidf":
        return 1.0 + TFIDF_SECONDS_PER_DOC * u.size
    tok, tok_c = sp.tokens_per_doc, min(sp.tokens_per_doc, cfg.max_len)
    s = u.size * tok / sp.infer_tps + u.size * tok_c * sum(cfg.stages[1:]) / sp.clas_tps
    s += test_rows * tok / sp.infer_tps
    if u.arm == "transfer" and u.protocol == "supervised":
        s += u.size * tok * (cfg.lm_frozen_epochs + cfg.lm_epochs) / sp.lm_tps
    return s


def plan_seconds(plan: ComparePlan, sp: Speed, cfg: _train.TrainConfig, done: set[str],
                 lm_ready: bool) -> float:  # fmt: skip
    """Estimated wall time of the units of `plan` not in `done` (+ the shared LM if needed)."""
    todo = [u for u in plan.units() if u.key not in done]
    test_rows = plan.test_rows or sp.test_rows
    s = sum(unit_seconds(u, sp, cfg, test_rows) for u in todo)
    if not lm_ready and any(u.protocol == "semi" for u in todo):
        s += sp.lm_docs * sp.tokens_per_doc * (cfg.lm_frozen_epochs + cfg.lm_epochs) / sp.lm_tps
    return s


def fit_budget(plan: ComparePlan, seconds: Callable[[ComparePlan], float], budget_s: float,
               can_drop_test_rows: bool, min_test_rows: int = 500
               ) -> tuple[ComparePlan, list[str]]:  # fmt: skip
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


def measure_speed(shape: Any, run: _train.Run, cfg: _train.TrainConfig, seq: int,
                  steps: int = 1) -> tuple[float, float, float]:  # fmt: skip
    """Time a few LM, classifier and inference batches of `shape`; tokens/s of each."""
    import torch
    import torch.nn.functional as F

    from .fastcpu import autocast_ctx
    from .model import build_classifier, build_lm

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

    lm = build_lm(shape).to(dev)
    opt = torch.optim.Adam(lm.parameters())
    x = torch.randint(9, shape.vocab_size, (run.lm_bs, cfg.bptt + 1), generator=g).to(dev)

    def lm_step() -> None:
        lm.reset()
        with autocast_ctx(run.dtype, kind):
            out = lm(x[:, :-1])[0]  # (bs, bptt, vocab)
        F.cross_entropy(out.float().flatten(0, 1), x[:, 1:].flatten()).backward()
        opt.step()
        opt.zero_grad()

    lm_tps = run.lm_bs * cfg.bptt / timed(lm_step, steps)
    clas = build_classifier(shape, 2, seq_len=cfg.bptt, max_len=cfg.max_len,
                            lin_ftrs=list(cfg.lin_ftrs)).to(dev)  # fmt: skip
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


# ---------------------------------------------------------------- runtime and records


def runtime(cfg: _train.TrainConfig, shape: Any, profile: Any, progress: bool,
            echo: Callable[[str], None]) -> tuple[_train.Run, dict[str, Any]]:  # fmt: skip
    """Device, dtype, threads and planned batch sizes (the profile and the memory planner)."""
    import torch

    hw, prof, run = _train.make_runtime(cfg, profile, shape, progress, log=echo)
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


# ---------------------------------------------------------------- the shared (semi) LM

LM_MAGIC = b"edge_tl/compare-lm v1\n"
SEMI_LM = "semi-lm.age"


def save_lm(path: Path, lm: _train.LMResult, digest: str) -> None:
    """Encrypt a fine-tuned LM for this device (it memorises its texts) and write it atomically."""
    from .config import to_dict
    from .keys import encrypt_for_device
    from .models import pack_container, tensors_to_bytes

    tensors = tensors_to_bytes(lm.encoder_state)
    header = {"format": LM_MAGIC.decode().split()[0], "version": 1,
              "tensors_sha256": hashlib.sha256(tensors).hexdigest(), "digest": digest,
              "vocab": lm.vocab, "model_cfg": to_dict(lm.model_cfg),
              "base": lm.base, "base_sha256": lm.base_sha256, "tokens": lm.tokens,
              "seconds": lm.seconds, "metrics": lm.metrics}  # fmt: skip
    body = pack_container(LM_MAGIC, header, tensors)
    atomic_write(path, encrypt_for_device(body))


def load_lm(path: Path, digest: str) -> _train.LMResult:
    """Decrypt and check the shared LM of this comparison."""
    from .config import ModelConfig, from_dict
    from .errors import ModelError
    from .keys import decrypt_on_device
    from .models import tensors_from_bytes, unpack_container

    what = f"the shared LM {path}"
    header, body = unpack_container(LM_MAGIC, decrypt_on_device(path.read_bytes(), what), what)
    if header.get("digest") != digest:
        raise ModelError(f"{what} belongs to another comparison", "delete it to retrain it")
    return _train.LMResult(
        vocab=header["vocab"], model_cfg=from_dict(ModelConfig, header["model_cfg"], what),
        encoder_state=tensors_from_bytes(body, what), base=header["base"],
        base_sha256=header["base_sha256"], tokens=header["tokens"], seconds=header["seconds"],
        metrics=header["metrics"],
    )  # fmt: skip


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


def _semi_lm(ctx: _Ctx, doc: dict[str, Any]) -> _train.LMResult:
    """The LM fine-tuned once on all text (labels unused), loaded if an earlier run made it."""
    from .checkpoint import (
        Checkpoint,
        Position,
        checkpoint_path,
        load_checkpoint,
        remove_checkpoint,
        save_checkpoint,
    )
    from .fastcpu import tokenize

    if ctx.semi is not None:
        return ctx.semi
    path = ctx.work / SEMI_LM
    if path.exists():
        ctx.semi = load_lm(path, ctx.digest)
        return ctx.semi
    texts = ctx.lm_texts()
    name = f"compare-semi-{ctx.digest[:16]}"
    ck = load_checkpoint(name) if checkpoint_path(name).is_file() else None
    run, cfg = ctx.run, ctx.cfg

    def save(phase, stage, epoch, batch, learn, rng_start, rng_now) -> None:
        save_checkpoint(Checkpoint(
            name=name, data=ctx.plan.data, base=ctx.plan.base, lm_data=list(ctx.plan.lm_data),
            dataset_fingerprint=ctx.digest, train_config=_train.config_dict(cfg),
            position=Position(phase, stage, epoch, batch), vocab=list(learn._vocab), labels=[],
            model_state=learn.model.state_dict(),
            opt_state=learn.opt.state_dict() if learn.opt is not None else None,
            rng_epoch_start=rng_start or {}, rng_now=rng_now or {}, extra={},
        ))  # fmt: skip

    ctx.echo(f"shared LM (semi): fine-tuning on {len(texts):,} texts"
             + (f", resuming at stage {ck.position.stage + 1}" if ck else ""))  # fmt: skip
    run.save, run.resume = save, ck
    try:
        lm = _train.finetune_lm(texts, ctx.load_base(), cfg, run=run,
                                docs=tokenize(texts, cfg.workers),
                                vocab=list(ck.vocab) if ck is not None else None)  # fmt: skip
    finally:
        run.save, run.resume = None, None
    save_lm(path, lm, ctx.digest)
    remove_checkpoint(name)
    doc["semi_lm"] = {"texts": len(texts), "seconds": lm.seconds, "tokens": lm.tokens,
                      "tokens_per_s": lm.tokens_per_s, **lm.metrics, "finished": _now()}
    ctx.semi = lm
    return lm


def _test_metrics(ctx: _Ctx, m: Any) -> dict[str, Any]:
    """Accuracy etc. of trained model `m` on the (once tokenized) test rows."""
    from .evaluate import metrics_from_predictions, predict_ids
    from .fastcpu import numericalize, tokenize
    from .model import build_classifier

    if ctx.test_docs is None:
        ctx.test_docs = tokenize(ctx.test_texts, ctx.cfg.workers)
    tc = m.train_config
    model = build_classifier(m.model_cfg, len(m.labels), seq_len=tc["bptt"],
                             max_len=tc["max_len"], lin_ftrs=list(m.lin_ftrs))  # fmt: skip
    model.load_state_dict(m.state_dict)
    model.to(ctx.run.device)
    pred = predict_ids(model, numericalize(ctx.test_docs, m.vocab), ctx.run.bs, tc["bptt"],
                       ctx.run.dtype, ctx.run.device)  # fmt: skip
    c2i = {n: i for i, n in enumerate(m.labels)}
    return metrics_from_predictions([c2i[x] for x in ctx.test_labels], pred, m.labels)


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
            lm = _semi_lm(ctx, doc)
            if fresh:  # trained once for every semi unit: kept out of this unit's per-row cost
                timings["shared_lm"] = lm.seconds
        else:
            lm = _train.finetune_lm(texts, ctx.load_base(), cfg, run=ctx.run, docs=docs)
            timings["lm"] = lm.seconds
        # fastai wants a validation set; we train on all N rows, so it is a spread of them
        step = max(1, len(rows) // VALID_ROWS)
        valid = (texts[::step][:VALID_ROWS], labels[::step][:VALID_ROWS])
        t1 = time.perf_counter()
        m = _train.train_classifier(texts, labels, lm, cfg, valid=valid, label_names=ctx.names,
                                    run=ctx.run, docs=docs, name="compare",
                                    scratch=u.arm == "scratch")  # fmt: skip
        timings["classifier"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        r = _test_metrics(ctx, m)
        timings["evaluate"] = time.perf_counter() - t2
        config = _train.config_dict(cfg)
        config["arch"] = dataclasses.asdict(ctx.shape) if cfg.arch is not None else None
        keep = ("lm_valid_loss", "lm_perplexity", "lm_tokens_per_s", "clas_tokens_per_s",
                "clas_tokens", "stages", "dtype", "device")  # fmt: skip
        extra = {k: m.metrics[k] for k in keep if k in m.metrics}
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
             f"{tpd:.0f} tokens per text)")  # fmt: skip
        setup = {
            "data": plan.data, "data_fingerprint": ds.fingerprint, "test": plan.test,
            "test_fingerprint": ts.fingerprint, "test_rows": n_test, "test_seed": TEST_SEED,
            "base": plan.base, "base_sha256": bi.sha256, "model_config": to_dict(shape),
            "lm_data": {n: d.fingerprint for n, d in lm_sets.items()},
            "train_config": {**_train.config_dict(cfg), **RUNTIME_ONLY},
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

        digest = hashlib.sha256(json.dumps(setup, sort_keys=True).encode()).hexdigest()
        ctx = _Ctx(plan, cfg, run, work, echo, names, texts, labels, t_texts, t_labels, subsets,
                   shape, digest, lm_texts)  # fmt: skip
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
