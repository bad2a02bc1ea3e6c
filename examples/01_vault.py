"""Python API, step 1: the device key and the encrypted vault.

Creates the device identity (an age X25519 key; passphrase-protected when $EDGE_TL_PASSPHRASE is
set), imports the shipped IMDb samples into the vault (encrypted at rest), lists the datasets
from the encrypted index and opens one in memory. Safe to run again: existing state is reused.

    .venv/bin/python examples/01_vault.py [--home DIR]

State goes to --home (default ./.examples-home), never to your real ~/.edge_tl store.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from edge_tl.errors import EdgeTLError
from edge_tl.store.datasets import import_source, list_datasets, open_dataset
from edge_tl.store.keys import PASSPHRASE_ENV, has_identity, init_identity, recipient

DATA = Path(__file__).resolve().parent / "data"
SAMPLES = {"imdb-sample": "imdb_train_sample.csv.gz", "imdb-sample-test": "imdb_test_sample.csv.gz"}


def main() -> None:
    """Key, imports, listing and an in-memory open; EdgeTLError -> `Error: ...`, exit 1."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, default=Path(".examples-home"), help="EDGE_TL_HOME")
    args = ap.parse_args()
    os.environ["EDGE_TL_HOME"] = str(args.home.resolve())  # read by edge_tl at every call
    try:
        if has_identity():
            print(f"device identity exists; recipient {recipient()}")
        else:
            # None = no passphrase. Later unlocks read it from the same variable (or a prompt).
            passphrase = os.environ.get(PASSPHRASE_ENV) or None
            pub = init_identity(passphrase)
            kind = "passphrase-protected" if passphrase else "no passphrase"
            print(f"created device identity ({kind}); recipient {pub}")
        have = {d.name for d in list_datasets()}
        for name, file in SAMPLES.items():
            if name in have:
                continue
            rep = import_source(DATA / file, name, progress=False)
            print(
                f"imported {file} as {name!r}: {rep.info.rows} rows, "
                f"{rep.source_bytes:,} -> {rep.info.file_bytes:,} encrypted bytes "
                f"in {rep.seconds:.2f} s"
            )
        print("\ndatasets (from the encrypted index, no vault file opened):")
        for d in list_datasets():
            counts = ", ".join(f"{k} {v}" for k, v in d.label_counts.items())
            print(f"  {d.name:<18} {d.rows:>6} rows  {counts}  ({d.file_bytes:,} bytes)")
        ds = open_dataset("imdb-sample")  # decrypted and verified in memory; nothing written
        texts, labels = ds.labelled()
        print(
            f"\nopened {ds.name!r} in memory: {len(ds)} rows, labels {list(ds.label_names)}, "
            f"fingerprint {ds.fingerprint[:12]}"
        )
        print(f"first row: [{labels[0]}] {texts[0][:70]!r}...")
    except EdgeTLError as e:
        sys.exit(f"Error: {e}")


if __name__ == "__main__":
    main()
