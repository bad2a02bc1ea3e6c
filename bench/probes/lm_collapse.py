"""Probe behind the README account of the unigram plateau (AWD-LSTM via edge_tl, fastai
layout): per-layer recurrent gradients and cell-state size every 10 steps on the cached
Gutenberg tokens of a pretraining workdir. Env: RESET, WARM=steps, SGD=1, CLIP, NOMKL=1,
BIAS=1 (log-unigram decoder bias), AR=1 (AR/TAR).

    .venv/bin/python bench/probes/lm_collapse.py LR DROP_MULT STEPS   # e.g. 1e-3 0.1 60
"""

# ruff: noqa
import json, sys, time
import numpy as np, torch, torch.nn.functional as F

sys.path.insert(0, "/work/main")
from dataclasses import replace
from edge_tl.bases.pretrain import SIZES, _batches
from edge_tl.awd_lstm import build_lm

torch.set_num_threads(2)
import os

if os.environ.get("NOMKL"):
    torch.backends.mkldnn.enabled = False
z = np.load("/work/pretrain-small/tokens.npz")
vocab = json.load(open("/work/pretrain-small/vocab.json"))
train = z["train"]
lr, dm, steps = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
tie = sys.argv[4] == "tie" if len(sys.argv) > 4 else True
torch.manual_seed(0)
cfg = replace(SIZES["small"], vocab_size=len(vocab), tie_weights=tie)
m = build_lm(cfg, drop_mult=dm)
opt = torch.optim.AdamW(m.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
if os.environ.get("BIAS"):
    cnt = np.bincount(train, minlength=len(vocab)).astype("float64") + 1
    m[1].decoder.bias.data = torch.tensor(np.log(cnt / cnt.sum()), dtype=torch.float32)
AR = float(os.environ.get("AR", "0"))
m.train()
m.reset()
run = []
import os

RESET = os.environ.get("RESET")
WARM = int(os.environ.get("WARM", "0"))
SGD = os.environ.get("SGD")
if SGD:
    opt = torch.optim.SGD(m.parameters(), lr=lr)
for i, x, y in _batches(train, 32, 70):
    if RESET:
        m.reset()
    if WARM:
        for g in opt.param_groups:
            g["lr"] = lr * min(1, (i + 1) / WARM)
    out, raw, dpo = m(x)
    loss = F.cross_entropy(out.view(-1, len(vocab)), y.reshape(-1))
    lossr = loss
    if AR:
        lossr = (
            loss
            + 2 * dpo.float().pow(2).mean()
            + 1 * (raw[:, 1:] - raw[:, :-1]).float().pow(2).mean()
        )
    opt.zero_grad()
    lossr.backward()
    torch.nn.utils.clip_grad_norm_(m.parameters(), float(os.environ.get("CLIP", "1e9")))
    opt.step()
    run.append(loss.item())
    if (i + 1) % 10 == 0:
        g = [f"{m[0].rnns[k].weight_hh_l0_raw.grad.norm().item():.1e}" for k in range(3)]
        hs = (
            [f"{h.abs().mean().item():.2f}" for h in m[0].hidden[0]]
            if hasattr(m[0], "hidden")
            else []
        )
        cs = (
            [f"{h.abs().max().item():.1f}" for h in m[0].hidden[1]]
            if hasattr(m[0], "hidden")
            else []
        )
        print(
            i + 1,
            round(sum(run[-10:]) / 10, 3),
            "grads hh",
            g,
            "|h|",
            hs,
            "max|c|",
            cs,
            "out std",
            f"{raw.std().item():.3f}",
            flush=True,
        )
    if i + 1 >= steps:
        break
