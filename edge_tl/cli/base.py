"""`edge-tl base ...`: pack, import, list, inspect, verify, remove and sign base models."""

from __future__ import annotations

import json
from pathlib import Path

import click

TRUST = click.option(
    "--trust",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Public key (.pub from `base keygen`) the bundle must be signed by.",
)
ALLOW_UNSIGNED = click.option(
    "--allow-unsigned",
    is_flag=True,
    help="Accept a bundle on its hashes alone (no signature check).",
)


@click.group()
def base() -> None:
    """Base models: pretrained language models shipped as verified bundles."""


@base.command("pack")
@click.option(
    "--from-fastai",
    "src",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="fastai WT103 folder (lstm_fwd.pth or lstm_wt103.pth + itos_wt103.pkl).",
)
@click.option("--name", required=True, help="Base name stored in the bundle.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Bundle file to write.")
@click.option(
    "--sign-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Ed25519 private key from `base keygen`.",
)
@click.option("--dtype", type=click.Choice(["fp16", "fp32"]), default="fp16", show_default=True)
def pack_cmd(src: Path, name: str, out: Path, sign_key: Path | None, dtype: str) -> None:
    """Convert a fastai WT103 download into a bundle (trusted packing machine only)."""
    from edge_tl.bases.bundle import read_manifest
    from edge_tl.bases.wt103 import pack_from_fastai

    path = pack_from_fastai(src, name=name, out=out, sign_key=sign_key, dtype=dtype)
    m = read_manifest(path)
    signed = f"signed by {m['signer']}" if m["signer"] else "unsigned"
    click.echo(f"Packed base {name} -> {path} ({path.stat().st_size:,} bytes, {dtype}, {signed})")


@base.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@TRUST
@ALLOW_UNSIGNED
@click.option("--name", help="Store it under this name instead of the bundle's own.")
def import_cmd(file: Path, trust: Path | None, allow_unsigned: bool, name: str | None) -> None:
    """Verify a bundle and add it to the store."""
    from edge_tl.bases.store import base_info, import_base

    stored = import_base(file, trust=trust, allow_unsigned=allow_unsigned, name=name)
    info = base_info(stored)
    if info.signature_verified:
        how = f"signature by {info.signer} verified"
    elif info.signer:
        how = f"hashes verified; signed by {info.signer} but not checked (no --trust)"
    else:
        how = "hashes verified, unsigned"
    click.echo(f"Imported base {stored} ({how})")


@base.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(as_json: bool) -> None:
    """List the builtin and imported bases."""
    from edge_tl.bases.store import list_bases

    infos = list_bases()
    if as_json:
        click.echo(json.dumps([i.to_dict() for i in infos], indent=2))
        return
    if not infos:
        click.echo("No bases installed. Import one with `edge-tl base import FILE`.")
        return
    click.echo(f"{'NAME':<20} {'KIND':<8} {'SHAPE':<22} {'DTYPE':<5} {'SIZE':>9}  SIGNATURE")
    for i in infos:
        kind = "builtin" if i.builtin else "imported"
        if i.problem or i.model_cfg is None:
            click.echo(f"{i.name:<20} {kind:<8} BROKEN: {i.problem}")
            continue
        c = i.model_cfg
        shape = f"{c.vocab_size}v {c.emb_sz}e {c.n_hid}h {c.n_layers}l"
        sig = _signature_text(i)
        click.echo(f"{i.name:<20} {kind:<8} {shape:<22} {i.dtype:<5} {_mb(i.size):>9}  {sig}")


@base.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info_cmd(name: str, as_json: bool) -> None:
    """Describe one installed base."""
    from edge_tl.bases.store import base_info

    i = base_info(name)
    if as_json:
        click.echo(json.dumps(i.to_dict(), indent=2))
        return
    d = i.to_dict()
    rows = [
        ("name", i.name),
        ("kind", "builtin" if i.builtin else "imported"),
        ("path", d["path"]),
        ("size", f"{i.size:,} bytes"),
        ("sha256", i.sha256),
        ("created", i.created),
        ("tool", i.tool),
        ("dtype", i.dtype),
        ("model_config", json.dumps(d["model_config"])),
        ("parameters", f"{d['n_params']:,}" if d["n_params"] else None),
        ("description", i.description),
        ("corpus", i.corpus.get("description")),
        ("license", i.corpus.get("license")),
        ("signature", _signature_text(i)),
        ("imported", i.imported),
        ("source", i.source),
        ("problem", i.problem),
    ]
    for k, v in rows:
        if v not in (None, ""):
            click.echo(f"{k + ':':<14}{v}")


@base.command("verify")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@TRUST
@ALLOW_UNSIGNED
def verify_cmd(file: Path, trust: Path | None, allow_unsigned: bool) -> None:
    """Check a bundle exactly as `import` would, without importing it."""
    from edge_tl.bases.bundle import verify_bundle

    info = verify_bundle(file, trust=trust, allow_unsigned=allow_unsigned)
    c = info.model_cfg
    how = (
        f"signature by {info.signer} verified"
        if info.signature_verified
        else "hashes verified, signature not checked"
    )
    click.echo(
        f"OK {file.name}: base {info.manifest['name']}, {c.vocab_size} tokens, emb {c.emb_sz}, "
        f"hidden {c.n_hid}, {c.n_layers} layers, {info.manifest['weights']['dtype']}; {how}"
    )


