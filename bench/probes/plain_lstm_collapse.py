"""Plain torch.nn.LSTM LM (no fastai) on the same tokens: the collapse is not fastai-specific.

.venv/bin/python bench/probes/plain_lstm_collapse.py 1e-3 60
"""

# ruff: noqa
import json, sys, os
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F

sys.path.insert(0, "/work/main")
from edge_tl.bases.pretrain import _batches

torch.set_num_threads(2)
z = np.load("/work/pretrain-small/tokens.npz")
vocab = json.load(open("/work/pretrain-small/vocab.json"))
train = z["train"]
V = len(vocab)
torch.manual_seed(0)


class LM(nn.Module):
    def __init__(s):
        super().__init__()
        s.emb = nn.Embedding(V, 200)
        s.emb.weight.data.uniform_(-0.1, 0.1)
        s.rnns = nn.ModuleList(
            [
                nn.LSTM(200, 512, batch_first=True),
                nn.LSTM(512, 512, batch_first=True),
                nn.LSTM(512, 200, batch_first=True),
            ]
        )
        s.dec = nn.Linear(200, V)
        s.dec.weight = s.emb.weight
        s.h = [None] * 3

    def forward(s, x):
        o = s.emb(x)
        for k, r in enumerate(s.rnns):
            o, h = r(o, s.h[k])
            s.h[k] = tuple(t.detach() for t in h)
        return s.dec(o)


m = LM()
lr = float(sys.argv[1])
opt = torch.optim.AdamW(m.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
run = []
for i, x, y in _batches(train, 32, 70):
    out = m(x)
    loss = F.cross_entropy(out.view(-1, V), y.reshape(-1))
    opt.zero_grad()
    loss.backward()
    opt.step()
    run.append(loss.item())
    if (i + 1) % 10 == 0:
        print(
            i + 1,
            round(sum(run[-10:]) / 10, 3),
            [f"{r.weight_hh_l0.grad.norm().item():.1e}" for r in m.rnns],
            "c0",
            f"{m.h[0][1].abs().mean().item():.2f}",
            flush=True,
        )
    if i + 1 >= int(sys.argv[2]):
        break
