"""The IMDb curve's shared semi LM as a plain fp16 file the repository carries, and back.

`compare` keeps a comparison's shared LM age-encrypted for the device that made it: a language
model memorises its texts, and on a device they are private. The IMDb curve's LM is fine-tuned
on public IMDb text only (the 25k training reviews + 5,000 unlabelled ones), so the repository
carries it in plaintext, in fp16, for any machine to rerun the curve without the ~45 minutes of
LM fine-tuning a 2-core CPU needs. `import` checks the file's sha256 against the sidecar and
re-encrypts it for this device into the comparison's work folder; `compare` then checks that the
LM belongs to the comparison's setup (data, base, LM settings) before it uses it.

    .venv/bin/python bench/semi_lm.py export --home ../compare-home \\
        --work ../compare-home/ships --out bench/results/compare-ships/semi-lm.etlm
    .venv/bin/python bench/semi_lm.py import --home ../compare-home \\
        --work ../compare-home/ships --file bench/results/compare-ships/semi-lm.etlm

The units of a curve rerun from this file use the fp16-rounded weights; so did the units that
were measured with it (the LM was exported, then imported back before any unit ran).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def export_lm(work: Path, out: Path, backward: bool = False) -> dict:
    """Decrypt `work`'s shared LM (or its backward one), write it as plain fp16 `out` plus
    `out`.json; the sidecar."""
    import torch

    from edge_tl.compare.lm import LM_MAGIC, SEMI_LM, SEMI_LM_BACKWARD
    from edge_tl.store.files import atomic_write
    from edge_tl.store.keys import decrypt_on_device
    from edge_tl.store.models import (
        pack_container,
        tensors_from_bytes,
        tensors_to_bytes,
        unpack_container,
    )

    src = work / (SEMI_LM_BACKWARD if backward else SEMI_LM)
    header, body = unpack_container(LM_MAGIC, decrypt_on_device(src.read_bytes(), str(src)), "lm")
    state = {
        k: v.to(torch.float16) if v.is_floating_point() else v
        for k, v in tensors_from_bytes(body, "lm").items()
    }
    tensors = tensors_to_bytes(state)
    header = {**header, "tensors_sha256": hashlib.sha256(tensors).hexdigest(), "dtype": "fp16"}
    data = pack_container(LM_MAGIC, header, tensors)
    atomic_write(out, data)
    side = {
        "file": out.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "dtype": "fp16",
        "compare_digest": header["digest"],
        "base": header["base"],
        "base_sha256": header["base_sha256"],
        "tokens": header["tokens"],
        "seconds": header["seconds"],
        "metrics": header["metrics"],
    }
    atomic_write(out.with_suffix(".json"), (json.dumps(side, indent=1) + "\n").encode())
    return side


def import_lm(src: Path, work: Path, force: bool = False, backward: bool = False) -> dict:
    """Check `src` against its sidecar and store it encrypted for this device in `work` (as the
    backward shared LM with `backward`)."""
    import torch

    from edge_tl.compare.lm import LM_MAGIC, SEMI_LM, SEMI_LM_BACKWARD, lm_of, save_lm
    from edge_tl.store.models import tensors_from_bytes, unpack_container

    side = json.loads(src.with_suffix(".json").read_text())
    data = src.read_bytes()
    if hashlib.sha256(data).hexdigest() != side["sha256"]:
        raise SystemExit(f"{src}: sha256 differs from {src.with_suffix('.json').name}; refetch it")
    header, body = unpack_container(LM_MAGIC, data, str(src))
    if hashlib.sha256(body).hexdigest() != header["tensors_sha256"]:
        raise SystemExit(f"{src}: its tensors do not match its header; refetch it")
    dest = work / (SEMI_LM_BACKWARD if backward else SEMI_LM)
    if dest.exists() and not force:
        raise SystemExit(f"{dest} exists; pass --force to replace it")
    state = {
        k: v.to(torch.float32) if v.is_floating_point() else v
        for k, v in tensors_from_bytes(body, str(src)).items()
    }
    lm = lm_of(header, state, str(src))
    work.mkdir(parents=True, exist_ok=True)
    save_lm(dest, lm, header["digest"])
    return side


def main() -> None:
    """Parse flags; export or import."""
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["export", "import"])
    ap.add_argument("--home", type=Path, required=True, help="EDGE_TL_HOME of the bench")
    ap.add_argument("--work", type=Path, required=True, help="the comparison's --work folder")
    ap.add_argument("--out", type=Path, help="export: the plain file to write")
    ap.add_argument("--file", type=Path, help="import: the plain file to read")
    ap.add_argument("--force", action="store_true", help="import: replace an LM already there")
    ap.add_argument("--backward", action="store_true", help="the backward shared LM")
    a = ap.parse_args()
    os.environ["EDGE_TL_HOME"] = str(a.home)
    if a.what == "export":
        side = export_lm(a.work, a.out, a.backward)
    else:
        side = import_lm(a.file, a.work, a.force, a.backward)
    print(json.dumps({k: side[k] for k in ("sha256", "bytes", "tokens", "seconds")}))


if __name__ == "__main__":
    main()
