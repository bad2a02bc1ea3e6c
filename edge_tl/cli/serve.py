"""`edge-tl serve`: an exported model over HTTP (needs the serve extra: uvicorn, Starlette)."""

from __future__ import annotations

from pathlib import Path

import click

from .predict import PROVIDER_HELP


@click.command("serve")
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option(
    "--uds",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Listen on this Unix socket instead (for programs on the same device).",
)
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Require `Authorization: Bearer TOKEN`, TOKEN the file's first line (needed off "
    "loopback).",
)
@click.option("--max-batch", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--max-text-chars", type=click.IntRange(min=1), default=100_000, show_default=True)
@click.option("--max-body-bytes", type=click.IntRange(min=1), default=4 * 2**20, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Requests scored at once (one shared onnxruntime session).",
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="onnxruntime threads.")
@click.option("--provider", "providers", multiple=True, metavar="NAME", help=PROVIDER_HELP)
def serve(
    model_path: Path,
    host: str,
    port: int,
    uds: Path | None,
    token_file: Path | None,
    max_batch: int,
    max_text_chars: int,
    max_body_bytes: int,
    workers: int,
    threads: int | None,
    providers: tuple[str, ...],
) -> None:
    """Serve MODEL.onnx: POST /predict, GET /health, GET /metadata (Ctrl-C or SIGTERM stops)."""
    from edge_tl.deploy.serve import Limits
    from edge_tl.deploy.serve import serve as run_server

    limits = Limits(max_body_bytes, max_batch, max_text_chars, workers)
    run_server(
        model_path,
        host=host,
        port=port,
        uds=uds,
        token_file=token_file,
        threads=threads,
        providers=list(providers) or None,
        limits=limits,
    )
