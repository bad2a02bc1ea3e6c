"""Vault throughput: import + encrypt all 100k IMDb reviews, decrypt + load them back, KDF time.

Usage: .venv/bin/python bench/bench_vault.py [--data ../shared/data/imdb] [--repeat 3]
Writes bench/results/vault.json and prints a table. Runs in a throw-away EDGE_TL_HOME.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "test", "unsup")


def _cpu() -> float:
    """User + system CPU seconds of this process, all threads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _timed(fn):  # type: ignore[no-untyped-def]
    w0, c0 = time.perf_counter(), _cpu()
    out = fn()
    return out, time.perf_counter() - w0, _cpu() - c0


def run_once(data_dir: Path) -> dict:
    """One full import of the three splits, then one full load; fresh store each time."""
    from edge_tl.store import datasets as data
    from edge_tl.store import keys

    home = Path(tempfile.mkdtemp(prefix="edge_tl_bench_"))
    os.environ["EDGE_TL_HOME"] = str(home)
    try:
        keys.init_identity(None)
        res: dict = {"import": {}, "load": {}}
        for split in SPLITS:
            rep, wall, cpu = _timed(
                lambda s=split: data.import_source(
                    data_dir / f"{s}.csv.gz", f"imdb-{s}", progress=False
                )
            )
            res["import"][split] = {
                "rows": rep.info.rows,
                "text_bytes": rep.info.records_bytes - 8 * rep.info.rows,
                "records_bytes": rep.info.records_bytes,
                "vault_bytes": rep.info.file_bytes,
                "source_bytes": rep.source_bytes,
                "wall_s": wall,
                "cpu_s": cpu,
            }
        for split in SPLITS:
            ds, wall, cpu = _timed(lambda s=split: data.open_dataset(f"imdb-{s}"))
            res["load"][split] = {"rows": len(ds), "wall_s": wall, "cpu_s": cpu}
            del ds
        return res
    finally:
        shutil.rmtree(home, ignore_errors=True)


def kdf_times() -> dict:
    """Seconds for scrypt (age work factor 2^18) to protect and to unlock the identity."""
    from edge_tl.store import keys

    home = Path(tempfile.mkdtemp(prefix="edge_tl_bench_kdf_"))
    os.environ["EDGE_TL_HOME"] = str(home)
    try:
        _, enc_wall, enc_cpu = _timed(lambda: keys.init_identity("bench passphrase"))
        keys._cache.clear()
        _, dec_wall, dec_cpu = _timed(lambda: keys.load_identity("bench passphrase"))
        _, cached_wall, _ = _timed(lambda: keys.load_identity("bench passphrase"))
        return {
            "protect_wall_s": enc_wall,
            "protect_cpu_s": enc_cpu,
            "unlock_wall_s": dec_wall,
            "unlock_cpu_s": dec_cpu,
            "cached_unlock_wall_s": cached_wall,
        }
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    """Run the benchmark, print a table, write bench/results/vault.json."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "imdb")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--compression", choices=["zlib-blocks", "none"], default="zlib-blocks")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "vault.json")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from edge_tl.store import vault

    vault.DEFAULT_COMPRESSION = args.compression
    load_before = os.getloadavg()
    runs = [run_once(args.data) for _ in range(args.repeat)]
    kdf = kdf_times()
    load_after = os.getloadavg()

    text_mb = sum(v["text_bytes"] for v in runs[0]["import"].values()) / 1e6
    rows = sum(v["rows"] for v in runs[0]["import"].values())
    vault_mb = sum(v["vault_bytes"] for v in runs[0]["import"].values()) / 1e6

    def phase(name: str) -> dict:
        walls = [sum(v["wall_s"] for v in r[name].values()) for r in runs]
        cpus = [sum(v["cpu_s"] for v in r[name].values()) for r in runs]
        med = statistics.median(walls)
        return {
            "wall_s_median": med,
            "wall_s_min": min(walls),
            "wall_s_all": walls,
            "cpu_s_median": statistics.median(cpus),
            "mb_per_s_median": text_mb / med,
            "mb_per_s_best": text_mb / min(walls),
            "per_split_last_run": runs[-1][name],
        }

    result = {
        "what": "import+encrypt and decrypt+load of all IMDb reviews (train, test, unsup)",
        "command": f"nice .venv/bin/python bench/bench_vault.py --repeat {args.repeat} "
        f"--compression {args.compression}",
        "compression": args.compression,
        "rows": rows,
        "text_mb": text_mb,
        "vault_mb": vault_mb,
        "import": phase("import"),
        "load": phase("load"),
        "kdf": kdf,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
        },
        "target_s": 5.0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(
        f"{rows:,} reviews, {text_mb:.1f} MB of UTF-8 text -> {vault_mb:.1f} MB of vault files "
        f"(compression {args.compression})"
    )
    print(
        f"load average before/after: {load_before[0]:.1f} / {load_after[0]:.1f} "
        f"on {os.cpu_count()} CPUs; {args.repeat} runs"
    )
    head = f"{'phase':<22}{'wall s (median)':>16}{'wall s (best)':>15}{'CPU s':>8}{'MB/s':>8}"
    print(head + "  target")
    for name, label in (("import", "import + encrypt"), ("load", "decrypt + load")):
        p = result[name]
        ok = "ok" if p["wall_s_median"] <= 5.0 else "MISSED"
        print(
            f"{label:<22}{p['wall_s_median']:>16.2f}{p['wall_s_min']:>15.2f}"
            f"{p['cpu_s_median']:>8.2f}{p['mb_per_s_median']:>8.1f}  <=5 s {ok}"
        )
    print(f"{'scrypt protect (init)':<22}{kdf['protect_wall_s']:>16.2f}")
    print(f"{'scrypt unlock':<22}{kdf['unlock_wall_s']:>16.2f}  (once per process; cached after)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
