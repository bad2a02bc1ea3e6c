"""Tables and a plot of a comparison: mean ± std over seeds, the transfer − scratch gap, and the
published curves beside ours. Reads only the results document; writes table.md, table.csv and
curve.png (matplotlib's Agg canvas, no display, no pyplot state)."""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from edge_tl.compare.ensemble import ARM as ENSEMBLE
from edge_tl.store.files import atomic_write

# The published small study (fastai AWD-LSTM on IMDb subsets) and the TF-IDF + LR baseline
# measured with the targets on a 5,000-review test subset, 3 seeds.
STUDY_SIZES = (500, 1000, 2500, 5000, 10000)
STUDY_SCRATCH = (0.541, 0.633, 0.704, 0.767, 0.875)
STUDY_ULMFIT = (0.767, 0.825, 0.853, 0.889, 0.898)
TFIDF_SIZES = (500, 1000, 2500, 5000, 10000, 20000)
TFIDF_REFERENCE = (0.811, 0.841, 0.866, 0.879, 0.894, 0.901)
IMDB_REFERENCES: dict[str, dict[int, float]] = {
    "published study: scratch": dict(zip(STUDY_SIZES, STUDY_SCRATCH, strict=True)),
    "published study: ULMFiT": dict(zip(STUDY_SIZES, STUDY_ULMFIT, strict=True)),
    "TF-IDF + LR (reference)": dict(zip(TFIDF_SIZES, TFIDF_REFERENCE, strict=True)),
}
ORDER = (
    "transfer/semi",
    "transfer/supervised",
    "scratch/none",
    "tfidf/none",
    "transfer+tfidf/semi",
    "transfer+tfidf/supervised",
    "train/semi",
    "train-network/semi",
    "train-head/semi",
    "train/supervised",
    "train-network/supervised",
    "train-head/supervised",
)
# A `train` unit's record holds its network's and its head's test accuracy beside the mix's.
TRAIN_PARTS = {"train-network": "network_accuracy", "train-head": "head_accuracy"}
COLORS = {
    "transfer/semi": "#6a3d9a",
    "transfer/supervised": "#1f78b4",
    "scratch/none": "#e66101",
    "tfidf/none": "#33a02c",
    "transfer+tfidf/semi": "#b15928",
    "transfer+tfidf/supervised": "#a6cee3",
    "train/semi": "#e31a1c",
    "train-network/semi": "#cab2d6",
    "train-head/semi": "#b2df8a",
    "train/supervised": "#fb9a99",
    "train-network/supervised": "#cab2d6",
    "train-head/supervised": "#b2df8a",
}
REF_COLORS = {
    "published study: scratch": COLORS["scratch/none"],
    "published study: ULMFiT": COLORS["transfer/supervised"],
    "TF-IDF + LR (reference)": COLORS["tfidf/none"],
}


@dataclass(frozen=True)
class Cell:
    """One series at one size: accuracies over seeds, their mean and sample std."""

    series: str
    size: int
    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        """Mean over seeds."""
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        """Sample standard deviation over seeds (0 with one seed)."""
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def text(self) -> str:
        """`0.812 ± 0.004 (3)`."""
        return f"{self.mean:.3f} ± {self.std:.3f} ({len(self.values)})"


def label(series: str) -> str:
    """Human name of an arm/protocol series."""
    arm, protocol = series.split("/")
    if arm == ENSEMBLE:
        return f"transfer ({protocol}) + TF-IDF, mean of probabilities"
    names = {
        "tfidf": "TF-IDF + LR",
        "scratch": "scratch",
        "train": f"what `train` ships ({protocol})",
        "train-network": f"its network ({protocol})",
        "train-head": "its TF-IDF head",
    }
    return names.get(arm, f"{arm} ({protocol})")


def _sorted_series(keys: Sequence[str]) -> list[str]:
    return sorted(keys, key=lambda k: (ORDER.index(k) if k in ORDER else len(ORDER), k))


