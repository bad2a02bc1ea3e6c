"""`edge-tl train` and `edge-tl evaluate`: parse flags, call edge_tl.train, print."""

from __future__ import annotations

import time
from pathlib import Path

import click

from edge_tl.errors import ConfigError
from edge_tl.train.config import TrainConfig

from .options import PASSPHRASE_FILE


def _stages(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        out = []
    if not out or any(x < 0 for x in out):
        raise ConfigError(
            f"--stages {text!r} is not a list of epoch counts", "write e.g. --stages 1,1,1,2"
        )
    return out


def _csv(xs: tuple[int, ...]) -> str:
    return ",".join(map(str, xs))


def _on(flag: bool) -> str:
    return "on" if flag else "off"


D = TrainConfig()  # the real defaults, shown in --help


@click.command()
@click.option("--data", "data_name", default=None, help="Vault dataset to train on.")
@click.option("--base", default=None, help="Base model to fine-tune [default].")
@click.option("--out", default=None, help="Name of the trained model in the store.")
@click.option("--profile", default=None, help="Device profile name or TOML path [auto].")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="TOML file of TrainConfig keys.",
)
@click.option("--scratch", is_flag=True, default=None, help="Random init (the control arm).")
@click.option("--lm-data", multiple=True, help="Extra unlabelled vault dataset(s) for the LM.")
@click.option("--lm-epochs", type=int, default=None, help=f"Unfrozen LM epochs [{D.lm_epochs}].")
@click.option("--stages", default=None, help=f"Classifier epochs per stage [{_csv(D.stages)}].")
@click.option("--lr", type=float, default=None, help=f"Peak classifier learning rate [{D.lr:g}].")
@click.option("--max-len", type=int, default=None, help=f"Tokens kept per document [{D.max_len}].")
@click.option("--bs", type=int, default=None, help="Classifier batch size [planner].")
@click.option(
    "--dtype",
    type=click.Choice(["auto", "bf16", "fp32", "fp16"]),
    default=None,
    help="Compute dtype [auto: bf16 autocast where native].",
)
@click.option("--seed", type=int, default=None, help=f"Random seed [{D.seed}].")
@click.option(
    "--tfidf-head/--no-tfidf-head",
    default=None,
    help=f"Also fit TF-IDF + LR and average it with the network [{_on(D.tfidf_head)}].",
)
@click.option(
    "--tfidf-weight",
    type=float,
    default=None,
    metavar="W",
    help="The head's share of the mix, 0 (network alone) to 1 (TF-IDF alone) "
    f"[with {D.tfidf_weight_min_rows} or more validation rows: chosen by log loss on them, and "
    "the mix stacked there (a logistic regression on both parts' log-odds, tfidf_stack "
    f"{_on(D.tfidf_stack)}); else {D.tfidf_weight:g}; giving W fixes the share, unstacked].",
)
@click.option(
    "--backward-base",
    default=None,
    metavar="BASE",
    help="A base pretrained on reversed text (shipped: default-bwd): also train a backward "
    "network and average both directions, ULMFiT's forward + backward; about twice the "
    "training time [off].",
)
@click.option(
    "--resume",
    "resume",
    default=None,
    metavar="MODEL",
    help="Continue the interrupted run of MODEL from its last checkpoint.",
)
@click.option(
    "--restart",
    is_flag=True,
    help="Start --out again from scratch, dropping the checkpoint its interrupted run left.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="CPU threads [the cores idle when the run starts].",
)
@click.option(
    "--quiet",
    is_flag=True,
    help="No progress output (bars on a terminal, one line per epoch otherwise).",
)
@PASSPHRASE_FILE
def train(
    data_name,
    base,
    out,
    profile,
    config_file,
    scratch,
    lm_data,
    lm_epochs,
    stages,
    lr,
    max_len,
    bs,
    dtype,
    seed,
    tfidf_head,
    tfidf_weight,
    backward_base,
    resume,
    restart,
    threads,
    quiet,
) -> None:
    """Fine-tune a base on a vault dataset (ULMFiT) and store the classifier as --out."""
    t0 = time.perf_counter()

    flags = {
        "scratch": scratch,
        "lm_epochs": lm_epochs,
        "lr": lr,
        "max_len": max_len,
        "bs": bs,
        "dtype": dtype,
        "seed": seed,
        "tfidf_head": tfidf_head,
        "tfidf_weight": tfidf_weight,
        "backward_base": backward_base,
        "threads": threads,
    }
    if stages is not None:
        flags["stages"] = _stages(stages)
    flags = {k: v for k, v in flags.items() if v is not None}
    if tfidf_weight is not None:  # a weight given is used as given, not chosen on data
        flags["tfidf_weight_auto"] = False
    name = resume if resume is not None else out
    try:
        m = _run_training(
            data_name, base, out, profile, config_file, lm_data, flags, resume, restart, quiet
        )
    except KeyboardInterrupt:
        _interrupted(name)
        raise click.exceptions.Exit(130) from None
    acc = m.metrics.get("accuracy", float("nan"))
    parts = ""
    if "neural_accuracy" in m.metrics:
        how = (
            "stacked on the validation rows"
            if m.metrics.get("tfidf_mix") == "stacked"
            else f"mixed at head weight {m.metrics['tfidf_weight']:g}"
        )
        parts = (
            f" (network {m.metrics['neural_accuracy']:.4f}, TF-IDF head "
            f"{m.metrics['tfidf_accuracy']:.4f}, {how})"
        )
    rows = f"{m.metrics.get('valid_rows', 0)} rows"
    if m.metrics.get("valid_in_sample"):  # too few to choose anything: the network learnt them
        rows += ", which the network also trained on: optimistic"
    click.echo(
        f"saved model {m.name!r}: validation accuracy {acc:.4f}{parts} "
        f"({rows}); trained in "
        f"{(time.perf_counter() - t0) / 60:.1f} min"
    )


