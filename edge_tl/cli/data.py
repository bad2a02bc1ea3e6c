"""`edge-tl data`: import sources into the encrypted vault, list, inspect, split, remove."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edge_tl.errors import DataError

from .options import PASSPHRASE_FILE


@click.group()
@PASSPHRASE_FILE
def data() -> None:
    """Encrypted datasets: import, list, info, head, split, rm."""


@data.command("import")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--name", required=True, help="Name of the new dataset.")
@click.option("--text-col", default=None, help="Column (or JSON key) with the text [text].")
@click.option("--label-col", default=None, help="Column (or JSON key) with the label [label].")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "tsv", "jsonl", "folder"]),
    default=None,
    help="Source format (default: from the file name).",
)
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of the source.")
@click.option("--skip-empty", is_flag=True, help="Drop rows whose text is empty.")
@click.option(
    "--unlabelled",
    is_flag=True,
    help="The CSV/TSV has no label column on purpose: import the texts unlabelled (LM data).",
)
def import_(
    source: Path,
    name: str,
    text_col: str | None,
    label_col: str | None,
    fmt: str | None,
    encoding: str,
    skip_empty: bool,
    unlabelled: bool,
) -> None:
    """Import SOURCE (CSV, TSV, JSONL, a folder of .txt per label; .gz/.xz/.age too)."""
    from edge_tl.store.datasets import import_source

    rep = import_source(
        source,
        name,
        fmt=fmt,
        text_col=text_col,
        label_col=label_col,
        encoding=encoding,
        progress=sys.stdout.isatty(),
        skip_empty=skip_empty,
        unlabelled=unlabelled,
    )
    info = rep.info
    mb = rep.info.records_bytes / 1e6
    click.echo(
        f"Imported {info.rows:,} rows into {name!r} in {rep.seconds:.1f} s "
        f"({mb:.1f} MB of text, {mb / max(rep.seconds, 1e-9):.1f} MB/s)"
    )
    _print_counts(info.label_counts, info.unlabelled)
    if rep.skipped_empty:
        click.echo(f"Skipped {rep.skipped_empty:,} empty texts")


def _print_counts(counts: dict[str, int], unlabelled: int) -> None:
    rows = [(lab, n) for lab, n in sorted(counts.items())]
    if unlabelled:
        rows.append(("(unlabelled)", unlabelled))
    width = max((len(lab) for lab, _ in rows), default=0)
    for lab, n in rows:
        click.echo(f"  {lab:<{width}}  {n:>9,}")


@data.command("list")
def list_() -> None:
    """List the datasets in the vault."""
    from edge_tl.store.datasets import list_datasets

    infos = list_datasets()
    if not infos:
        click.echo("No datasets yet. Import one with `edge-tl data import SOURCE --name NAME`.")
        return
    width = max(len("NAME"), *(len(i.name) for i in infos))
    click.echo(f"{'NAME':<{width}}  {'ROWS':>9}  {'LABELS':<24}  CREATED")
    for i in infos:
        labels = ",".join(i.labels) if i.labels else "(unlabelled)"
        if len(labels) > 24:
            labels = labels[:21] + "..."
        click.echo(f"{i.name:<{width}}  {i.rows:>9,}  {labels:<24}  {i.created}")


@data.command("info")
@click.argument("name")
def info(name: str) -> None:
    """Show rows per label, size and fingerprint of a dataset."""
    from edge_tl.store.datasets import dataset_info

    i = dataset_info(name)
    click.echo(f"name:        {i.name}")
    click.echo(f"rows:        {i.rows:,}")
    click.echo(f"source:      {i.source}")
    click.echo(f"created:     {i.created}")
    click.echo(
        f"text size:   {i.records_bytes / 1e6:.1f} MB ({i.file_bytes / 1e6:.1f} MB encrypted)"
    )
    click.echo(f"fingerprint: {i.fingerprint}")
    click.echo(f"vault file:  vault/{i.id}.age")
    click.echo("labels:")
    _print_counts(i.label_counts, i.unlabelled)


@data.command("head")
@click.argument("name")
@click.option("-n", "n", default=5, show_default=True, type=click.IntRange(min=0))
@click.option(
    "--width",
    default=200,
    show_default=True,
    type=click.IntRange(min=10),
    help="Cut texts longer than this many characters.",
)
def head(name: str, n: int, width: int) -> None:
    """Print the first N rows of a dataset (decrypted in memory)."""
    from edge_tl.store.datasets import open_dataset

    ds = open_dataset(name)
    for text, label in list(zip(ds.texts, ds.labels, strict=True))[:n]:
        one_line = " ".join(text.split())
        if len(one_line) > width:
            one_line = one_line[: width - 3] + "..."
        click.echo(f"{label if label is not None else '-'}\t{one_line}")


@data.command("rm")
@click.argument("name")
def rm(name: str) -> None:
    """Remove a dataset and its vault file."""
    from edge_tl.store.datasets import remove_dataset

    info = remove_dataset(name)
    click.echo(f"Removed dataset {name!r} ({info.rows:,} rows)")


@data.command("reindex")
def reindex() -> None:
    """Rebuild the encrypted index from the vault files (after losing it or restoring files)."""
    from edge_tl.store.datasets import rebuild_index

    rep = rebuild_index()
    click.echo(f"The index lists {rep.listed:,} datasets")
    for file, name, now in rep.adopted:
        moved = f", renamed to vault/{now}" if now != file else ""
        click.echo(f"  adopted vault/{file} as {name!r}{moved}")
    for file, why in rep.skipped:
        click.echo(f"  left out vault/{file}: it {why}", err=True)
    if rep.skipped:
        click.echo(
            "Files left out stay in the vault untouched: restore damaged ones from a backup; "
            "`edge-tl doctor --check-store` lists them again",
            err=True,
        )


@data.command("split")
@click.argument("name")
@click.option("--sizes", required=True, help="Comma-separated subset sizes, e.g. 500,1000,5000.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the row indexes as JSON.")
def split(name: str, sizes: str, seed: int, as_json: bool) -> None:
    """Stratified nested subsets of the labelled rows (each inside the next larger)."""
    from edge_tl.store.datasets import open_dataset, stratified_nested_subsets

    try:
        wanted = [int(s) for s in sizes.split(",") if s.strip()]
    except ValueError:
        raise DataError(
            f"--sizes {sizes!r} is not a list of integers", "e.g. --sizes 500,1000"
        ) from None
    if not wanted:
        raise DataError("--sizes is empty", "e.g. --sizes 500,1000")
    labels = open_dataset(name).labels
    subsets = stratified_nested_subsets(labels, wanted, seed)
    if as_json:
        click.echo(json.dumps({str(k): v for k, v in subsets.items()}))
        return
    for size in sorted(subsets):
        counts: dict[str, int] = {}
        for i in subsets[size]:
            lab = labels[i]
            counts[lab] = counts.get(lab, 0) + 1  # type: ignore[index]
        parts = ", ".join(f"{lab} {c:,}" for lab, c in sorted(counts.items()))
        click.echo(f"{size:>9,}: {parts}")
