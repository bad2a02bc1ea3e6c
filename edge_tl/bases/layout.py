"""Fixed layout constants of a base bundle (docs/bundle-format.md), for its reader and writer."""

from __future__ import annotations

import struct
from typing import Any

FORMAT_VERSION = 1
HEADER = struct.Struct("<8sIII")  # magic, version, manifest length, signature length
CHECKSUM_LEN = 32
CHUNK = 1 << 20
EXTENSION = ".etlb"
TRUST_HINT = (
    "pass --trust PUBKEY_FILE with the packer's public key, "
    "or --allow-unsigned if you trust where the file came from"
)

MAGIC = b"\x89ETL\r\n\x1a\n"
MAX_MANIFEST = 1 << 20
SIG_LEN = 64

# fastai 2.8's text defaults (fastai.text.core), which is also how WT103 was tokenised.
FASTAI_RULES = [
    "fix_html",
    "replace_rep",
    "replace_wrep",
    "spec_add_spaces",
    "rm_useless_spaces",
    "replace_all_caps",
    "replace_maj",
    "lowercase",
]
FASTAI_TOKENIZER: dict[str, Any] = {
    "kind": "fastai",
    "tok": "spacy",
    "lang": "en",
    "rules": list(FASTAI_RULES),
    "post_rules": ["replace_space"],
    "special_tokens": [
        "xxunk",
        "xxpad",
        "xxbos",
        "xxeos",
        "xxfld",
        "xxrep",
        "xxwrep",
        "xxup",
        "xxmaj",
    ],
}
