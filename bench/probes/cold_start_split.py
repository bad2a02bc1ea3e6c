"""Probe behind the README cold-start split: CPU time of importing onnxruntime, reading the
fp32 file and building the session (default, no pre-packing, optimisation levels).

    .venv/bin/python bench/probes/cold_start_split.py   # writes /tmp/w103.onnx once
"""

# ruff: noqa
import resource, subprocess, sys, statistics, time
from pathlib import Path

sys.path.insert(0, "/work/main/bench")
sys.path.insert(0, "/work/main")
p = Path("/tmp/w103.onnx")
if not p.exists():
    from bench_export import random_wt103_model
    from edge_tl.deploy.export import to_onnx_bytes

    p.write_bytes(to_onnx_bytes(random_wt103_model(), vocab="full"))
PY = "/work/main/.venv/bin/python"
snips = {
    "python": "pass",
    "imports": "import numpy, onnxruntime, edge_tl.deploy.predict, edge_tl.cli",
    "sess_default": "import onnxruntime as o; o.InferenceSession('/tmp/w103.onnx', providers=['CPUExecutionProvider'])",
    "sess_basic": "import onnxruntime as o; s=o.SessionOptions(); s.graph_optimization_level=o.GraphOptimizationLevel.ORT_ENABLE_BASIC; o.InferenceSession('/tmp/w103.onnx', s, providers=['CPUExecutionProvider'])",
    "sess_none": "import onnxruntime as o; s=o.SessionOptions(); s.graph_optimization_level=o.GraphOptimizationLevel.ORT_DISABLE_ALL; o.InferenceSession('/tmp/w103.onnx', s, providers=['CPUExecutionProvider'])",
    "import_ort": "import onnxruntime",
    "no_prepack": "import onnxruntime as o; s=o.SessionOptions(); s.add_session_config_entry('session.disable_prepacking','1'); o.InferenceSession('/tmp/w103.onnx', s, providers=['CPUExecutionProvider'])",
    "read_bytes": "import onnxruntime as o; b=open('/tmp/w103.onnx','rb').read()",
    "classifier": "from edge_tl.deploy.predict import Classifier; c=Classifier('/tmp/w103.onnx'); c.predict_proba(['A great film, I loved it.'])",
}
for k, code in snips.items():
    cpu, wall = [], []
    for _ in range(3):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([PY, "-c", code], check=True)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall.append(time.perf_counter() - t0)
        cpu.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
    print(
        f"{k:14s} cpu {statistics.median(cpu):.3f}  wall {statistics.median(wall):.3f}", flush=True
    )
