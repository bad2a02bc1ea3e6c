"""Probe behind the README session-option figures: session creation time of a one-file fp32
export under one option (default | basic | none | noprepack | noarena | both), in a fresh process.
Run each option a few times in turn; the README quotes three rounds on /tmp/w103.onnx
(made by cold_start_split.py).

    for v in default none noprepack; do .venv/bin/python bench/probes/ort_session_options.py /tmp/w103.onnx $v; done
"""

# ruff: noqa
import sys, time

t0 = time.perf_counter()
import onnxruntime as o

t1 = time.perf_counter()
v = sys.argv[2]
s = o.SessionOptions()
if v == "basic":
    s.graph_optimization_level = o.GraphOptimizationLevel.ORT_ENABLE_BASIC
if v == "none":
    s.graph_optimization_level = o.GraphOptimizationLevel.ORT_DISABLE_ALL
if v == "noprepack":
    s.add_session_config_entry("session.disable_prepacking", "1")
if v == "noarena":
    s.enable_cpu_mem_arena = False
if v == "both":
    s.graph_optimization_level = o.GraphOptimizationLevel.ORT_DISABLE_ALL
    s.add_session_config_entry("session.disable_prepacking", "1")
x = o.InferenceSession(sys.argv[1], s, providers=["CPUExecutionProvider"])
t2 = time.perf_counter()
print(f"{v:10s} import {1e3 * (t1 - t0):.0f} ms session {1e3 * (t2 - t1):.0f} ms")
