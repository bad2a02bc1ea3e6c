"""Probe behind the README frozen-stage figures: bf16 LM step tokens/s, unfrozen vs frozen vs
frozen with the LSTM input detached, for vocab V (6872: the bench subset; 15000 / 40000: semi).

    .venv/bin/python bench/probes/lm_frozen_cut.py 6872
"""

# ruff: noqa
import time, torch, sys
import torch.nn.functional as F

sys.path.insert(0, "/work/main")
from edge_tl.config import ModelConfig
from edge_tl.awd_lstm import build_lm
from edge_tl.config import LM_DROPOUTS

torch.set_num_threads(2)
V = int(sys.argv[1])
cfg = ModelConfig(vocab_size=V, emb_sz=200, n_hid=512, n_layers=3)
x = torch.randint(9, V, (64, 73))


def bench(frozen=False, detach=False, n=8):
    torch.manual_seed(0)
    m = build_lm(cfg, LM_DROPOUTS, 0.3)
    m.train()
    if frozen:
        for p in m[0].rnns.parameters():
            p.requires_grad_(False)
    if detach:
        m[0].encoder_dp.register_forward_hook(lambda mod, i, o: o.detach())
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-3)

    def step():
        m.reset()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(x[:, :-1])[0]
        loss = F.cross_entropy(out.float().flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()

    for _ in range(2):
        step()
    t = time.perf_counter()
    for _ in range(n):
        step()
    return 64 * 72 * n / (time.perf_counter() - t)


print(V, "unfrozen", round(bench()))
print("frozen", round(bench(frozen=True)))

print("frozen+detach", round(bench(frozen=True, detach=True)))
