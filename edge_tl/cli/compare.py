"""`edge-tl compare`: parse flags, call edge_tl.compare.run_compare, print where the results are."""

from __future__ import annotations

import re
from pathlib import Path

import click

from ..errors import ConfigError
from .keys import PASSPHRASE_FILE
from .train import config_file_overrides

DEFAULT_SIZES = "500,1000,2500,5000,10000,20000"


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        out = ()
    if not out:
        raise ConfigError(f"{flag} {text!r} is not a comma-separated list of whole numbers",
                          f"write e.g. {flag} 500,1000")  # fmt: skip
    return out


@click.command()
@click.option("--data", "data_name", required=True, help="Labelled vault dataset to subsample.")
@click.option("--test", "test_name", required=True, help="Labelled vault dataset to test on.")
@click.option("--sizes", default=DEFAULT_SIZES, show_default=True, help="Training sizes.")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Number of seeds (0, 1, ...).")  # fmt: skip
@click.option("--seed-list", default=None, help="Explicit seeds, e.g. 7,8,9 (overrides --seeds).")
@click.option("--protocol", type=click.Choice(["supervised", "semi", "both"]),
              default="supervised", show_default=True,
              help="LM fine-tuning on the N texts only, or once on all text (semi).")  # fmt: skip
@click.option("--arms", default="transfer,scratch,tfidf", show_default=True,
              help="Which arms to run.")  # fmt: skip
@click.option("--base", default="default", show_default=True, help="Base of the transfer arm.")
@click.option("--lm-data", multiple=True, help="Unlabelled vault dataset(s) for the semi LM.")
@click.option("--test-rows", type=click.IntRange(min=0), default=0,
              help="Stratified test subset (fixed) [0 = all].")  # fmt: skip
@click.option("--budget-minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Drop sizes, then seeds, then test rows until the estimate fits.")  # fmt: skip
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Results folder [./compare-<data>].")  # fmt: skip
@click.option("--profile", default=None, help="Device profile name or TOML path [auto].")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), default=None, help="TOML file of TrainConfig keys.")  # fmt: skip
@click.option("--references", type=click.Choice(["none", "imdb"]), default="none",
              show_default=True, help="Published IMDb curves drawn beside ours.")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Print the plan and the estimate, run nothing.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@PASSPHRASE_FILE
def compare(data_name, test_name, sizes, seeds, seed_list, protocol, arms, base, lm_data,
            test_rows, budget_minutes, out_dir, profile, config_file, references, dry_run,
            quiet, passphrase_file) -> None:  # fmt: skip
    """Transfer vs scratch vs TF-IDF learning curve: resumable; results.json, tables, plot."""
    from ..compare import run_compare
    from ..compare_plan import ComparePlan
    from ..train import resolve_config

    if passphrase_file is not None:
        from .. import keys as keys_lib

        keys_lib.set_passphrase_file(passphrase_file)
    arm_list = tuple(a.strip() for a in arms.split(",") if a.strip())
    plan = ComparePlan(
        data=data_name, test=test_name, sizes=_ints(sizes, "--sizes"),
        seeds=_ints(seed_list, "--seed-list") if seed_list else tuple(range(seeds)),
        protocols=("supervised", "semi") if protocol == "both" else (protocol,),
        arms=arm_list, base=base, lm_data=tuple(lm_data), test_rows=test_rows,
        references=references,
    )  # fmt: skip
    prof = None
    if profile is not None:
        from ..profiles import load_profile

        prof = load_profile(profile)
    cfg = resolve_config(prof, config_file_overrides(config_file) if config_file else {})
    out = out_dir or Path(f"compare-{re.sub(r'[^A-Za-z0-9._-]', '_', data_name)}")
    doc = run_compare(plan, cfg, out, profile=prof, budget_minutes=budget_minutes,
                      dry_run=dry_run, progress=not quiet, echo=click.echo)  # fmt: skip
    if dry_run:
        click.echo("dry run: nothing trained")
        return
    click.echo(f"{len(doc['runs'])} runs in {out / 'results.json'}; table: {out / 'table.md'}, "
               f"plot: {out / 'curve.png'}")  # fmt: skip
