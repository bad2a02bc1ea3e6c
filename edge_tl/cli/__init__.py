"""The `edge-tl` command: parses, calls the library, prints. One module per noun, loaded lazily
so that `edge-tl predict` never imports torch."""

from __future__ import annotations

import importlib
from typing import Any

import click

from edge_tl.errors import EdgeTLError

from .options import HOME, ROOT_PASSPHRASE_FILE

# A package missing from a slim install -> (the extra that brings it, what it is for).
_TRAIN = ("train", "the training stack (torch, fastai, scikit-learn)")
EXTRAS: dict[str, tuple[str, str]] = {
    **dict.fromkeys(
        (
            "torch",
            "fastai",
            "fastprogress",
            "sklearn",
            "onnx",
            "safetensors",
            "matplotlib",
            "cryptography",
            "spacy",
            "pandas",
        ),
        _TRAIN,
    ),
    **dict.fromkeys(("uvicorn", "starlette", "anyio"), ("serve", "the HTTP server (uvicorn)")),
    "flwr": ("fed", "federated learning (Flower)"),
}

# command name -> "module:attribute" under edge_tl.cli
COMMANDS: dict[str, str] = {
    "doctor": "doctor:doctor",
    "keys": "keys:keys",
    "data": "data:data",
    "base": "base:base",
    "train": "train:train",
    "evaluate": "evaluate:evaluate",
    "models": "models:models",
    "compare": "compare:compare",
    "export": "export:export",
    "predict": "predict:predict",
    "serve": "serve:serve",
    "fed": "fed:fed",
}


class LazyGroup(click.Group):
    """A click group that imports a sub-command's module only when it is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        try:
            mod = importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{module}":
                return None  # not built yet
            raise
        return getattr(mod, attr)

    def invoke(self, ctx: click.Context) -> Any:
        # The one error boundary: click prints ClickException as `Error: ...` and exits 1.
        try:
            return super().invoke(ctx)
        except EdgeTLError as e:
            raise click.ClickException(str(e)) from e
        except ModuleNotFoundError as e:
            extra = EXTRAS.get((e.name or "").split(".")[0])
            if extra is None:
                raise
            raise click.ClickException(
                f"this command needs {extra[1]}, which this install lacks ({e.name} is missing). "
                f"install it with `pip install 'edge_tl[{extra[0]}]'`"
            ) from e


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edge_tl")
@HOME
@ROOT_PASSPHRASE_FILE
def cli() -> None:
    """edge_tl: offline, privacy-first ULMFiT transfer learning for edge devices."""


def main() -> None:
    """Console entry point."""
    cli(prog_name="edge-tl")
