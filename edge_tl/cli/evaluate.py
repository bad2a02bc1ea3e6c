"""`edge-tl evaluate`: score a stored model (torch) or an exported .onnx file (onnxruntime
alone) on labelled rows, with the same report."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .options import PASSPHRASE_FILE


def _is_export(model: str) -> bool:
    return model.endswith(".onnx") or Path(model).is_file()


@click.command()
@click.argument("model")
@click.option("--data", "data_name", default=None, help="Vault dataset with labelled rows.")
@click.option(
    "--file",
    "file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Or a labelled CSV/TSV/JSONL file (for an exported model).",
)
@click.option("--text-col", default="text", show_default=True, help="Text column of --file.")
@click.option("--label-col", default="label", show_default=True, help="Label column of --file.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a PNG: confusion matrix and per-class P/R/F1 (needs the training extra).",
)
@click.option(
    "--tfidf-weight",
    type=float,
    default=None,
    metavar="W",
    help="Score the mix at head weight W instead of the model's own (stacked or share).",
)
@PASSPHRASE_FILE
def evaluate(
    model: str,
    data_name: str | None,
    file: Path | None,
    text_col: str,
    label_col: str,
    as_json: bool,
    plot: Path | None,
    tfidf_weight: float | None,
) -> None:
    """Accuracy, per-class precision/recall/F1 and confusion matrix of MODEL (a stored model's
    name, or an exported MODEL.onnx) on --data or --file."""
    from edge_tl.metrics import format_report

    if (data_name is None) == (file is None):
        raise click.UsageError("give one of --data NAME or --file PATH")
    if _is_export(model):
        r = _evaluate_export(Path(model), data_name, file, text_col, label_col, tfidf_weight)
    else:
        if file is not None:
            raise click.UsageError("a stored model is evaluated on --data (a vault dataset)")
        from edge_tl.train.evaluate import evaluate_model

        r = evaluate_model(model, data_name, tfidf_weight=tfidf_weight)
    if plot is not None:
        from edge_tl.train.evaluate import save_plot

        save_plot(r, plot)
    click.echo(json.dumps(r, indent=2) if as_json else format_report(r))


def _evaluate_export(
    path: Path,
    data_name: str | None,
    file: Path | None,
    text_col: str,
    label_col: str,
    tfidf_weight: float | None,
) -> dict:
    """The report for an exported file, scored with onnxruntime (no torch is imported)."""
    from edge_tl.deploy.evaluate import evaluate_onnx, read_labelled
    from edge_tl.deploy.predict import Classifier

    clf = Classifier(path)
    if file is not None:
        texts, labels = read_labelled(file, text_col, label_col)
        where = {"file": str(file)}
    else:
        from edge_tl.store.datasets import open_dataset

        ds = open_dataset(data_name)
        texts, labels = ds.labelled()
        where = {"data": data_name, "dataset_fingerprint": ds.fingerprint}
    r = evaluate_onnx(clf, texts, labels, tfidf_weight=tfidf_weight)
    r.update(where)
    return r
