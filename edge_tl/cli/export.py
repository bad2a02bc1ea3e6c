"""`edge-tl export`: write a trained model as ONNX (one file, or graph + weights file)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from edge_tl.tfidf_head import MIN_DOCS

if TYPE_CHECKING:
    from edge_tl.deploy.artefact import ModelMeta


@click.command("export")
@click.argument("model")
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the .onnx file.",
)
@click.option(
    "--quantize",
    type=click.Choice(["int8"]),
    default=None,
    help="Dynamic int8 quantization (about 4x smaller, faster on CPU).",
)
@click.option("--encrypt", is_flag=True, help="Age-encrypt the file for this device.")
@click.option(
    "--vocab",
    "vocab_mode",
    type=click.Choice(["base", "full"]),
    default="base",
    show_default=True,
    help="base: keep no string seen only in your data (tokens outside the base's vocabulary, "
    "rare n-grams); full: write the whole fine-tuned vocabulary and every n-gram.",
)
@click.option(
    "--min-docs",
    type=click.IntRange(min=1),
    default=MIN_DOCS,
    show_default=True,
    help="With --vocab base: keep a TF-IDF n-gram only if this many training texts hold it.",
)
@click.option(
    "--external-data/--one-file",
    default=None,
    help="Weights in OUT.data beside the graph (memory-mapped: a faster start), or everything "
    "in one file [default: two files for a model over 64 MiB that is not --encrypt-ed].",
)
@click.option(
    "--no-tfidf-head",
    "no_head",
    is_flag=True,
    help="Leave out the model's TF-IDF head: the network alone (format version 1).",
)
@click.option(
    "--tfidf-weight",
    type=float,
    default=None,
    metavar="W",
    help="Mix the head at W: 0 = network alone, 1 = TF-IDF alone, instead of the model's own "
    "mix [its stacked mix, else its share; `evaluate` shows accuracy across weights].",
)
def export(
    model: str,
    out: Path,
    quantize: str | None,
    encrypt: bool,
    vocab_mode: str,
    min_docs: int,
    external_data: bool | None,
    no_head: bool,
    tfidf_weight: float | None,
) -> None:
    """Export trained model MODEL (a store name) to ONNX for `edge-tl predict`."""
    from edge_tl.deploy.export import export_onnx, private_counts
    from edge_tl.store.models import load_model

    trained = load_model(model)
    if vocab_mode == "full":
        n = private_counts(trained, min_docs)
        what = (
            f"{n['tokens']:,} tokens and {n['ngrams']:,} TF-IDF n-grams seen only in your data "
            f"(outside the base's vocabulary, or n-grams in fewer than {min_docs} texts)"
            if n is not None
            else f"the whole vocabulary (base {trained.base!r} is not here to tell which words "
            "are private)"
        )
        click.echo(f"--vocab full: writing {what}; whoever gets the file can read them", err=True)
    path = export_onnx(
        trained,
        out,
        quantize=quantize,
        encrypt=encrypt,
        vocab=vocab_mode,
        min_docs=min_docs,
        external_data=external_data,
        tfidf_head=not no_head,
        tfidf_weight=tfidf_weight,
    )
    size = path.stat().st_size / 2**20
    meta = _written_metadata(path)  # what left, not what the model has
    notes = [n for n in (quantize, "encrypted" if encrypt else None, f"vocab {vocab_mode}") if n]
    if trained.tfidf_head is not None and not no_head:
        w = trained.tfidf_head.weight if tfidf_weight is None else tfidf_weight
        n_grams = 0 if meta.tfidf is None else len(meta.tfidf["features"])
        mix = "stacked" if meta.mix == "stacked" else f"weight {w:g}"
        notes.append(f"TF-IDF head, {n_grams:,} n-grams, {mix}")
    if meta.external_data is not None:
        data = path.with_name(f"{path.name}.data")
        notes.append(f"weights in {data.name}, {data.stat().st_size / 2**20:.1f} MiB: ship both")
    click.echo(f"Exported {model} to {path} ({size:.1f} MiB, {', '.join(notes)})")


def _written_metadata(path: Path) -> ModelMeta:
    """The edge_tl metadata of the file just written (decrypted in memory if need be)."""
    import onnx

    from edge_tl.deploy.artefact import read_metadata, read_model_bytes

    props = onnx.load_from_string(read_model_bytes(path)).metadata_props
    return read_metadata({p.key: p.value for p in props})
