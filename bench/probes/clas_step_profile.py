"""Probe: tokens/s and torch-profiler table of classifier training steps, all layers trained.

    .venv/bin/python bench/probes/clas_step_profile.py [bf16|fp32] [--bs 64] [--len 288]
        [--threads 2] [--prof]

The shipped base's shape (emb 200, hidden 512, 3 layers, vocab 6,872 as after fine-tuning on
1,000 IMDb reviews), fastai's classifier (SentenceEncoder in bptt-72 chunks, weight dropout),
Adam, bf16 autocast as edge_tl trains it."""

# ruff: noqa
import argparse
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, "/work/main")
from edge_tl.awd_lstm import build_classifier
from edge_tl.config import ModelConfig

ap = argparse.ArgumentParser()
ap.add_argument("mode", nargs="?", default="bf16")
ap.add_argument("--bs", type=int, default=64)
ap.add_argument("--len", type=int, default=288)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--steps", type=int, default=6)
ap.add_argument("--prof", action="store_true")
args = ap.parse_args()
torch.set_num_threads(args.threads)
V = 6872
cfg = ModelConfig(vocab_size=V, emb_sz=200, n_hid=512, n_layers=3)
m = build_classifier(cfg, 2, seq_len=72, max_len=1440)
m.train()
opt = torch.optim.Adam(m.parameters(), lr=1e-3)
x = torch.randint(9, V, (args.bs, args.len))
y = torch.randint(0, 2, (args.bs,))


def step():
    m[0].reset()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.mode == "bf16"):
        out = m(x)[0]
    loss = F.cross_entropy(out.float(), y)
    loss.backward()
    opt.step()
    opt.zero_grad()


for _ in range(2):
    step()
t = time.perf_counter()
for _ in range(args.steps):
    step()
dt = time.perf_counter() - t
print(
    f"{args.mode} bs {args.bs} len {args.len} threads {args.threads}: "
    f"{args.bs * args.len * args.steps / dt:,.0f} tok/s"
)
if args.prof:
    from torch.profiler import profile

    with profile() as p:
        for _ in range(3):
            step()
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
