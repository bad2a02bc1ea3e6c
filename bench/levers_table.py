"""The accuracy levers table of a comparison's `train` units (bench/results/compare-ships).

Every `train` unit scored, on the same network and the same test rows, what `train` ships and
the other choices of `edge_tl/compare/shipped.py`. This prints, per training size, the mean over
seeds (and the seed count) of each, on the full test reviews and on the same reviews cut to two
sentences, and writes the table as JSON beside the results. Units measured before `train`
stacked its mix recorded the share's mix as their `accuracy` and the stacked mix as a lever;
"what `train` ships" applies train's rule to them (stacked from 100 held-out rows):

    .venv/bin/python bench/levers_table.py bench/results/compare-ships
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROWS: list[tuple[str, str]] = [
    ("network alone", "network_accuracy"),
    ("head alone", "head_accuracy"),
    ("**what `train` ships** (stacked from 100 held-out rows, else the share)", "shipped"),
    ("the share's mix (by log loss from 100 held-out rows, else 0.5)", "share_mix"),
    ("share fixed at 0.5", "levers.fixed_0.5"),
    ("share by log loss on any number of held-out rows", "levers.weight_any_rows.accuracy"),
    ("stacked: logistic regression on both log-odds", "levers.stacked"),
    ("NB-LR head alone", "levers.nb_head.head_accuracy"),
    ("NB-LR head, mixed by train's rule", "levers.nb_head.accuracy"),
    ("word 1-3-gram head alone", "levers.trigram_head.head_accuracy"),
    ("word 1-3-gram head, mixed by train's rule", "levers.trigram_head.accuracy"),
    ("best share on the test rows (hindsight, not a choice)", "best_test_share"),
    ("two sentences: network alone", "short.network_accuracy"),
    ("two sentences: head alone", "short.head_accuracy"),
    ("two sentences: what `train` ships", "short.shipped"),
    ("two sentences: the share's mix", "short.share_mix"),
    ("two sentences: share fixed at 0.5", "short.fixed_0.5"),
    ("two sentences: share by log loss on any rows", "short.weight_any_rows"),
    ("two sentences: stacked", "short.stacked"),
    # units with a backward base (forward + backward): the forward network alone, same unit
    ("forward + backward: the forward network alone", "forward_only.full.network_accuracy"),
    ("forward + backward: the forward network with its own mix", "forward_only.full.accuracy"),
    ("two sentences: the forward network alone", "forward_only.short.network_accuracy"),
    ("two sentences: the forward network with its own mix", "forward_only.short.accuracy"),
]


def _mixes(r: dict[str, Any], short: bool) -> tuple[float, float]:
    """(what `train` ships, the share's mix) of a unit, on the full or two-sentence texts."""
    m = r["metrics"]
    part = m["short"] if short else m["levers"]
    recorded = m["short"]["accuracy"] if short else r["accuracy"]
    if "tfidf_mix" in m:  # measured since the stacked mix ships: both recorded
        return recorded, part["share"]
    stacked = part["stacked"]
    # train stacks from tfidf_weight_min_rows held-out rows (the unit's own setting)
    if m["valid_rows"] >= r["config"]["tfidf_weight_min_rows"] and stacked is not None:
        return stacked, recorded
    return recorded, recorded


def _get(r: dict[str, Any], path: str) -> float | None:
    """A unit's figure by dotted path (`accuracy` is the record's own)."""
    if path in ("shipped", "share_mix", "short.shipped", "short.share_mix"):
        return _mixes(r, path.startswith("short."))[path.endswith("share_mix")]
    m = r["metrics"]
    if path == "best_test_share":
        return max(m["test_sweep"].values())
    cur: Any = m
    for part in path.replace("0.5", "0\0").split("."):
        part = part.replace("0\0", "0.5")  # the key `fixed_0.5` holds a dot
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def table(doc: dict[str, Any]) -> dict[str, dict[int, list[float]]]:
    """row name -> size -> the seeds' values."""
    out: dict[str, dict[int, list[float]]] = {name: {} for name, _ in ROWS}
    for r in sorted(doc["runs"].values(), key=lambda r: (r["size"], r["seed"])):
        if r["arm"] != "train":
            continue
        for name, path in ROWS:
            v = _get(r, path)
            if v is not None:
                out[name].setdefault(r["size"], []).append(v)
    return out


def markdown(t: dict[str, dict[int, list[float]]]) -> str:
    """One row per lever, one column per size: mean [seeds]."""
    sizes = sorted({n for by in t.values() for n in by})
    lines = ["| lever | " + " | ".join(f"{n:,}" for n in sizes) + " |"]
    lines.append("| --- |" + " --- |" * len(sizes))
    for name, by in t.items():
        cells = [
            f"{statistics.fmean(by[n]):.3f} [{len(by[n])}]" if by.get(n) else "" for n in sizes
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    """Print the table of the folder given, write levers.json and levers.md beside it."""
    folder = Path(sys.argv[1])
    t = table(json.loads((folder / "results.json").read_text()))
    md = markdown(t)
    print(md)
    (folder / "levers.md").write_text(md + "\n")
    data = {name: {str(n): v for n, v in by.items()} for name, by in t.items()}
    (folder / "levers.json").write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
