"""Probe behind the README LM-step profile: torch profiler table of one bf16 LM step.

.venv/bin/python bench/probes/lm_step_profile.py bf16 prof
"""

# ruff: noqa
import time, torch, sys
import torch.nn.functional as F
from fastai.text.models.awdlstm import awd_lstm_lm_split

sys.path.insert(0, "/work/main")
from edge_tl.config import ModelConfig
from edge_tl.awd_lstm import build_lm
from edge_tl.config import LM_DROPOUTS

torch.set_num_threads(2)
V = 6872
cfg = ModelConfig(vocab_size=V, emb_sz=200, n_hid=512, n_layers=3)
m = build_lm(cfg, LM_DROPOUTS, 0.3)
m.train()
opt = torch.optim.Adam(m.parameters(), lr=1e-3)
x = torch.randint(9, V, (64, 73))
mode = sys.argv[1] if len(sys.argv) > 1 else "bf16"


def step():
    m.reset()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
        out = m(x[:, :-1])[0]
    loss = F.cross_entropy(out.float().flatten(0, 1), x[:, 1:].flatten())
    loss.backward()
    opt.step()
    opt.zero_grad()


for _ in range(3):
    step()
t = time.perf_counter()
n = 8
for _ in range(n):
    step()
print(mode, "tok/s", 64 * 72 * n / (time.perf_counter() - t))
if len(sys.argv) > 2:
    from torch.profiler import profile

    with profile() as p:
        for _ in range(4):
            step()
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