def aggregate(runs: dict[str, Any]) -> dict[str, dict[int, Cell]]:
    """series -> size -> Cell over the seeds that finished (a transfer unit's transfer + TF-IDF
    mean, where it has one, as series `transfer+tfidf/<protocol>`)."""
    acc: dict[str, dict[int, dict[int, float]]] = {}
    for r in runs.values():
        s = acc.setdefault(f"{r['arm']}/{r['protocol']}", {}).setdefault(r["size"], {})
        s[r["seed"]] = r["accuracy"]
        for part, key in TRAIN_PARTS.items() if r["arm"] == "train" else ():
            if key in (r.get("metrics") or {}):
                acc.setdefault(f"{part}/{r['protocol']}", {}).setdefault(r["size"], {})[
                    r["seed"]
                ] = r["metrics"][key]
        ens = (r.get("metrics") or {}).get("ensemble")
        if ens:
            acc.setdefault(f"{ENSEMBLE}/{r['protocol']}", {}).setdefault(r["size"], {})[
                r["seed"]
            ] = ens["accuracy"]
    return {
        k: {n: Cell(k, n, tuple(v[s] for s in sorted(v))) for n, v in sorted(by.items())}
        for k, by in acc.items()
    }


def gaps(runs: dict[str, Any]) -> dict[str, dict[int, Cell]]:
    """`transfer/<protocol> − scratch` -> size -> Cell of paired differences (same seed)."""
    scratch = {
        (r["size"], r["seed"]): r["accuracy"] for r in runs.values() if r["arm"] == "scratch"
    }
    out: dict[str, dict[int, dict[int, float]]] = {}
    for r in runs.values():
        pair = scratch.get((r["size"], r["seed"]))
        if r["arm"] == "transfer" and pair is not None:
            out.setdefault(f"transfer/{r['protocol']}", {}).setdefault(r["size"], {})[r["seed"]] = (
                r["accuracy"] - pair
            )
    return {
        f"{k} − scratch": {
            n: Cell(k, n, tuple(v[s] for s in sorted(v))) for n, v in sorted(by.items())
        }
        for k, by in out.items()
    }


def _references(doc: dict[str, Any]) -> dict[str, dict[int, float]]:
    plan = doc.get("plan") or {}
    return IMDB_REFERENCES if plan.get("references") == "imdb" else {}


def _other_dtypes(doc: dict[str, Any], main: str | None) -> str:
    """' (scratch in fp32)' where some arm trained in another dtype than the runtime's."""
    other: dict[str, set[str]] = {}
    for r in doc["runs"].values():
        d = (r.get("metrics") or {}).get("dtype")
        if d and d != main:
            other.setdefault(d, set()).add(r.get("arm", "?"))
    return "".join(f" ({', '.join(sorted(a))} in {d})" for d, a in sorted(other.items()))


def _devices(doc: dict[str, Any]) -> str:
    """'' when every neural unit ran on one device, else how many ran on each (GPU by name)."""
    count: dict[str, int] = {}
    for r in doc["runs"].values():
        if r.get("arm") != "tfidf":
            d = r.get("device") or {}
            name = d.get("cuda") or d.get("device") or "?"
            count[name] = count.get(name, 0) + 1
    if len(count) < 2:
        return ""
    return "; neural units: " + ", ".join(f"{n} on {k}" for k, n in sorted(count.items()))


