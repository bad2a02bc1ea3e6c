"""`edge-tl compare`: parse flags, call edge_tl.compare.run.run_compare, print where results are."""

from __future__ import annotations

import re
from pathlib import Path

import click

from edge_tl.errors import ConfigError

from .options import PASSPHRASE_FILE

DEFAULT_SIZES = "500,1000,2500,5000,10000,20000"


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        out = ()
    if not out:
        raise ConfigError(
            f"{flag} {text!r} is not a comma-separated list of whole numbers",
            f"write e.g. {flag} 500,1000",
        )
    return out


@click.command()
@click.option("--data", "data_name", required=True, help="Labelled vault dataset to subsample.")
@click.option("--test", "test_name", required=True, help="Labelled vault dataset to test on.")
@click.option("--sizes", default=DEFAULT_SIZES, show_default=True, help="Training sizes.")
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Number of seeds (0, 1, ...).",
)
@click.option("--seed-list", default=None, help="Explicit seeds, e.g. 7,8,9 (overrides --seeds).")
@click.option(
    "--protocol",
    type=click.Choice(["supervised", "semi", "both"]),
    default="supervised",
    show_default=True,
    help="LM fine-tuning on the N texts only, or once on all text (semi).",
)
@click.option(
    "--arms",
    default="transfer,scratch,tfidf",
    show_default=True,
    help="Which arms to run: transfer, scratch, tfidf, train (what `train` ships: network + head).",
)
@click.option("--base", default="default", show_default=True, help="Base of the transfer arm.")
@click.option("--lm-data", multiple=True, help="Unlabelled vault dataset(s) for the semi LM.")
@click.option(
    "--test-rows",
    type=click.IntRange(min=0),
    default=0,
    help="Stratified test subset (fixed) [0 = all].",
)
@click.option(
    "--budget-minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Drop sizes, then seeds, then test rows until the estimate fits.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Results folder [./compare-<data>].",
)
@click.option("--profile", default=None, help="Device profile name or TOML path [auto].")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="TOML file of TrainConfig keys.",
)
@click.option(
    "--references",
    type=click.Choice(["none", "imdb"]),
    default="none",
    show_default=True,
    help="Published IMDb curves drawn beside ours.",
)
@click.option("--dry-run", is_flag=True, help="Print the plan and the estimate, run nothing.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@PASSPHRASE_FILE
def compare(
    data_name,
    test_name,
    sizes,
    seeds,
    seed_list,
    protocol,
    arms,
    base,
    lm_data,
    test_rows,
    budget_minutes,
    out_dir,
    profile,
    config_file,
    references,
    dry_run,
    quiet,
) -> None:
    """Transfer vs scratch vs TF-IDF learning curve: resumable; results.json, tables, plot."""
    from edge_tl.compare.plan import ComparePlan
    from edge_tl.compare.run import run_compare
    from edge_tl.train.settings import as_profile, resolve_config

    arm_list = tuple(a.strip() for a in arms.split(",") if a.strip())
    plan = ComparePlan(
        data=data_name,
        test=test_name,
        sizes=_ints(sizes, "--sizes"),
        seeds=_ints(seed_list, "--seed-list") if seed_list else tuple(range(seeds)),
        protocols=("supervised", "semi") if protocol == "both" else (protocol,),
        arms=arm_list,
        base=base,
        lm_data=tuple(lm_data),
        test_rows=test_rows,
        references=references,
    )
    prof = as_profile(profile)
    cfg = resolve_config(prof, config_file=config_file)
    out = out_dir or Path(f"compare-{re.sub(r'[^A-Za-z0-9._-]', '_', data_name)}")
    doc = run_compare(
        plan,
        cfg,
        out,
        profile=prof,
        budget_minutes=budget_minutes,
        dry_run=dry_run,
        progress=not quiet,
        echo=click.echo,
    )
    if dry_run:
        click.echo("dry run: nothing trained")
        return
    click.echo(
        f"{len(doc['runs'])} runs in {out / 'results.json'}; table: {out / 'table.md'}, "
        f"plot: {out / 'curve.png'}"
    )
