"""Peak RSS and wall time of pack / import / verify / load at full WT103 size, one subprocess each.

    nice .venv/bin/python bench/bench_bundle.py [--out bench/results/bundle.json]

Builds a synthetic fastai WT103 download (random weights, the real keys and shapes, 60k-token
itos pickle) in a temp folder, then runs each step in a fresh interpreter and reads its peak RSS
from wait4(). `op_s` is the step alone (timed inside the child); `wall_s` includes starting Python
and importing the libraries.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STEPS = {
    "baseline: python + edge_tl.bases.store (no torch)": ("import edge_tl.bases.store", "pass"),
    "baseline: python + torch": ("import torch", "pass"),
    "pack --from-fastai (fp16)": (
        "from edge_tl.bases.wt103 import pack_from_fastai",
        "pack_from_fastai(SRC, name='wt103', out=BUNDLE)",
    ),
    "verify (streaming, no torch)": (
        "from edge_tl.bases.bundle import verify_bundle",
        "verify_bundle(BUNDLE, allow_unsigned=True)",
    ),
    "import (copy + streaming verify, no torch)": (
        "from edge_tl.bases.store import import_base",
        "import_base(BUNDLE, allow_unsigned=True)",
    ),
    "load_base (verify + fp32 tensors)": (
        "import torch, safetensors.torch\nfrom edge_tl.bases.store import load_base",
        "b = load_base('wt103')",
    ),
}


def child_code(imports: str, body: str, src: Path, bundle: Path) -> str:
    return (
        "import time, json, sys\nfrom pathlib import Path\n"
        f"{imports}\n"
        f"SRC, BUNDLE = Path({str(src)!r}), Path({str(bundle)!r})\n"
        "t0 = time.perf_counter()\n"
        f"{body}\n"
        "print(json.dumps({'op_s': time.perf_counter() - t0, 'torch': 'torch' in sys.modules}))\n"
    )


def run_step(code: str, env: dict) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out = proc.stdout.read().decode() if proc.stdout else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"step failed ({proc.returncode}): {code}")
    res = json.loads(out.strip().splitlines()[-1])
    return {
        "wall_s": round(wall, 2),
        "op_s": round(res["op_s"], 2),
        "torch_loaded": res["torch"],
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }  # Linux: ru_maxrss in KiB


def build_source(folder: Path) -> None:
    """Write the synthetic download in a child, so this process stays small: a forked child's
    ru_maxrss starts from its parent's RSS."""
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
        "from pathlib import Path\n"
        "from test_wt103 import WT103, fastai_dir  # the layout the tests check\n"
        f"fastai_dir(Path({str(folder)!r}), WT103)\n"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bundle.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        src, bundle = tmp_path / "wt103-fwd", tmp_path / "wt103.etlb"
        build_source(src)
        env = {**os.environ, "EDGE_TL_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
        rows = {}
        for name, (imports, body) in STEPS.items():
            rows[name] = run_step(child_code(imports, body, src, bundle), env)
            print(f"{name:<36} {rows[name]}", flush=True)
        sizes = {
            "fastai lstm_fwd.pth": (src / "lstm_fwd.pth").stat().st_size,
            "itos_wt103.pkl": (src / "itos_wt103.pkl").stat().st_size,
            "bundle (fp16)": bundle.stat().st_size,
        }
    result = {
        "command": "nice .venv/bin/python bench/bench_bundle.py",
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "model": "AWD-LSTM vocab 60000, emb 400, hidden 1152, 3 layers (synthetic WT103)",
        "steps": rows,
        "sizes_bytes": sizes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print("| step | wall s (incl. startup) | op s | peak RSS MB |")
    print("| --- | ---: | ---: | ---: |")
    for name, r in rows.items():
        print(f"| {name} | {r['wall_s']} | {r['op_s']} | {r['peak_rss_mb']} |")
    print()
    for k, v in sizes.items():
        print(f"{k}: {v / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
