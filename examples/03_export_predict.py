"""Python API, step 3: export the trained model to ONNX, then classify with onnxruntime only.

Decrypts the stored model (from examples/02_train_evaluate.py), writes one self-contained ONNX
file (dynamic int8 by default; --fp32 for float), shows what is in it with plain onnxruntime
(graph inputs/outputs, edge_tl.* metadata) and classifies a few reviews with
edge_tl.deploy.predict.Classifier, which never imports torch, fastai or spaCy.

    .venv/bin/python examples/03_export_predict.py [--home DIR] [--model NAME] [--fp32]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import onnxruntime as ort

from edge_tl.deploy.export import export_onnx
from edge_tl.deploy.predict import Classifier
from edge_tl.errors import EdgeTLError
from edge_tl.store.models import load_model

REVIEWS = [
    "One of the best films I have seen this year: moving, funny and beautifully acted.",
    "A dull, predictable mess. I wanted my two hours back before it was half over.",
    "The plot was thin but the performances carried it; worth a watch on a rainy day.",
]


def main() -> None:
    """Export, inspect, predict; EdgeTLError -> `Error: ...`, exit 1."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, default=Path(".examples-home"), help="EDGE_TL_HOME")
    ap.add_argument("--model", default="sentiment", help="stored model to export")
    ap.add_argument("--fp32", action="store_true", help="no int8 quantization")
    args = ap.parse_args()
    os.environ["EDGE_TL_HOME"] = str(args.home.resolve())  # read by edge_tl at every call
    quantize = None if args.fp32 else "int8"
    out = args.home / "exports" / f"{args.model}.{quantize or 'fp32'}.onnx"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # Plaintext ONNX (mode 0600); encrypt=True writes it age-encrypted for this device.
        # Private by default: no token outside the base's vocabulary, no rare n-gram. A model
        # trained without a base (--tiny) has no public vocabulary: its words all come from
        # the training data, and exporting them is an explicit choice.
        model = load_model(args.model)
        export_onnx(model, out, quantize=quantize, vocab="base" if model.base else "full")
        print(f"exported {out} ({out.stat().st_size:,} bytes, {quantize or 'fp32'})")
        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        for arg in sess.get_inputs() + sess.get_outputs():
            print(f"  graph {arg.name:<10} {arg.type:<14} shape {arg.shape}")
        meta = sess.get_modelmeta().custom_metadata_map  # values are JSON text
        for key in sorted(meta):
            value = meta[key] if len(meta[key]) <= 40 else f"({len(meta[key]):,} chars)"
            print(f"  metadata {key:<24} {value}")
        print(f"  vocabulary: {len(json.loads(meta['edge_tl.vocab'])):,} tokens (in the file)")
        prov = json.loads(meta["edge_tl.provenance"])
        print(
            f"  provenance: model {prov['name']!r}, base {prov['base']}, "
            f"validation accuracy {prov['metrics']['accuracy']:.4f}"
        )
        clf = Classifier(out)  # onnxruntime + edge_tl's pure-Python tokenizer
        print(f"\npredictions ({', '.join(clf.labels)}):")
        for text, p in zip(REVIEWS, clf.classify(REVIEWS), strict=True):
            print(f"  {p.label:<4} {p.score:.3f}  {text[:60]}")
    except EdgeTLError as e:
        sys.exit(f"Error: {e}")


if __name__ == "__main__":
    main()
