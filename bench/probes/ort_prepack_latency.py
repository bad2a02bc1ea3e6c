"""Probe behind the README pre-packing figure: batch-1 latency (256 random tokens, p50 of 15) of
an export with weight pre-packing on (default) or off (noprepack), at a thread count.

    .venv/bin/python bench/probes/ort_prepack_latency.py /tmp/w103.onnx noprepack 1
"""

# ruff: noqa
import sys, time, numpy as np
import onnxruntime as o

v = sys.argv[2]
s = o.SessionOptions()
s.intra_op_num_threads = int(sys.argv[3]) if len(sys.argv) > 3 else 1
if v == "noprepack":
    s.add_session_config_entry("session.disable_prepacking", "1")
x = o.InferenceSession(sys.argv[1], s, providers=["CPUExecutionProvider"])
ins = x.get_inputs()
rng = np.random.default_rng(0)
feed = {}
for i in ins:
    if "len" in i.name:
        feed[i.name] = np.array([256], dtype=np.int64)
    else:
        feed[i.name] = rng.integers(10, 60000, (1, 256)).astype(np.int64)
for _ in range(3):
    x.run(None, feed)
ts = []
for _ in range(15):
    t = time.perf_counter()
    x.run(None, feed)
    ts.append(time.perf_counter() - t)
print(
    v, [(i.name, i.shape) for i in ins], f"p50 {1e3 * np.median(ts):.0f} ms min {1e3 * min(ts):.0f}"
)
