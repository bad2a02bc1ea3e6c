"""Probe behind the README per-layer ORT figures: kernel time per node, fp32 WT103 shape,
batch 1, 256 tokens, 1 thread (needs /tmp/w103.onnx from cold_start_split.py).

    .venv/bin/python bench/probes/ort_node_profile.py
"""

# ruff: noqa
import onnxruntime as o, json, numpy as np, collections

s = o.SessionOptions()
s.intra_op_num_threads = 1
s.enable_profiling = True
s.profile_file_prefix = "/tmp/ortrp"
x = o.InferenceSession("/tmp/w103.onnx", s, providers=["CPUExecutionProvider"])
ids = np.random.randint(9, 5000, (1, 256)).astype(np.int64)
l = np.array([256], dtype=np.int64)
for _ in range(5):
    x.run(None, {"input_ids": ids, "lengths": l})
f = x.end_profiling()
agg = collections.Counter()
for e in json.load(open(f)):
    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
        agg[e["args"]["op_name"] + ":" + e["name"][:30]] += e["dur"] / 5 / 1e3
for k, v in agg.most_common(10):
    print(f"{v:8.1f} ms {k}")