def _run_training(
    data_name, base, out, profile, config_file, lm_data, flags, resume, restart, quiet
):
    """Start a run (or continue one with --resume) and return the stored model."""
    from edge_tl.train.runner import train_from_vault
    from edge_tl.train.settings import as_profile, resolve_config

    if resume is not None:
        given = [
            f
            for f, v in (
                ("--data", data_name),
                ("--base", base),
                ("--config", config_file),
                ("--lm-data", lm_data),
                ("--restart", restart),
                *((f"--{k.replace('_', '-')}", 1) for k in flags),
            )
            if v
        ]
        if given or (out is not None and out != resume):
            raise click.UsageError(
                f"--resume continues with the run's own settings; drop {(given or ['--out'])[0]}"
            )
        return train_from_vault(
            None, None, resume, resume=True, profile=profile, progress=not quiet, echo=click.echo
        )
    if data_name is None or out is None:
        raise click.UsageError("--data and --out are required (or --resume MODEL)")
    prof = as_profile(profile)
    cfg = resolve_config(prof, flags, config_file=config_file)
    return train_from_vault(
        data_name,
        base,
        out,
        cfg,
        lm_data=list(lm_data),
        profile=prof,
        progress=not quiet,
        echo=click.echo,
        restart=restart,
    )


def _interrupted(name: str | None) -> None:
    """After Ctrl-C: how to continue (the last checkpoint survives an interrupt)."""
    from edge_tl.store.checkpoints import checkpoint_path

    if name is not None and checkpoint_path(name).exists():
        click.echo(
            f"\nInterrupted. Continue from the last checkpoint with: edge-tl train --resume {name}",
            err=True,
        )
    else:
        click.echo(
            "\nInterrupted before the first checkpoint; nothing to resume. Run the same "
            "command again to start over.",
            err=True,
        )
