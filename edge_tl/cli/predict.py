"""`edge-tl predict`: classify texts with an exported model (onnxruntime only, no torch)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edge_tl.errors import DataError

PROVIDER_HELP = (
    "onnxruntime execution provider: cpu, cuda or tensorrt (with onnxruntime-gpu), or a full "
    "provider name; repeat to give a fallback order [cpu]."
)


@click.command("predict")
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("text", required=False)
@click.option(
    "--file",
    "-f",
    "file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Score a file: one text per line, or a .csv/.tsv/.jsonl file (optionally .gz).",
)
@click.option("--text-col", default="text", show_default=True, help="Text column of CSV/JSONL.")
@click.option(
    "--out",
    "-o",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the scored rows here (.csv, .tsv or .jsonl): every input column plus label "
    "and probabilities.",
)
@click.option("--jsonl", "as_jsonl", is_flag=True, help="Print one JSON object per text.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of all texts.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="onnxruntime threads.")
@click.option("--provider", "providers", multiple=True, metavar="NAME", help=PROVIDER_HELP)
def predict(
    model_path: Path,
    text: str | None,
    file: Path | None,
    text_col: str,
    out: Path | None,
    as_jsonl: bool,
    as_json: bool,
    threads: int | None,
    providers: tuple[str, ...],
) -> None:
    """Classify TEXT, the rows of --file, or the lines of stdin (TEXT "-")."""
    if (text is None) == (file is None):
        raise click.UsageError('give exactly one of TEXT, "-" (stdin) or --file')
    if as_json and as_jsonl:
        raise click.UsageError("--json and --jsonl: choose one")
    from edge_tl.deploy.batch import detect_format, open_input, read_rows, score_stream
    from edge_tl.deploy.predict import Classifier

    clf = Classifier(model_path, threads=threads, providers=list(providers) or None)
    if text is not None and text != "-":
        rows = iter([({"text": text}, text)])
        _emit(clf, score_stream(clf, rows), out, as_json, as_jsonl, "text")
        return
    fmt = detect_format(file)
    where = str(file) if file is not None else "standard input"
    with open_input(file) as stream:
        scored = score_stream(clf, read_rows(stream, fmt, text_col, where))
        n = _emit(clf, scored, out, as_json, as_jsonl, text_col)
    if n == 0:
        raise DataError(f"{where} has no text", "give one text per line")


def _write_all(w, scored) -> int:  # noqa: ANN001
    n = 0
    for row, label, probs in scored:
        w.write(row, label, probs)
        n += 1
    return n


def _emit(clf, scored, out: Path | None, as_json: bool, as_jsonl: bool, text_col: str) -> int:  # noqa: ANN001
    """Write scored rows to --out, or print them; the number of rows."""
    from edge_tl.deploy.batch import Writer, detect_format

    if out is not None:
        fmt = detect_format(out, default="")
        if fmt not in ("csv", "tsv", "jsonl"):
            raise click.UsageError("--out must end in .csv, .tsv or .jsonl")
        with out.open("w", encoding="utf-8", newline="") as f:
            n = _write_all(Writer(f, fmt, list(clf.labels)), scored)
        click.echo(f"scored {n} rows -> {out}", err=True)
        return n
    if as_jsonl:
        n = _write_all(Writer(sys.stdout, "jsonl", list(clf.labels)), scored)
        sys.stdout.flush()
        return n
    if as_json:  # one array: for a handful of texts
        rows = [{"text": r.get(text_col, ""), "label": lab, "probs": p} for r, lab, p in scored]
        click.echo(json.dumps(rows, ensure_ascii=False, indent=1))
        return len(rows)
    n = 0
    for row, label, probs in scored:
        t = str(row.get(text_col, ""))
        others = "  ".join(f"{k} {v:.4f}" for k, v in probs.items())
        preview = t if len(t) <= 60 else t[:57] + "..."
        click.echo(f"{label}\t{probs[label]:.4f}\t[{others}]\t{preview}")
        n += 1
    return n
