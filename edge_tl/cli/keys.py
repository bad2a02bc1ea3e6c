"""`edge-tl keys`: create and show the device identity."""

from __future__ import annotations

import os
import sys

import click

from edge_tl.errors import IdentityError

from .options import PASSPHRASE_FILE


@click.group()
@PASSPHRASE_FILE
def keys() -> None:
    """Create and show the device identity that encrypts the data vault."""


@keys.command("init")
@click.option("--no-passphrase", is_flag=True, help="Store the identity unencrypted (mode 0600).")
@click.option(
    "--force-new",
    is_flag=True,
    help="The old identity is lost for good: start over, moving the files encrypted to it "
    "(vault, models, checkpoints) aside.",
)
@PASSPHRASE_FILE
def init(no_passphrase: bool, force_new: bool) -> None:
    """Create the device identity (passphrase-protected unless --no-passphrase)."""
    from edge_tl.store import keys as keys_lib

    # Before asking for a passphrase: an identity exists, or one was lost with files
    # encrypted to it (refused unless --force-new).
    orphans = keys_lib.check_new_identity(force_new)
    passphrase: str | None = None
    if not no_passphrase:
        passphrase = _new_passphrase()
    aside = keys_lib.set_aside(orphans) if orphans else None
    pub = keys_lib.init_identity(passphrase)
    if aside is not None:
        click.echo(
            f"Moved {keys_lib.describe_files(orphans)}, encrypted to the lost identity, to "
            f"{aside}: the new identity cannot read them; they stay there in case the old "
            "identity.txt turns up",
            err=True,
        )
    click.echo(f"Created {keys_lib.identity_path()}")
    click.echo(f"Recipient: {pub}")
    click.echo("Back up identity.txt (and its passphrase): it is the only key to your vault.")


def _new_passphrase() -> str:
    from edge_tl.store import keys as keys_lib

    given = keys_lib.passphrase_file()  # --passphrase-file, set up by its option
    if given is not None:
        return keys_lib.read_passphrase_file(given)
    env = os.environ.get(keys_lib.PASSPHRASE_ENV)
    if env:
        return env
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
    from edge_tl.store import keys as keys_lib

    click.echo(keys_lib.recipient())
