"""`edge-tl train` and `edge-tl evaluate`: parse flags, call edge_tl.train / evaluate, print."""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigError
from .keys import PASSPHRASE_FILE


def _passphrase(passphrase_file: Path | None) -> None:
    if passphrase_file is not None:
        from .. import keys as keys_lib

        keys_lib.set_passphrase_file(passphrase_file)


def _stages(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        out = []
    if not out or any(x < 0 for x in out):
        raise ConfigError(f"--stages {text!r} is not a list of epoch counts",
                          "write e.g. --stages 1,1,1,2")  # fmt: skip
    return out


def config_file_overrides(path: Path) -> dict[str, Any]:
    """TrainConfig keys from a TOML file (top level or a [train] table)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read train config {path}: {e}") from e
    return data.get("train", data)


@click.command()
@click.option("--data", "data_name", default=None, help="Vault dataset to train on.")
@click.option("--base", default=None, help="Base model to fine-tune [default].")
@click.option("--out", default=None, help="Name of the trained model in the store.")
@click.option("--profile", default=None, help="Device profile name or TOML path [auto].")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), default=None, help="TOML file of TrainConfig keys.")  # fmt: skip
@click.option("--scratch", is_flag=True, default=None, help="Random init (the control arm).")
@click.option("--lm-data", multiple=True, help="Extra unlabelled vault dataset(s) for the LM.")
@click.option("--lm-epochs", type=int, default=None, help="Unfrozen LM epochs [1].")
@click.option("--stages", default=None, help="Classifier epochs per stage [1,1,1,2].")
@click.option("--lr", type=float, default=None, help="Peak classifier learning rate [0.02].")
@click.option("--max-len", type=int, default=None, help="Tokens kept per document [1440].")
@click.option("--bs", type=int, default=None, help="Classifier batch size [planner].")
@click.option("--dtype", type=click.Choice(["auto", "bf16", "fp32", "fp16"]), default=None,
              help="Compute dtype [auto: bf16 autocast where native].")  # fmt: skip
@click.option("--seed", type=int, default=None, help="Random seed [42].")
@click.option("--tfidf-head/--no-tfidf-head", default=None,
              help="Also fit TF-IDF + LR and average it with the network [on].")
@click.option("--tfidf-weight", type=float, default=None, metavar="W",
              help="The head's share of the mix, 0 (network alone) to 1 (TF-IDF alone) [0.5].")
@click.option("--resume", "resume", default=None, metavar="MODEL",
              help="Continue the interrupted run of MODEL from its last checkpoint.")  # fmt: skip
@click.option("--quiet", is_flag=True, help="No progress bars.")
@PASSPHRASE_FILE
def train(data_name, base, out, profile, config_file, scratch, lm_data, lm_epochs, stages, lr,
          max_len, bs, dtype, seed, tfidf_head, tfidf_weight, resume, quiet,
          passphrase_file) -> None:  # fmt: skip
    """Fine-tune a base on a vault dataset (ULMFiT) and store the classifier as --out."""
    t0 = time.perf_counter()
    from ..train import resolve_config, train_from_vault

    _passphrase(passphrase_file)
    flags = {"scratch": scratch, "lm_epochs": lm_epochs, "lr": lr, "max_len": max_len,
             "bs": bs, "dtype": dtype, "seed": seed, "tfidf_head": tfidf_head,
             "tfidf_weight": tfidf_weight}  # fmt: skip
    if stages is not None:
        flags["stages"] = _stages(stages)
    flags = {k: v for k, v in flags.items() if v is not None}
    if resume is not None:
        given = [f for f, v in (("--data", data_name), ("--base", base), ("--config", config_file),
                                ("--lm-data", lm_data), *((f"--{k}", 1) for k in flags)) if v]
        if given or (out is not None and out != resume):
            raise click.UsageError(f"--resume continues with the run's own settings; drop "
                                   f"{(given or ['--out'])[0]}")  # fmt: skip
        m = train_from_vault(None, None, resume, resume=True, profile=profile,
                             progress=not quiet, echo=click.echo)  # fmt: skip
    else:
        if data_name is None or out is None:
            raise click.UsageError("--data and --out are required (or --resume MODEL)")
        overrides = config_file_overrides(config_file) if config_file else {}
        overrides.update(flags)
        prof = None
        if profile is not None:
            from ..profiles import load_profile

            prof = load_profile(profile)
        cfg = resolve_config(prof, overrides)
        m = train_from_vault(data_name, base, out, cfg, lm_data=list(lm_data), profile=prof,
                             progress=not quiet, echo=click.echo)  # fmt: skip
    acc = m.metrics.get("accuracy", float("nan"))
    parts = ""
    if "neural_accuracy" in m.metrics:
        parts = (f" (network {m.metrics['neural_accuracy']:.4f}, TF-IDF head "
                 f"{m.metrics['tfidf_accuracy']:.4f}, mixed at head weight "
                 f"{m.metrics['tfidf_weight']:g})")  # fmt: skip
    click.echo(f"saved model {m.name!r}: validation accuracy {acc:.4f}{parts} "
               f"({m.metrics.get('valid_rows', 0)} rows); trained in "
               f"{(time.perf_counter() - t0) / 60:.1f} min")  # fmt: skip


@click.command()
@click.argument("model")
@click.option("--data", "data_name", required=True, help="Vault dataset with labelled rows.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a PNG: confusion matrix and per-class P/R/F1.")
@click.option("--tfidf-weight", type=float, default=None, metavar="W",
              help="Score the mix at head weight W instead of the model's own.")
@PASSPHRASE_FILE
def evaluate(model: str, data_name: str, as_json: bool, plot: Path | None,
             tfidf_weight: float | None, passphrase_file: Path | None) -> None:
    """Accuracy, per-class precision/recall/F1 and confusion matrix of MODEL on --data."""
    from ..evaluate import evaluate_model, format_report, save_plot

    _passphrase(passphrase_file)
    r = evaluate_model(model, data_name, tfidf_weight=tfidf_weight)
    if plot is not None:
        save_plot(r, plot)
    click.echo(json.dumps(r, indent=2) if as_json else format_report(r))
