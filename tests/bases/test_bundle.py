"""Bundle format: known-answer vector, round trips, and every corruption a reader must reject."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
from pathlib import Path

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_tl.awd_lstm import build_lm, lm_state_keys
from edge_tl.bases.bundle import (
    FASTAI_TOKENIZER,
    build_bundle,
    generate_keypair,
    key_fingerprint,
    load_private_key,
    pack_bundle,
    read_bundle,
    read_card,
    read_manifest,
    verify_bundle,
)
from edge_tl.config import SPECIAL_TOKENS, ModelConfig
from edge_tl.errors import BundleError

DOC = Path(__file__).resolve().parents[2] / "docs" / "bundle-format.md"
KAT_CFG = ModelConfig(vocab_size=12, emb_sz=2, n_hid=3, n_layers=2)
KAT_VOCAB = SPECIAL_TOKENS + ["the", "cat", "sat"]
CORPUS = {"description": "synthetic values", "license": "CC0-1.0"}
CORRUPT = "do not use this file; copy it again from its source"
SEED_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def kat_state() -> dict[str, torch.Tensor]:
    """The known-answer tensors of docs/bundle-format.md."""
    sd = {}
    for i, (k, shape) in enumerate(lm_state_keys(KAT_CFG).items()):
        n = int(torch.Size(shape).numel())
        sd[k] = ((torch.arange(n) + i) % 17 - 8).float().div(16).reshape(shape)
    sd["0.encoder_dp.emb.weight"] = sd["0.encoder.weight"]
    sd["1.decoder.weight"] = sd["0.encoder.weight"]
    return sd


def kat_bytes(key=SEED_KEY) -> bytes:
    return build_bundle(
        name="kat",
        model_cfg=KAT_CFG,
        vocab=KAT_VOCAB,
        state_dict=kat_state(),
        tokenizer=FASTAI_TOKENIZER,
        corpus=CORPUS,
        description="known-answer test vector",
        dtype="fp16",
        private_key=key,
        created="2024-01-01T00:00:00Z",
        tool="edge_tl 0.1.0",
    )


def write_pub(tmp_path: Path, key=SEED_KEY, name="trusted.pub") -> Path:
    p = tmp_path / name
    p.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return p


def split(data: bytes) -> tuple[dict, bytes, list[tuple[str, bytes]]]:
    """(manifest, signature, [(member name, bytes)]) of a well-formed bundle."""
    _, _, m, s = struct.unpack("<8sIII", data[:20])
    manifest = json.loads(data[20 : 20 + m])
    d = 52 + m + s
    members = [
        (e["name"], data[d + e["offset"] : d + e["offset"] + e["size"]])
        for e in manifest["members"]
    ]
    return manifest, data[20 + m : 20 + m + s], members


def assemble(
    manifest: dict,
    members: list[tuple[str, bytes]],
    *,
    key=None,
    fix: bool = True,
    sig: bytes | None = None,
    version: int = 1,
) -> bytes:
    """An independent writer: lets a test craft a bundle whose hashes and checksum are right."""
    if fix:
        table, off = [], 0
        for name, b in members:
            table.append(
                {
                    "name": name,
                    "offset": off,
                    "size": len(b),
                    "sha256": hashlib.sha256(b).hexdigest(),
                }
            )
            off += len(b)
        manifest = {**manifest, "members": table}
    mb = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    if sig is None:
        sig = key.sign(mb) if key else b""
    head = b"\x89ETL\r\n\x1a\n" + struct.pack("<III", version, len(mb), len(sig)) + mb + sig
    return head + hashlib.sha256(head).digest() + b"".join(b for _, b in members)


def expect(path: Path, message: str, hint: str | None = CORRUPT, **kw) -> None:
    """Both readers reject `path` with exactly this message."""
    full = f"bundle {path.name}: {message}" + (f". {hint}" if hint else ".")
    for reader in (verify_bundle, read_bundle):
        with pytest.raises(BundleError) as e:
            reader(path, **kw)
        assert str(e.value) == full


# ---------------------------------------------------------------- known answer


def test_known_answer_vector_matches_the_spec(tmp_path):
    text = DOC.read_text()
    blob = base64.b64decode("".join(re.search(r"```text\n(.*?)```", text, re.S)[1].split()))
    assert hashlib.sha256(blob).hexdigest() in text
    assert blob == kat_bytes(), "the writer no longer reproduces the documented vector"
    f = tmp_path / "kat.etlb"
    f.write_bytes(blob)
    base = read_bundle(f, trust=write_pub(tmp_path))
    assert base.vocab == KAT_VOCAB and base.model_cfg == KAT_CFG
    for k, t in kat_state().items():
        assert torch.equal(base.state_dict[k], t), k
    assert base.manifest["signer"] == key_fingerprint(SEED_KEY.public_key())
    assert base.manifest["signer"] in text
    assert base.manifest["weights"]["tied"] == {
        "0.encoder_dp.emb.weight": "0.encoder.weight",
        "1.decoder.weight": "0.encoder.weight",
    }


# ---------------------------------------------------------------- round trips


def random_state(cfg: ModelConfig, tie: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(s, generator=g) * 0.1 for k, s in lm_state_keys(cfg).items()}
    if tie:
        sd["0.encoder_dp.emb.weight"] = sd["1.decoder.weight"] = sd["0.encoder.weight"]
    return sd


def vocab_for(cfg: ModelConfig) -> list[str]:
    # Non-ASCII tokens: vocab.json is UTF-8.
    return SPECIAL_TOKENS + [f"wé{i}日" for i in range(cfg.vocab_size - len(SPECIAL_TOKENS))]


@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
@pytest.mark.parametrize("tie", [True, False])
def test_round_trip_loads_into_fastai_lm(tmp_path, dtype, tie):
    cfg = ModelConfig(vocab_size=40, emb_sz=6, n_hid=10, n_layers=3, tie_weights=tie)
    sd = random_state(cfg, tie)
    out = pack_bundle(
        tmp_path / "b.etlb",
        name="tiny",
        model_cfg=cfg,
        vocab=vocab_for(cfg),
        state_dict=sd,
        tokenizer=FASTAI_TOKENIZER,
        corpus=CORPUS,
        dtype=dtype,
        card="# tiny\n",
    )
    base = read_bundle(out, allow_unsigned=True)
    assert list(base.state_dict) == list(lm_state_keys(cfg))  # fastai loads by key order
    for k, t in sd.items():
        want = t.half().float() if dtype == "fp16" else t
        assert base.state_dict[k].dtype == torch.float32
        assert torch.equal(base.state_dict[k], want), k
    assert bool(base.manifest["weights"]["tied"]) is tie
    model = build_lm(cfg)
    model.load_state_dict(base.state_dict, strict=True)
    assert read_card(out) == "# tiny\n"
    assert verify_bundle(out, allow_unsigned=True).signature_verified is False


def test_fp16_halves_the_weights(tmp_path):
    cfg = ModelConfig(vocab_size=200, emb_sz=16, n_hid=24, n_layers=2)
    kw = dict(
        name="t",
        model_cfg=cfg,
        vocab=vocab_for(cfg),
        state_dict=random_state(cfg),
        tokenizer={},
        corpus=CORPUS,
    )
    a = pack_bundle(tmp_path / "a.etlb", dtype="fp16", **kw).stat().st_size
    b = pack_bundle(tmp_path / "b.etlb", dtype="fp32", **kw).stat().st_size
    assert a < 0.6 * b


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda sd, v: sd.pop("1.decoder.bias"),
            "state dict keys do not match the AWD-LSTM layout (missing ['1.decoder.bias'])",
        ),
        (
            lambda sd, v: sd.__setitem__("extra", torch.zeros(1)),
            "state dict keys do not match the AWD-LSTM layout (unexpected ['extra'])",
        ),
        (
            lambda sd, v: sd.__setitem__("1.decoder.bias", torch.zeros(5)),
            "1.decoder.bias has shape (5,), the config needs (12,)",
        ),
        (
            lambda sd, v: sd.__setitem__("1.decoder.bias", torch.full((12,), 1e6)),
            "1.decoder.bias holds NaN or infinity as fp16",
        ),
        (lambda sd, v: v.pop(), "vocab has 11 tokens, the config says 12"),
        (lambda sd, v: v.__setitem__(1, "pad"), "vocab token 1 (pad_token) is 'pad', not 'xxpad'"),
    ],
)
def test_pack_validates_before_writing(tmp_path, change, message):
    sd, vocab = kat_state(), list(KAT_VOCAB)
    change(sd, vocab)
    out = tmp_path / "x.etlb"
    with pytest.raises(BundleError) as e:
        pack_bundle(
            out,
            name="kat",
            model_cfg=KAT_CFG,
            vocab=vocab,
            state_dict=sd,
            tokenizer={},
            corpus=CORPUS,
        )
    assert e.value.message == f"cannot pack bundle: {message}"
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temp file


@pytest.mark.parametrize("name", ["", "Upper", "../x", "a/b", "x" * 65, ".hidden"])
def test_pack_rejects_bad_names(tmp_path, name):
    with pytest.raises(BundleError, match="name .* is not allowed"):
        pack_bundle(
            tmp_path / "x.etlb",
            name=name,
            model_cfg=KAT_CFG,
            vocab=KAT_VOCAB,
            state_dict=kat_state(),
            tokenizer={},
            corpus=CORPUS,
        )


# ---------------------------------------------------------------- must reject


@pytest.fixture
def kat(tmp_path) -> Path:
    p = tmp_path / "kat.etlb"
    p.write_bytes(kat_bytes())
    return p


@pytest.fixture
def unsigned(tmp_path) -> Path:
    p = tmp_path / "u.etlb"
    p.write_bytes(kat_bytes(key=None))
    return p


def test_structural_corruption_is_named(tmp_path, unsigned):
    data = unsigned.read_bytes()
    man, _, members = split(data)
    m = len(json.dumps(man, sort_keys=True, separators=(",", ":")))
    cases = [
        (b"PK\x03\x04" + data[4:], "not an edge_tl base bundle (bad magic)", "check the path"),
        (b"", "not an edge_tl base bundle (bad magic)", "check the path"),
        (data[:12], "truncated (file is 12 bytes, layout needs 20)", CORRUPT),
        (
            data[:8] + struct.pack("<I", 2) + data[12:],
            "unsupported format version 2 (this edge_tl reads version 1)",
            "upgrade edge_tl, or re-pack the base with this version",
        ),
        (
            data[:12] + struct.pack("<I", 2**21) + data[16:],
            "manifest length 2097152 is outside 1..1048576",
            CORRUPT,
        ),
        (
            data[:16] + struct.pack("<I", 3) + data[20:],
            "signature length 3 is not 0 or 64",
            CORRUPT,
        ),
        (data[:100], f"truncated (file is 100 bytes, layout needs {52 + m})", CORRUPT),
        (
            data[:-1],
            f"truncated (file is {len(data) - 1} bytes, layout needs {len(data)})",
            CORRUPT,
        ),
        (data + b"\0", "1 unexpected bytes after the last member", CORRUPT),
        (
            data[:30] + bytes([data[30] ^ 1]) + data[31:],
            "header checksum mismatch (corrupted or tampered with)",
            CORRUPT,
        ),
        (
            data[:-5] + bytes([data[-5] ^ 0x40]) + data[-4:],
            "member weights.safetensors sha256 mismatch (corrupted or tampered with)",
            CORRUPT,
        ),
    ]
    for i, (blob, message, hint) in enumerate(cases):
        p = tmp_path / f"c{i}.etlb"
        p.write_bytes(blob)
        expect(p, message, hint, allow_unsigned=True)


def crafted_cases(man: dict, members: list[tuple[str, bytes]]):
    vocab, weights = members[0][1], members[1][1]
    card = ("card.md", b"# card")
    w = "manifest"
    yield (
        "swapped member bytes",
        dict(members=[("vocab.json", weights), ("weights.safetensors", vocab)], fix=False),
        "member vocab.json sha256 mismatch (corrupted or tampered with)",
    )
    yield "members listed in swapped order", dict(members=[members[1], members[0]]), None
    yield (
        "missing member",
        dict(members=[members[0], card]),
        f"{w}: member weights.safetensors is missing",
    )
    yield "one member", dict(members=[members[0]]), f"{w}: members must list 2 or 3 entries"
    yield (
        "extra member",
        dict(members=[*members, ("extra.bin", b"x")]),
        f"{w}: member name 'extra.bin' is not allowed",
    )
    yield (
        "four members",
        dict(members=[*members, card, card]),
        f"{w}: members must list 2 or 3 entries",
    )
    yield (
        "duplicate member",
        dict(members=[members[0], members[0], members[1]]),
        f"{w}: member vocab.json is listed twice",
    )
    for trick in [
        "../vocab.json",
        "/etc/passwd",
        "sub/vocab.json",
        "vocab.json\x00",
        "..",
        "C:\\vocab.json",
        "VOCAB.JSON",
    ]:
        yield (
            f"path trick {trick!r}",
            dict(members=[(trick, vocab), members[1]]),
            f"{w}: member name {trick!r} is not allowed",
        )
    yield "unknown key", dict(manifest={**man, "x": 1}), f"{w} has unknown key 'x'"
    yield (
        "missing key",
        dict(manifest={k: v for k, v in man.items() if k != "corpus"}),
        f"{w} lacks key 'corpus'",
    )
    yield (
        "bool for int",
        dict(manifest={**man, "format_version": True}),
        f"{w} key 'format_version' has the wrong type",
    )
    yield (
        "format version differs",
        dict(manifest={**man, "format_version": 2}),
        "manifest format_version differs from the header's",
    )
    yield (
        "oversize description",
        dict(manifest={**man, "description": "x" * 4097}),
        f"{w}: description is longer than 4096 characters",
    )
    yield (
        "oversize tokenizer",
        dict(manifest={**man, "tokenizer": {"x": "y" * 17000}}),
        f"{w}: tokenizer is larger than 16 KiB",
    )
    yield (
        "huge vocab_size",
        dict(manifest={**man, "model_config": {**man["model_config"], "vocab_size": 10**9}}),
        f"{w} model_config: vocab_size is outside 1..1000000",
    )
    yield (
        "corpus without license",
        dict(manifest={**man, "corpus": {"description": "d"}}),
        f"{w}: corpus lacks a license string",
    )
    yield (
        "other architecture",
        dict(manifest={**man, "architecture": "GPT"}),
        f"{w}: architecture 'GPT' is not AWD_LSTM",
    )
    yield (
        "bad signer",
        dict(manifest={**man, "signer": "rsa:00"}),
        f"{w}: signer is not null or ed25519:<32 hex>",
    )
    yield (
        "signature without signer",
        dict(sig=b"\0" * 64),
        "has a signature but the manifest names no signer",
    )
    yield (
        "vocab too short",
        dict(members=[("vocab.json", json.dumps(KAT_VOCAB[:-1]).encode()), members[1]]),
        "vocab.json has 11 tokens, the config says 12",
    )
    yield (
        "vocab not a list",
        dict(members=[("vocab.json", b'{"a": 1}'), members[1]]),
        "vocab.json is not a JSON list",
    )
    yield (
        "vocab duplicate keys",
        dict(members=[("vocab.json", b'{"a": 1, "a": 2}'), members[1]]),
        "vocab.json is not valid JSON (duplicate key 'a')",
    )


def test_crafted_bundles_are_rejected_by_name(tmp_path, unsigned):
    man, _, members = split(unsigned.read_bytes())
    for i, (what, kw, message) in enumerate(crafted_cases(man, members)):
        p = tmp_path / f"k{i}.etlb"
        p.write_bytes(assemble(kw.pop("manifest", man), kw.pop("members", members), **kw))
        if message is None:  # a different but valid member order is fine
            assert read_bundle(p, allow_unsigned=True).vocab == KAT_VOCAB, what
            continue
        try:
            expect(p, message, allow_unsigned=True)
        except AssertionError as e:
            raise AssertionError(f"{what}: {e}") from e


def test_manifest_json_quirks_are_rejected(tmp_path, unsigned):
    data = unsigned.read_bytes()
    m = struct.unpack("<I", data[12:16])[0]
    body = data[20 : 20 + m]
    for i, (raw, message) in enumerate(
        [
            (b'{"a": 1, "a": 1}', "manifest is not valid JSON (duplicate key 'a')"),
            (b'{"a": NaN}', "manifest is not valid JSON (NaN is not allowed)"),
            (b"[1, 2]", "manifest is not a JSON dict"),
            (
                b"\xff\xfe",
                "manifest is not valid JSON ('utf-8' codec can't decode byte 0xff in "
                "position 0: invalid start byte)",
            ),
            (b"[" * 100000, None),
        ]
    ):
        head = data[:12] + struct.pack("<II", len(raw), 0) + raw
        p = tmp_path / f"j{i}.etlb"
        p.write_bytes(head + hashlib.sha256(head).digest() + data[52 + m :])
        if message is None:
            with pytest.raises(BundleError, match="manifest is not valid JSON"):
                verify_bundle(p, allow_unsigned=True)
        else:
            expect(p, message, allow_unsigned=True)
    assert body.startswith(b"{")


def safetensors_bytes(tensors: dict, meta: dict | None = None) -> bytes:
    import safetensors.torch

    return safetensors.torch.save(tensors, metadata=meta)


def test_weights_member_is_checked_against_the_config(tmp_path, unsigned):
    man, _, members = split(unsigned.read_bytes())
    good = {
        k: kat_state()[k].half() for k in lm_state_keys(KAT_CFG) if k not in man["weights"]["tied"]
    }
    cases = [
        (
            {**good, "1.decoder.bias": torch.zeros(13).half()},
            "weights: tensor 1.decoder.bias has shape [13], expected [12]",
        ),
        (
            {k: v for k, v in good.items() if k != "1.decoder.bias"},
            "weights: tensor 1.decoder.bias is missing",
        ),
        ({**good, "evil": torch.zeros(1).half()}, "weights: unexpected tensor 'evil'"),
        (
            {**good, "1.decoder.bias": torch.zeros(12)},
            "weights: tensor 1.decoder.bias is F32, the manifest says fp16",
        ),
    ]
    for i, (tensors, message) in enumerate(cases):
        p = tmp_path / f"w{i}.etlb"
        p.write_bytes(
            assemble(man, [members[0], ("weights.safetensors", safetensors_bytes(tensors))])
        )
        expect(p, message, allow_unsigned=True)
    bad = {**good, "1.decoder.bias": torch.full((12,), float("nan")).half()}
    p = tmp_path / "nan.etlb"
    p.write_bytes(assemble(man, [members[0], ("weights.safetensors", safetensors_bytes(bad))]))
    with pytest.raises(BundleError, match="weights: tensor data holds NaN or infinity"):
        verify_bundle(p, allow_unsigned=True)
    with pytest.raises(BundleError, match="weights: 1.decoder.bias holds NaN or infinity"):
        read_bundle(p, allow_unsigned=True)
    # Infinity as the very last value of any tensor (a short final chunk) is still found.
    for k in good:
        t = good[k].clone().flatten()
        t[-1] = float("inf")
        p = tmp_path / "inf.etlb"
        st_bytes = safetensors_bytes({**good, k: t.reshape(good[k].shape)})
        p.write_bytes(assemble(man, [members[0], ("weights.safetensors", st_bytes)]))
        with pytest.raises(BundleError, match="weights: tensor data holds NaN or infinity"):
            verify_bundle(p, allow_unsigned=True)
    # A raw header length that points past the member.
    w = members[1][1]
    p = tmp_path / "hl.etlb"
    p.write_bytes(
        assemble(man, [members[0], ("weights.safetensors", struct.pack("<Q", 2**40) + w[8:])])
    )
    expect(p, "weights: safetensors header length is invalid", allow_unsigned=True)


# ---------------------------------------------------------------- signatures and trust


def test_trust_rules(tmp_path, kat, unsigned):
    fp = key_fingerprint(SEED_KEY.public_key())
    other = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
    other_fp = key_fingerprint(other.public_key())
    trusted, wrong = write_pub(tmp_path), write_pub(tmp_path, other, "other.pub")
    hint = (
        "pass --trust PUBKEY_FILE with the packer's public key, "
        "or --allow-unsigned if you trust where the file came from"
    )
    assert verify_bundle(kat, trust=trusted).signature_verified is True
    expect(unsigned, "not signed", hint)
    expect(kat, f"signed by {fp} but no trusted key was given", hint)
    expect(
        kat,
        f"signed by {fp}, not by the trusted key {other_fp}",
        "pass the packer's public key with --trust",
        trust=wrong,
    )
    expect(
        unsigned,
        "not signed, but a trusted key was given",
        "get a signed bundle from the packer, or import with --allow-unsigned",
        trust=trusted,
    )
    assert read_bundle(kat, allow_unsigned=True).vocab == KAT_VOCAB  # hashes only, by choice

    man, sig, members = split(kat.read_bytes())
    cases = {
        "edited.etlb": assemble({**man, "description": "evil"}, members, sig=sig, fix=False),
        "flipped.etlb": assemble(man, members, sig=bytes([sig[0] ^ 1]) + sig[1:], fix=False),
        "resigned.etlb": assemble(man, members, key=other, fix=False),
    }
    for fname, blob in cases.items():
        (tmp_path / fname).write_bytes(blob)
        expect(
            tmp_path / fname,
            "signature does not verify (manifest edited or signature corrupted)",
            trust=trusted,
        )
    (tmp_path / "stripped.etlb").write_bytes(assemble(man, members, sig=b"", fix=False))
    expect(
        tmp_path / "stripped.etlb",
        f"manifest names signer {fp} but has no signature",
        trust=trusted,
    )


def test_keygen_sign_and_verify(tmp_path):
    key, pub, fp = generate_keypair(tmp_path / "k.key")
    assert pub.name == "k.pub" and (key.stat().st_mode & 0o777) == 0o600
    with pytest.raises(BundleError, match="already exists"):
        generate_keypair(tmp_path / "k.key")
    out = pack_bundle(
        tmp_path / "s.etlb",
        name="kat",
        model_cfg=KAT_CFG,
        vocab=KAT_VOCAB,
        state_dict=kat_state(),
        tokenizer={},
        corpus=CORPUS,
        sign_key=key,
    )
    info = verify_bundle(out, trust=pub)
    assert info.signer == fp and info.signature_verified
    assert read_manifest(out)["signer"] == fp
    (tmp_path / "junk.key").write_text("not a key")
    with pytest.raises(BundleError) as e:
        load_private_key(tmp_path / "junk.key")
    assert str(e.value) == (
        f"signing key {tmp_path / 'junk.key'}: not an unencrypted PEM private "
        "key. use a key made by `edge-tl base keygen`"
    )
    with pytest.raises(BundleError, match="trusted key .*: not a PEM public key"):
        verify_bundle(out, trust=key)


# ---------------------------------------------------------------- fuzz

KAT = kat_bytes()
UNSIGNED = kat_bytes(key=None)
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _rejects(tmp_path: Path, blob: bytes, **kw) -> None:
    p = tmp_path / "f.etlb"
    p.write_bytes(blob)
    for reader in (verify_bundle, read_bundle):
        with pytest.raises(BundleError):
            reader(p, **kw)


@FUZZ
@given(pos=st.integers(0, len(KAT) - 1), bit=st.integers(0, 7), signed=st.booleans())
def test_fuzz_any_flipped_bit_is_rejected(tmp_path, pos, bit, signed):
    blob = bytearray(KAT if signed else UNSIGNED)
    pos = pos % len(blob)
    blob[pos] ^= 1 << bit
    _rejects(tmp_path, bytes(blob), allow_unsigned=True)
    if signed:
        _rejects(tmp_path, bytes(blob), trust=write_pub(tmp_path))


@FUZZ
@given(cut=st.integers(0, len(KAT) - 1), extra=st.binary(min_size=1, max_size=64))
def test_fuzz_truncated_or_extended_is_rejected(tmp_path, cut, extra):
    _rejects(tmp_path, KAT[:cut], allow_unsigned=True)
    _rejects(tmp_path, KAT + extra, allow_unsigned=True)


@FUZZ
@given(junk=st.binary(max_size=400))
def test_fuzz_random_bytes_and_manifests_are_rejected(tmp_path, junk):
    _rejects(tmp_path, junk, allow_unsigned=True)
    _rejects(tmp_path, KAT[:8] + junk, allow_unsigned=True)
    head = KAT[:8] + struct.pack("<III", 1, max(len(junk), 1), 0) + (junk or b" ")
    _rejects(tmp_path, head + hashlib.sha256(head).digest() + KAT[-100:], allow_unsigned=True)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=8,
)


@FUZZ
@given(key=st.sampled_from(sorted(split(UNSIGNED)[0])), value=json_values)
def test_fuzz_manifest_values_never_crash(tmp_path, key, value):
    man, _, members = split(UNSIGNED)
    if man[key] == value:
        return
    p = tmp_path / "m.etlb"
    p.write_bytes(assemble({**man, key: value}, members, fix=key != "members"))
    try:
        read_bundle(p, allow_unsigned=True)
    except BundleError:
        return
    # Only free-form fields may take arbitrary values.
    assert key in ("description", "tokenizer", "corpus", "tool", "name", "signer"), key