@base.command("rm")
@click.argument("name")
def rm_cmd(name: str) -> None:
    """Remove an imported base."""
    from edge_tl.bases.store import remove_base

    remove_base(name)
    click.echo(f"Removed base {name}")


@base.command("keygen")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Private key file [default: EDGE_TL_HOME/keys/base-signing.key].",
)
@click.option("--force", is_flag=True, help="Overwrite an existing key.")
def keygen_cmd(out: Path | None, force: bool) -> None:
    """Make an Ed25519 key pair for signing bundles (keep the .key on the packing machine)."""
    from edge_tl.bases.signing import generate_keypair
    from edge_tl.store.home import subdir

    out = out or subdir("keys") / "base-signing.key"
    private, public, fp = generate_keypair(out, force=force)
    click.echo(f"Signing key {fp}\n  private: {private} (keep it secret)\n  public:  {public}")


@base.command("fetch")
@click.argument("source", type=click.Choice(["wt103"]))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("wt103.etlb"),
    show_default=True,
    help="Bundle file to write.",
)
@click.option("--name", default="wt103", show_default=True, help="Base name in the bundle.")
@click.option(
    "--sign-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Ed25519 private key from `base keygen`.",
)
def fetch_cmd(source: str, out: Path, name: str, sign_key: Path | None) -> None:
    """Download fastai's WT103 (connected machines only) and pack it; fails fast offline."""
    from edge_tl.bases.wt103 import fetch_wt103

    path = fetch_wt103(out, name=name, sign_key=sign_key)
    click.echo(f"Packed base {name} -> {path}; copy it to the device and `edge-tl base import` it")


# ---- `edge-tl base pretrain` (edge_tl/bases/pretrain.py) ----


@base.command("pretrain")
@click.option(
    "--corpus",
    "corpus",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Plain-text corpus file (txt, jsonl, jsonl.xz, csv); repeatable.",
)
@click.option(
    "--valid",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Held-out corpus file for perplexity (default: the tail of --corpus).",
)
@click.option(
    "--size",
    default="small",
    show_default=True,
    type=click.Choice(["tiny", "small", "medium", "wt103"]),
)
@click.option("--out", "name", required=True, help="Name of the new base in the store.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where checkpoints live (default: $EDGE_TL_HOME/runs/pretrain-NAME); "
    "rerun the same command to resume.",
)
@click.option("--max-tokens", type=int, default=None, help="Training tokens to see.")
@click.option(
    "--minutes",
    type=float,
    default=None,
    help="Training-time budget; the learning-rate schedule ends when it is spent.",
)
@click.option(
    "--bundle",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also keep the bundle file here (default: inside the workdir).",
)
@click.option(
    "--sign-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Ed25519 private key from `base keygen`.",
)
@click.option(
    "--device",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "cpu", "cuda"]),
    help="Where to train (auto: a CUDA GPU when torch sees one); a run may resume on another.",
)
def pretrain_cmd(
    corpus: tuple[Path, ...],
    valid: tuple[Path, ...],
    size: str,
    name: str,
    workdir: Path | None,
    max_tokens: int | None,
    minutes: float | None,
    bundle: Path | None,
    sign_key: Path | None,
    device: str,
) -> None:
    """Pretrain an AWD-LSTM base on plain text (resumable), then pack and import it."""
    import sys
    from dataclasses import replace

    from edge_tl.bases.pack import model_card, pack_result
    from edge_tl.bases.pretrain import PretrainConfig, pick_device, pretrain
    from edge_tl.bases.store import import_base
    from edge_tl.store.home import subdir

    cfg = PretrainConfig(size=size)
    if max_tokens is not None:
        cfg = replace(cfg, max_tokens=max_tokens)
    if minutes is not None:
        cfg = replace(cfg, time_budget_minutes=minutes)
    workdir = workdir or subdir("runs") / f"pretrain-{name}"
    dev = pick_device(device)
    result = pretrain(
        list(corpus), workdir, cfg, valid=list(valid) or None, log=click.echo, device=dev
    )
    if result is None:
        return
    desc = {
        "name": ", ".join(p.name for p in corpus),
        "description": "user corpus",
        "license": "see the corpus",
    }
    card = model_card(
        name, result, desc, "edge-tl " + " ".join(sys.argv[1:]), f"this machine ({dev})"
    )
    path = pack_result(
        result,
        bundle or workdir / f"{name}.etlb",
        name,
        corpus_desc=desc,
        card=card,
        sign_key=sign_key,
    )
    import_base(path, allow_unsigned=True, name=name)
    click.echo(
        f"Base {name}: perplexity {result.stats['valid_perplexity']}, bundle {path}, "
        "imported into the store"
    )


def _signature_text(i) -> str:  # noqa: ANN001 - BaseInfo, imported lazily
    if i.builtin:
        return "pinned builtin"
    if i.signer is None:
        return "unsigned"
    return f"{i.signer} ({'verified' if i.signature_verified else 'not checked'})"


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"
