"""`edge-tl models`: list, inspect and remove trained models in the encrypted store."""

from __future__ import annotations

import json

import click

from .options import PASSPHRASE_FILE


@click.group()
@PASSPHRASE_FILE
def models() -> None:
    """Trained models: list, info, rm."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(as_json: bool) -> None:
    """List the stored models."""
    from edge_tl.store.models import list_models

    names = list_models()
    if as_json:
        click.echo(json.dumps(names))
    elif not names:
        click.echo("no models yet: train one with `edge-tl train --data NAME --out MODEL`")
    else:
        click.echo("\n".join(names))


@models.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(name: str, as_json: bool) -> None:
    """Show a model's labels, base, dataset fingerprint, config and metrics."""
    from edge_tl.store.models import model_info

    d = model_info(name)
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    m = d["metrics"]
    cfg = d["model_cfg"]
    click.echo(
        f"name:        {d['name']}\nlabels:      {', '.join(d['labels'])}\n"
        f"base:        {d['base'] or '(scratch)'}\n"
        f"data:        {d['dataset_fingerprint']}\ncreated:     {d['created']}\n"
        f"shape:       vocab {cfg['vocab_size']}, emb {cfg['emb_sz']}, hidden "
        f"{cfg['n_hid']}, {cfg['n_layers']} layers ({d['parameters']:,} parameters)\n"
        f"accuracy:    {m.get('accuracy', float('nan')):.4f} on {m.get('n', 0)} "
        f"validation rows\nfile:        {d['file_bytes']:,} bytes (encrypted)"
    )
    if d["backward_base"] is not None:  # ULMFiT's forward + backward: the network is the mean
        click.echo(
            f"backward:    a second network from {d['backward_base']} (forward alone "
            f"{m['forward_network_accuracy']:.4f}, backward alone "
            f"{m['backward_network_accuracy']:.4f})"
        )
    if "tfidf_weight" in m:  # a model with a TF-IDF head: the accuracy above is the mix's
        click.echo(
            f"tfidf head:  {m['tfidf_features']:,} n-grams, {_mix(m)} (network alone "
            f"{m['neural_accuracy']:.4f}, head alone "
            f"{m['tfidf_accuracy']:.4f})"
        )


def _mix(m: dict) -> str:
    if m.get("tfidf_mix") == "stacked":
        return f"stacked (fallback share {m['tfidf_weight']:g})"
    return f"mixed at weight {m['tfidf_weight']:g}"


@models.command("rm")
@click.argument("name")
def rm(name: str) -> None:
    """Delete a stored model."""
    from edge_tl.store.models import remove_model

    remove_model(name)
    click.echo(f"removed model {name!r}")
