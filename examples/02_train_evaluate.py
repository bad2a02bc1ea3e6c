"""Python API, step 2: train a classifier from the vault, then evaluate it on held-out reviews.

Default: ULMFiT from the shipped `default` base on the 1,000-review sample (LM fine-tuning, then
the flat10 classifier recipe; a few minutes on a 2-core CPU), evaluated on the 500-review test
sample.
--tiny: a tiny model from scratch on stratified 200/100-row subsets, done in seconds (a smoke
run; expect accuracy near chance). Run examples/01_vault.py first.

    .venv/bin/python examples/02_train_evaluate.py [--home DIR] [--tiny] [--model NAME]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from edge_tl.config import ModelConfig
from edge_tl.errors import EdgeTLError
from edge_tl.metrics import format_report
from edge_tl.store.datasets import (
    list_datasets,
    open_dataset,
    save_dataset,
    stratified_nested_subsets,
)
from edge_tl.store.models import list_models, remove_model
from edge_tl.train.config import TrainConfig
from edge_tl.train.evaluate import evaluate_model
from edge_tl.train.runner import train_from_vault

# --tiny: no base (scratch = random init of this shape; vocab_size becomes the data's vocab size).
TINY_ARCH = ModelConfig(vocab_size=8, emb_sz=16, n_hid=32, n_layers=2)
TINY = TrainConfig(
    scratch=True, arch=TINY_ARCH, stages=(1, 1), bs=16, bptt=16, max_len=64, min_freq=2
)


def subset(name: str, rows: int) -> str:
    """A stratified `rows`-row copy of vault dataset `name` (created once), for --tiny."""
    sub = f"{name}-{rows}"
    if sub not in {d.name for d in list_datasets()}:
        ds = open_dataset(name)
        keep = stratified_nested_subsets(ds.labels, [rows], seed=0)[rows]
        save_dataset(sub, [ds.texts[i] for i in keep], [ds.labels[i] for i in keep], source=name)
    return sub


def main() -> None:
    """Train, evaluate, print the report; EdgeTLError -> `Error: ...`, exit 1."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, default=Path(".examples-home"), help="EDGE_TL_HOME")
    ap.add_argument("--tiny", action="store_true", help="tiny scratch model, small subsets")
    ap.add_argument("--model", default="sentiment", help="name of the stored model")
    args = ap.parse_args()
    os.environ["EDGE_TL_HOME"] = str(args.home.resolve())  # read by edge_tl at every call
    try:
        data, test = "imdb-sample", "imdb-sample-test"
        if args.tiny:
            data, test = subset(data, 200), subset(test, 100)
        if args.model in list_models():
            remove_model(args.model)
            print(f"removed the earlier model {args.model!r}")
        cfg = TINY if args.tiny else TrainConfig()  # TrainConfig(): the CLI's defaults
        base = None if cfg.scratch else "default"
        m = train_from_vault(data, base, args.model, cfg, progress=False, echo=print)
        print(
            f"stored model {m.name!r} (base {m.base}); labels {m.labels}; validation "
            f"accuracy {m.metrics['accuracy']:.4f} on {m.metrics['valid_rows']} rows"
        )
        r = evaluate_model(args.model, test)  # decrypts model and test set in memory
        print(f"\nevaluation on {test!r}:")
        print(format_report(r))
    except EdgeTLError as e:
        sys.exit(f"Error: {e}")


if __name__ == "__main__":
    main()
