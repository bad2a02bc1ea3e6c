"""Ship a pretrained bundle (e.g. from bench/gpu_pretrain.sh) as the default base, with its card.

    .venv/bin/python bench/ship_base.py --bundle /work/bases/gutenberg-gpu.etlb \
        --stats bench/results/gpu-pretrain/stats.json --hardware "..." --command "..."

Verifies the bundle, repacks its weights (fp16, lossless) under the name `default`, writes the
card from the run's stats and pins the new file in edge_tl/assets/bases.sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from edge_tl.bases.bundle import read_bundle
from edge_tl.bases.pack import GUTENBERG, model_card, pack_result
from edge_tl.bases.pretrain import PretrainResult

ASSETS = Path(__file__).resolve().parents[1] / "edge_tl" / "assets"


def main() -> None:
    """Repack, write the card, pin the hash."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--stats", type=Path, required=True, help="the run's stats.json")
    ap.add_argument("--hardware", required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("--note", default="")
    ap.add_argument("--name", default="default")
    ap.add_argument("--assets", type=Path, default=ASSETS, help="where the shipped bases live")
    a = ap.parse_args()
    base = read_bundle(a.bundle, allow_unsigned=True)
    stats = json.loads(a.stats.read_text())
    result = PretrainResult(
        model_cfg=base.model_cfg, vocab=base.vocab, state_dict=base.state_dict, stats=stats
    )
    card = model_card(a.name, result, GUTENBERG, a.command, a.hardware)
    card += f"\n{a.note}\n" if a.note else ""
    out = pack_result(result, a.assets / f"{a.name}.etlb", a.name, corpus_desc=GUTENBERG, card=card)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    (a.assets / "bases.sha256").write_text(f"{digest}  {out.name}\n")
    (a.assets / f"{a.name}.card.md").write_text(card)
    print(card)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB), sha256 {digest}")


if __name__ == "__main__":
    main()
