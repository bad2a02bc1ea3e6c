"""Options several commands share, each set up in one place."""

from __future__ import annotations

from pathlib import Path

import click


def _use_passphrase_file(ctx: click.Context, _param: click.Parameter, path: Path | None) -> None:
    """Unlock the identity from `path` for this command only (the CLI may run in-process)."""
    if path is None:
        return
    from edge_tl.store import keys as keys_lib  # lazy: the CLI imports a command's needs only

    before = keys_lib.set_passphrase_file(path)  # the root command's --passphrase-file, if any
    ctx.call_on_close(lambda: keys_lib.set_passphrase_file(before))


def use_home(ctx: click.Context, _param: click.Parameter, path: Path | None) -> None:
    """Use `path` as the store for this command (the CLI may run in-process)."""
    if path is None:
        return
    from edge_tl.store import home as home_lib

    home_lib.set_home(path)
    ctx.call_on_close(lambda: home_lib.set_home(None))


def _path_option(name: str, callback, help: str, **kind: bool):  # noqa: ANN001, ANN202
    """An eager option whose callback sets the value up for this command; not a parameter."""
    return click.option(
        name,
        type=click.Path(path_type=Path, **kind),
        default=None,
        expose_value=False,
        is_eager=True,
        callback=callback,
        help=help,
    )


HOME = _path_option(
    "--home", use_home, "Store folder [$EDGE_TL_HOME, else ~/.edge_tl].", file_okay=False
)
ROOT_PASSPHRASE_FILE = _path_option(
    "--passphrase-file",
    _use_passphrase_file,
    "Read the identity passphrase from the first line of this file, for any command "
    "[$EDGE_TL_PASSPHRASE_FILE].",
    dir_okay=False,
)
PASSPHRASE_FILE = _path_option(
    "--passphrase-file",
    _use_passphrase_file,
    "Read the identity passphrase from the first line of this file.",
    dir_okay=False,
)
