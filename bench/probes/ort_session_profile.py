"""Probe behind the README session-build split: onnxruntime profiler of session creation
(model_loading_uri, session_initialization) for a one-file or external-data export (make the
latter from /tmp/w103.onnx with edge_tl.deploy.export.split_external).

    .venv/bin/python bench/probes/ort_session_profile.py /tmp/w103.onnx
"""

# ruff: noqa
import onnxruntime as o, json, time, sys

s = o.SessionOptions()
s.enable_profiling = True
s.profile_file_prefix = "/tmp/ortp"
t = time.perf_counter()
x = o.InferenceSession(sys.argv[1], s, providers=["CPUExecutionProvider"])
print("wall", time.perf_counter() - t)
f = x.end_profiling()
for e in json.load(open(f)):
    if e.get("cat") == "Session":
        print(e["name"], e["dur"] / 1e3, "ms")
