"""`make demo`: the main job on the embedded default (grows into import -> train -> export -> predict)."""

from __future__ import annotations

import subprocess
import sys


def run(*args: str) -> None:
    """Run one edge-tl command, echoing it, and stop the demo if it fails."""
    print(f"\n$ edge-tl {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", "edge_tl", *args], check=True)


if __name__ == "__main__":
    run("doctor")
