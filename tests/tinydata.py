"""Tiny datasets, train configs and a tiny base shared by the slower end-to-end tests; the
one way the suite starts a child process (guarded, no network); the plaintext leak scan."""

from __future__ import annotations

import atexit
import base64
import functools
import gzip
import io
import lzma
import os
import random
import shutil
import subprocess
import tempfile
import time
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUARD = Path(__file__).resolve().parent / "netguard"
LOG_VAR = "EDGE_TL_TEST_NETLOG"

# A scratch run of a few seconds with a checkpoint after every batch (kill/resume tests).
SCRATCH_TOML = """
[train]
bs = 4
lm_bs = 4
bptt = 16
max_len = 64
min_freq = 1
dtype = "fp32"
lin_ftrs = [8]
stages = [1, 1, 2]
lm_frozen_epochs = 0
scratch_lm = true
checkpoint_minutes = 0.0
arch = {vocab_size = 8, emb_sz = 16, n_hid = 32, n_layers = 2}
"""

# Transfer from tiny_base(): every phase of the recipe, one epoch each.
POS = ["good", "great", "lovely", "superb", "fine"]
NEG = ["bad", "awful", "boring", "poor", "dull"]
FILLER = ["the", "movie", "plot", "actor", "scene", "film", "story", "and", "was", "a"]
TRANSFER_TOML = """
stages = [1, 0, 0, 1]
lm_frozen_epochs = 1
lm_epochs = 1
bs = 8
lm_bs = 4
bptt = 8
max_len = 32
min_freq = 1
dtype = "fp32"
lin_ftrs = [8]
threads = 1
"""


def scratch_texts(n: int) -> tuple[list[str], list[str]]:
    """`n` 20-word texts alternating pos/neg, with label words among fillers."""
    rng = random.Random(5)
    words = {"pos": "good great fine".split(), "neg": "bad awful poor".split()}
    labels = [("pos", "neg")[i % 2] for i in range(n)]
    texts = [
        " ".join(rng.choice(words[lab] + ["the", "film", "a"]) for _ in range(20)) for lab in labels
    ]
    return texts, labels