def markdown_table(doc: dict[str, Any]) -> str:
    """Markdown: accuracy mean ± std (seeds) per size and series, gaps, then references."""
    cells, gap, refs = aggregate(doc["runs"]), gaps(doc["runs"]), _references(doc)
    series = _sorted_series(list(cells))
    sizes = sorted({n for by in cells.values() for n in by})
    setup = doc.get("setup") or {}
    dev = doc.get("device") or {}
    head = [
        f"Accuracy on {setup.get('test_rows', '?')} rows of `{setup.get('test', '?')}` "
        f"(mean ± sample std over seeds, seed count in brackets); training subsets of "
        f"`{setup.get('data', '?')}`, base `{setup.get('base', '?')}`; "
        f"{dev.get('device', '?')} {dev.get('dtype', '')}{_other_dtypes(doc, dev.get('dtype'))}"
        f"{_devices(doc)}.",
        "",
    ]
    cols = ["size"] + [label(s) for s in series] + list(gap) + list(refs)
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join(["---:"] * len(cols)) + " |"]
    for n in sizes:
        row = [f"{n:,}"]
        row += [cells[s][n].text() if n in cells[s] else "" for s in series]
        row += [f"{g[n].mean:+.3f} ± {g[n].std:.3f}" if n in g else "" for g in gap.values()]
        row += [f"{r[n]:.3f}" if n in r else "" for r in refs.values()]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(head + lines) + "\n"


def csv_table(doc: dict[str, Any]) -> str:
    """CSV, one row per series and size (gaps as series `transfer/<protocol> − scratch`)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["series", "size", "seeds", "mean", "std", "min", "max"])
    cells = aggregate(doc["runs"])
    for name, by in [(s, cells[s]) for s in _sorted_series(list(cells))] + list(
        gaps(doc["runs"]).items()
    ):
        for n, c in by.items():
            w.writerow(
                [
                    name,
                    n,
                    len(c.values),
                    f"{c.mean:.4f}",
                    f"{c.std:.4f}",
                    f"{min(c.values):.4f}",
                    f"{max(c.values):.4f}",
                ]
            )
    return buf.getvalue()


def plot_png(doc: dict[str, Any]) -> bytes:
    """PNG of accuracy against training size (log x), error bars = std over seeds."""

    cells, refs = aggregate(doc["runs"]), _references(doc)
    fig = Figure(figsize=(7, 4.5), dpi=110)
    ax = fig.subplots()
    handles = []
    for s in _sorted_series(list(cells)):
        by = cells[s]
        handles.append(
            ax.errorbar(
                list(by),
                [c.mean for c in by.values()],
                yerr=[c.std for c in by.values()],
                marker="o",
                capsize=3,
                label=label(s),
                color=COLORS.get(s),
            )
        )
    for name, ref in refs.items():  # dashed, in the colour of the arm it corresponds to
        color = REF_COLORS.get(name, "grey")
        handles += ax.plot(
            list(ref), list(ref.values()), "--", color=color, marker="x", alpha=0.6, label=name
        )
    ax.set_xscale("log")
    sizes = sorted({n for by in cells.values() for n in by} | {n for r in refs.values() for n in r})
    if sizes:
        ax.set_xticks(sizes, [f"{n:,}" for n in sizes], rotation=30)
        ax.minorticks_off()
    setup = doc.get("setup") or {}
    ax.set_xlabel(f"labelled training texts ({setup.get('data', '')})")
    ax.set_ylabel(f"test accuracy ({setup.get('test_rows', '?')} rows)")
    ax.set_title("transfer vs scratch learning curve")
    ax.grid(True, alpha=0.3)
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_report(doc: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write table.md, table.csv and curve.png into `out` (atomically); return their paths."""
    out = Path(out)
    paths = {
        "table.md": out / "table.md",
        "table.csv": out / "table.csv",
        "curve.png": out / "curve.png",
    }
    atomic_write(paths["table.md"], markdown_table(doc).encode("utf-8"), 0o644)
    atomic_write(paths["table.csv"], csv_table(doc).encode("utf-8"), 0o644)
    atomic_write(paths["curve.png"], plot_png(doc), 0o644)
    return paths


__all__ = [
    "Cell",
    "IMDB_REFERENCES",
    "aggregate",
    "gaps",
    "markdown_table",
    "csv_table",
    "plot_png",
    "write_report",
]
