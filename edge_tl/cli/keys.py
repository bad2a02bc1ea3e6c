"""`edge-tl keys`: create and show the device identity."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ..errors import IdentityError

PASSPHRASE_FILE = click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Read the identity passphrase from the first line of this file.",
)


@click.group()
@PASSPHRASE_FILE
def keys(passphrase_file: Path | None) -> None:
    """Create and show the device identity that encrypts the data vault."""
    from .. import keys as keys_lib

    if passphrase_file is not None:
        keys_lib.set_passphrase_file(passphrase_file)
        click.get_current_context().call_on_close(lambda: keys_lib.set_passphrase_file(None))


@keys.command("init")
@click.option("--no-passphrase", is_flag=True, help="Store the identity unencrypted (mode 0600).")
@PASSPHRASE_FILE
def init(no_passphrase: bool, passphrase_file: Path | None) -> None:
    """Create the device identity (passphrase-protected unless --no-passphrase)."""
    from .. import keys as keys_lib

    if keys_lib.has_identity():
        keys_lib.init_identity(None)  # raises the "already exists" error
    passphrase: str | None = None
    if not no_passphrase:
        passphrase = _new_passphrase(passphrase_file)
    pub = keys_lib.init_identity(passphrase)
    click.echo(f"Created {keys_lib.identity_path()}")
    click.echo(f"Recipient: {pub}")
    click.echo("Back up identity.txt (and its passphrase): it is the only key to your vault.")


def _new_passphrase(passphrase_file: Path | None) -> str:
    from .. import keys as keys_lib

    if passphrase_file is not None:
        return keys_lib.read_passphrase_file(passphrase_file)
    env = os.environ.get(keys_lib.PASSPHRASE_ENV)
    if env:
        return env
    group_file = keys_lib.passphrase_file()
    if group_file is not None:
        return keys_lib.read_passphrase_file(group_file)
    if not sys.stdin.isatty():
        raise IdentityError(
            "no passphrase given for the new identity",
            f"set {keys_lib.PASSPHRASE_ENV}, pass --passphrase-file FILE, run in a terminal, "
            "or use --no-passphrase",
        )
    return click.prompt(
        "Passphrase for the new identity", hide_input=True, confirmation_prompt=True, err=True
    )


@keys.command("show")
def show() -> None:
    """Print the public recipient (age1…) that data owners encrypt to."""
    from .. import keys as keys_lib

    click.echo(keys_lib.recipient())