def keyword_texts(
    n: int,
    seed: int,
    noise: float = 0.0,
    pos: list[str] = POS,
    neg: list[str] = NEG,
    filler: list[str] = FILLER,
) -> tuple[list[str], list[str]]:
    """n filler texts with two pos or neg words, labels alternating; `noise`: share of rows whose
    words belong to the other label."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        lab = ("pos", "neg")[i % 2]
        signal = pos if (lab == "pos") != (rng.random() < noise) else neg
        words = rng.choices(filler, k=8) + rng.choices(signal, k=2)
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(lab)
    return texts, labels


def tiny_base(path: Path, name: str = "tiny", seed: int = 0) -> Path:
    """Pack a 40-token random AWD-LSTM base whose vocabulary holds POS, NEG and FILLER."""
    import torch

    from edge_tl.awd_lstm import lm_state_keys
    from edge_tl.bases.bundle import FASTAI_TOKENIZER, pack_bundle
    from edge_tl.config import SPECIAL_TOKENS, ModelConfig

    words = sorted(set(POS + NEG + FILLER))
    vocab = SPECIAL_TOKENS + words + [f"w{i}" for i in range(40 - len(SPECIAL_TOKENS) - len(words))]
    cfg = ModelConfig(vocab_size=len(vocab), emb_sz=8, n_hid=12, n_layers=2)
    g = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(s, generator=g) * 0.1 for k, s in lm_state_keys(cfg).items()}
    sd["0.encoder_dp.emb.weight"] = sd["1.decoder.weight"] = sd["0.encoder.weight"]
    return pack_bundle(
        path,
        name=name,
        model_cfg=cfg,
        vocab=vocab,
        state_dict=sd,
        tokenizer=FASTAI_TOKENIZER,
        dtype="fp32",
        corpus={"description": "random", "license": "CC0-1.0"},
    )


# ---------------------------------------------------------------- child processes, guarded

# The system temp folder, read before the conftest points TMPDIR at each test's own folder.
SYSTEM_TMP = Path(tempfile.gettempdir())
# Logs of the network attempts of children started since the last check. Created at import,
# before any test points TMPDIR elsewhere, so no test's temp folder holds them.
_LOG_DIR = Path(tempfile.mkdtemp(prefix="edge_tl-netlog-"))
atexit.register(shutil.rmtree, _LOG_DIR, True)
_LOGS: list[Path] = []


@functools.cache
def _probe_netns() -> tuple[str, ...]:
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    for cmd in ((unshare, "-n"), (unshare, "-rn")):  # root, else an unprivileged user ns
        if subprocess.run([*cmd, "true"], capture_output=True).returncode == 0:
            return cmd
    return ()


def netns_prefix() -> list[str]:
    """The command prefix that starts a child in an empty network namespace (no interface
    but a down loopback: C extensions cannot connect either); [] where that is impossible,
    which fails the test under CI=true."""
    prefix = list(_probe_netns())
    if not prefix and os.environ.get("CI") == "true":
        pytest.fail(
            "CI=true but `unshare -n true` fails here: child processes would run with the "
            "network; run the suite as root (or where unprivileged user namespaces work)"
        )
    return prefix


def child_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """`base` (default: this process's environment) plus `extra`, with the network guard
    loaded as sitecustomize and a fresh attempt log that check_children() reads."""
    env = dict(os.environ if base is None else base, **extra)
    fd, log = tempfile.mkstemp(prefix="net-", suffix=".log", dir=_LOG_DIR)
    os.close(fd)
    _LOGS.append(Path(log))
    env["PYTHONPATH"] = os.pathsep.join(
        [str(GUARD), str(ROOT), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    )
    env[LOG_VAR] = log
    return env


def guarded(cmd: Sequence[str | Path]) -> list[str]:
    """`cmd` prefixed to run without network."""
    return [*netns_prefix(), *map(str, cmd)]


def popen_child(
    cmd: Sequence[str | Path], *, env: Mapping[str, str] | None = None, **kwargs: Any
) -> subprocess.Popen:
    """subprocess.Popen without network; the no_network fixture checks its attempts after the
    test (call check_children() earlier to see them)."""
    return subprocess.Popen(guarded(cmd), env=child_env(env), **kwargs)


def run_child(
    cmd: Sequence[str | Path], *, env: Mapping[str, str] | None = None, **kwargs: Any
) -> subprocess.CompletedProcess:
    """subprocess.run without network; a network attempt by the child fails the test."""
    res = subprocess.run(guarded(cmd), env=child_env(env), **kwargs)
    check_children()
    return res


def wait_for_writes(proc: subprocess.Popen, path: Path, writes: int, limit: float = 240) -> int:
    """Poll until `proc` has (re)written `path` `writes` times; the count seen. Every atomic
    write renames a new file onto `path`, so each one shows as a new inode. The test fails if
    `proc` exits first, with the end of its output when it was piped."""
    seen, last = 0, None
    deadline = time.monotonic() + limit
    while seen < writes:
        if proc.poll() is not None:
            tail = proc.stdout.read()[-3000:] if proc.stdout else ""
            pytest.fail(f"exit {proc.returncode} after {seen} writes of {path.name}\n{tail!s}")
        if time.monotonic() > deadline:
            pytest.fail(f"only {seen} writes of {path} in {limit:.0f} s")
        try:
            st = path.stat()
            now = (st.st_ino, st.st_mtime_ns)
        except FileNotFoundError:
            now = None
        if now is not None and now != last:
            seen, last = seen + 1, now
        time.sleep(0.002)
    return seen


def check_children(fail: bool = True) -> list[str]:
    """The network attempts children made since the last check (their logs are consumed);
    with `fail`, any attempt fails the test."""
    lines: list[str] = []
    while _LOGS:
        log = _LOGS.pop()
        try:
            lines += log.read_text().splitlines()
            log.unlink()
        except FileNotFoundError:
            continue
    if lines and fail:
        pytest.fail(f"a child process made network attempt(s): {lines[:3]}")
    return lines


# ---------------------------------------------------------------- plaintext leak scan


def _base64_cores(data: bytes) -> list[bytes]:
    """The base64 characters fixed by `data` alone, at each of the three byte alignments."""
    out = []
    for k in range(3):
        enc = base64.b64encode(b"\0" * k + data)
        core = enc[-(-8 * k // 6) : 8 * (k + len(data)) // 6]
        out += [core, core.replace(b"+", b"-").replace(b"/", b"_")]
    return out


def secret_forms(secret: str) -> list[bytes]:
    """`secret` as UTF-8, lowercased (tokenizers lowercase), UTF-16/32 in both byte orders,
    JSON-escaped, hex and base64 (each alignment): the ways a file could carry it."""
    forms = {secret, secret.lower()}
    out: set[bytes] = set()
    for s in forms:
        for codec in ("utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"):
            out.add(s.encode(codec))
        out.add(s.encode("ascii", "backslashreplace").replace(b"\\x", b"\\u00"))
        raw = s.encode()
        out |= {raw.hex().encode(), raw.hex().upper().encode(), *_base64_cores(raw)}
    return sorted(out)


_ZLIB = (b"\x01", b"\x5e", b"\x9c", b"\xda")  # the second byte of a zlib stream, per level


def _decoded(blob: bytes) -> list[bytes]:
    """`blob` and, for a gzip, xz, zlib or zip file, its decompressed content (bounded)."""
    out = [blob]
    limit = 64 * 2**20
    for magic, unpack in (
        (b"\x1f\x8b", lambda b: gzip.GzipFile(fileobj=io.BytesIO(b)).read(limit)),
        (b"\xfd7zXZ", lambda b: lzma.LZMADecompressor().decompress(b, limit)),
        *((b"\x78" + m, lambda b: zlib.decompressobj().decompress(b, limit)) for m in _ZLIB),
    ):
        if blob.startswith(magic):
            try:
                out.append(unpack(blob))
            except (OSError, EOFError, lzma.LZMAError, zlib.error):
                pass
    if blob.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(io.BytesIO(blob)) as z:
                out += [z.read(i)[:limit] for i in z.infolist() if i.file_size <= limit]
        except (zipfile.BadZipFile, OSError, NotImplementedError, EOFError, zlib.error):
            pass
    return out


def scan_for_plaintext(
    secret: str, roots: Sequence[Path], skip: Sequence[Path] = (), since: float | None = None
) -> list[str]:
    """'path: form' for every file under `roots` (not under `skip`; modified at or after `since`)
    holding `secret` in one of secret_forms(), in its bytes or its decompressed content;
    symlinks are not followed."""
    needles = secret_forms(secret)
    skipped = {Path(p) for p in skip}
    hits: list[str] = []
    seen: set[Path] = set()
    for root in roots:
        paths = [root] if root.is_file() else []
        for dirpath, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if Path(dirpath, d) not in skipped]
            paths += [Path(dirpath, f) for f in files]
        for p in paths:
            if p in seen or p.is_symlink() or not p.is_file():
                continue
            seen.add(p)
            try:
                if since is not None and p.stat().st_mtime < since:
                    continue
                blob = p.read_bytes()
            except OSError:
                continue
            for content in _decoded(blob):
                hits += [f"{p}: {n!r}" for n in needles if n in content]
    return sorted(set(hits))
