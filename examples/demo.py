"""`make demo`: the whole pipeline on the shipped base and the shipped IMDb sample, offline.

keys init -> data import (encrypted) -> train (ULMFiT) -> evaluate -> export ONNX int8 (private by
default) -> evaluate the exported file -> predict.
State goes to ./.demo/ (its own EDGE_TL_HOME) so a user's real store is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / ".demo"
DATA = REPO / "examples" / "data"
REVIEWS = [
    "One of the best films I have seen this year: moving, funny and beautifully acted.",
    "A dull, predictable mess. I wanted my two hours back before it was half over.",
    "The plot was thin but the performances carried it; worth a watch on a rainy day.",
]


def run(*args: str, capture: Path | None = None) -> None:
    """Run one edge-tl command, echoing it; stop the demo if it fails."""
    print(f"\n$ edge-tl {' '.join(args)}", flush=True)
    out = open(capture, "w") if capture else None  # noqa: SIM115
    try:
        subprocess.run([sys.executable, "-m", "edge_tl", *args], check=True, stdout=out)
    except subprocess.CalledProcessError as e:
        sys.exit(f"demo stopped: `edge-tl {args[0]}` exited with {e.returncode}")
    finally:
        if out:
            out.close()
    if capture:
        print(capture.read_text().strip())


def main() -> None:
    """Run the pipeline end to end and say where everything is."""
    start = time.time()
    shutil.rmtree(DEMO, ignore_errors=True)
    DEMO.mkdir(mode=0o700)
    os.environ["EDGE_TL_HOME"] = str(DEMO / "home")
    model = DEMO / "sentiment.int8.onnx"
    run("doctor")
    run("keys", "init", "--no-passphrase")
    run("data", "import", str(DATA / "imdb_train_sample.csv.gz"), "--name", "imdb-sample")
    run("data", "import", str(DATA / "imdb_test_sample.csv.gz"), "--name", "imdb-sample-test")
    run("base", "list")
    run("train", "--data", "imdb-sample", "--base", "default", "--out", "sentiment", "--quiet")
    run(
        "evaluate",
        "sentiment",
        "--data",
        "imdb-sample-test",
        "--json",
        "--plot",
        str(DEMO / "evaluation.png"),
        capture=DEMO / "evaluation.json",
    )
    # Private by default: the export keeps no word or n-gram seen only in the training data.
    run("export", "sentiment", "--out", str(model), "--quantize", "int8")
    # The file that ships, scored with onnxruntime alone on the same held-out reviews.
    run("evaluate", str(model), "--data", "imdb-sample-test", capture=DEMO / "shipped.txt")
    reviews = DEMO / "reviews.txt"
    reviews.write_text("\n".join(REVIEWS) + "\n", encoding="utf-8")
    run("predict", str(model), "--file", str(reviews))
    print(f"\nDemo finished in {(time.time() - start) / 60:.1f} min.")
    print(f"  store (keys, encrypted data and model): {DEMO / 'home'}")
    print(f"  evaluation on the 500 held-out reviews:  {DEMO / 'evaluation.json'}")
    print(f"  its plot (confusion matrix, P/R/F1):     {DEMO / 'evaluation.png'}")
    print(f"  ONNX classifier (int8, onnxruntime only): {model}")
    print(f"  its own evaluation (what ships):          {DEMO / 'shipped.txt'}")


if __name__ == "__main__":
    main()
