"""`edge-tl predict`: classify texts with an exported model (onnxruntime only, no torch)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edge_tl.errors import DataError


def _read_lines(data: bytes, where: str) -> list[str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{where} is not UTF-8 text (bad byte at offset {e.start})",
            "convert it to UTF-8, one text per line",
        ) from e
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise DataError(f"{where} has no text", "give one text per line")
    return lines


@click.command("predict")
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("text", required=False)
@click.option(
    "--file",
    "-f",
    "file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Classify every non-empty line of this UTF-8 file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: labels and probabilities.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="onnxruntime threads.")
def predict(
    model_path: Path, text: str | None, file: Path | None, as_json: bool, threads: int | None
) -> None:
    """Classify TEXT, the lines of --file, or the lines of stdin (TEXT "-")."""
    if (text is None) == (file is None):
        raise click.UsageError('give exactly one of TEXT, "-" (stdin) or --file')
    if file is not None:
        try:
            data = file.read_bytes()
        except OSError as e:
            raise DataError(f"cannot read {file} ({e.strerror})", "check the path") from e
        texts = _read_lines(data, str(file))
    elif text == "-":
        texts = _read_lines(sys.stdin.buffer.read(), "standard input")
    else:
        texts = [text]

    from edge_tl.deploy.predict import Classifier

    clf = Classifier(model_path, threads=threads)
    preds = clf.predict(texts)
    if as_json:
        rows = [
            {"text": t, "label": p.label, "probs": p.probs}
            for t, p in zip(texts, preds, strict=True)
        ]
        click.echo(json.dumps(rows, ensure_ascii=False, indent=1))
        return
    for t, p in zip(texts, preds, strict=True):
        others = "  ".join(f"{k} {v:.4f}" for k, v in p.probs.items())
        preview = t if len(t) <= 60 else t[:57] + "..."
        click.echo(f"{p.label}\t{p.score:.4f}\t[{others}]\t{preview}")
