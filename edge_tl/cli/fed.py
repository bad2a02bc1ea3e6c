"""`edge-tl fed`: federated fine-tuning on Flower (the fed extra): simulate on one machine,
make a site's certificates, run the coordinator's SuperLink, a device's SuperNode, a run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .options import PASSPHRASE_FILE

_SETTINGS_HELP = {
    "rounds": "Federated rounds of the classifier and its TF-IDF head.",
    "lm_rounds": "Federated rounds of language-model fine-tuning first (0: none).",
    "lm_epochs": "Epochs each node fine-tunes the language model per LM round.",
    "lm_lr": "Adam learning rate of the language-model rounds.",
    "local_epochs": "Epochs each node trains per round.",
    "lr": "Adam learning rate on each node.",
    "bs": "Batch size on each node.",
    "max_len": "Tokens per text the classifier reads (a multiple of --bptt).",
    "bptt": "Tokens the encoder reads at a time.",
    "min_nodes": "Nodes a round needs to start and to count.",
    "proximal_mu": "FedProx: > 0 pulls each node's weights towards the global ones.",
    "seed": "Seed of the shared starting head and the nodes' splits.",
    "valid_pct": "Share of each node's rows held out to report accuracy (0: no evaluation).",
    "head_weight": "The TF-IDF head's share of the model's probabilities (when not chosen).",
    "head_weight_min_rows": "Held-out rows (all nodes) from which the head's share is chosen.",
    "dp_noise": "Differential privacy: noise multiplier z (0: off; 1.0: epsilon ~ 13 at 5 rounds).",
    "dp_clip": "Differential privacy: L2 norm each node's update is clipped to.",
    "dp_delta": "Differential privacy: the delta of the epsilon reported.",
}


def settings_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options that become the federation's FedSettings (shared by simulate and run)."""
    from edge_tl.fed.settings import FedSettings

    d = FedSettings(out="x", data="x", labels="a,b")
    opts = [
        click.option("--data", required=True, help="Each node's vault dataset."),
        click.option("--labels", required=True, help="Comma-separated labels, e.g. neg,pos."),
        click.option("--out", "out", required=True, help="Name of the model to store."),
        click.option("--base", default=d.base, show_default=True, help="Base every node uses."),
        click.option(
            "--secagg/--no-secagg",
            default=True,
            show_default=True,
            help="SecAgg+: the coordinator sees only the sum of the updates.",
        ),
        click.option(
            "--head/--no-head",
            default=d.head,
            show_default=True,
            help="Federate a TF-IDF head over the base's words and mix it in.",
        ),
        click.option(
            "--head-weight-auto/--fixed-head-weight",
            default=d.head_weight_auto,
            show_default=True,
            help="Choose the head's share by the mix's log loss on the nodes' held-out rows.",
        ),
        click.option(
            "--freeze-embedding",
            is_flag=True,
            help="Keep the base's embedding (updates a third smaller).",
        ),
    ]
    for name, help_text in _SETTINGS_HELP.items():
        default = getattr(d, name)
        opts.append(
            click.option(
                "--" + name.replace("_", "-"),
                name,
                type=type(default),
                default=default,
                show_default=True,
                help=help_text,
            )
        )
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _settings(kw: dict[str, Any]) -> Any:
    from edge_tl.fed.settings import FedSettings

    return FedSettings(**kw)


def _report(m: Any, as_json: bool) -> None:
    rounds = m.metrics.get("federated_rounds", [])
    if as_json:
        click.echo(json.dumps({"model": m.name, **m.metrics}, indent=2, default=str))
        return
    for r in rounds:
        acc = r.get("accuracy")
        acc_text = "-" if acc is None else f"{acc:.3f}"
        phase = " (language model)" if r.get("phase") == "lm" else ""
        click.echo(
            f"round {r['round']}{phase}: {r.get('nodes', 0)} nodes, held-out accuracy {acc_text}"
        )
    if "dp_epsilon" in m.metrics:
        click.echo(
            f"differential privacy: epsilon {m.metrics['dp_epsilon']:.2f} at delta"
            f" {m.metrics['dp_delta']:g} per node, over {m.metrics['dp_rounds']} rounds"
        )
    for why in m.metrics.get("rejected_updates", []):
        click.echo(f"left out: {why}")
    click.echo(f"stored model {m.name!r} (edge-tl export {m.name} --out {m.name}.onnx)")


@click.group("fed")
def fed() -> None:
    """Federated fine-tuning: only weight updates leave a device (Flower, SecAgg+, TLS)."""


@fed.command("simulate")
@settings_options
@click.option("--nodes", type=click.IntRange(min=1), required=True, help="Simulated nodes.")
@click.option("--json", "as_json", is_flag=True, help="Print the rounds as JSON.")
@PASSPHRASE_FILE
def simulate(nodes: int, as_json: bool, **kw: Any) -> None:
    """Run a federation on this machine: --data names one dataset (split into --nodes shards)
    or one per node (comma-separated); the model is stored here."""
    from edge_tl.fed.simulation import simulate as run_simulation

    _report(run_simulation(_settings(kw), nodes), as_json)


@fed.command("certs")
@click.option("--out", "folder", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--host", "hosts", multiple=True, help="The coordinator's name or address.")
@click.option("--node", "nodes", multiple=True, help="Make an authentication key for this node.")
@click.option("--force", is_flag=True, help="Replace existing keys.")
def certs(folder: Path, hosts: tuple[str, ...], nodes: tuple[str, ...], force: bool) -> None:
    """Make the site's CA, the coordinator's TLS certificate and the nodes' keys."""
    from edge_tl.fed.certs import SitePaths, make_node_key, make_site_certs

    p = SitePaths(folder)
    if not p.ca_key.exists() or force:
        make_site_certs(folder, hosts, force=force)
        click.echo(f"CA {p.ca_cert} (give it to every node), server certificate {p.server_cert}")
    for n in nodes:
        priv, pub = make_node_key(folder, n, force=force)
        click.echo(f"node {n}: key {priv} (copy to the device only), public key {pub}")
    click.echo(f"keep {p.ca_key} offline once the certificates are made")


@fed.command("serve")
@click.option(
    "--site",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder from `fed certs` (TLS); required unless --insecure.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=9093, show_default=True)
@click.option(
    "--enroll",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path, exists=True),
    help="A node's public key to enroll (repeat).",
)
@click.option("--database", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--insecure", is_flag=True, help="No TLS (a test on one machine only).")
@PASSPHRASE_FILE
def serve(
    site: Path | None,
    host: str,
    port: int,
    enroll: tuple[Path, ...],
    database: Path | None,
    insecure: bool,
) -> None:
    """Run the coordinator's Flower SuperLink (TLS and node authentication on)."""
    from edge_tl.errors import ConfigError
    from edge_tl.fed.site import serve_site

    if site is None and not insecure:
        raise ConfigError("no --site folder", "make one with `edge-tl fed certs --out DIR`")
    code = serve_site(
        None if insecure else site, host=host, port=port, enroll=enroll, database=database
    )
    raise SystemExit(code)


@fed.command("node")
@click.option("--superlink", required=True, help="The coordinator, HOST:PORT.")
@click.option("--data", required=True, help="This device's vault dataset.")
@click.option("--ca", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--port", type=click.IntRange(1, 65535), default=9094, show_default=True)
@click.option(
    "--allow-plain/--require-secagg",
    default=False,
    help="Answer training requests without SecAgg+ (refused by default).",
)
@click.option("--insecure", is_flag=True, help="No TLS (a test on one machine only).")
@PASSPHRASE_FILE
def node(
    superlink: str,
    data: str,
    ca: Path | None,
    key: Path | None,
    port: int,
    allow_plain: bool,
    insecure: bool,
) -> None:
    """Run this device's Flower SuperNode: it trains on --data when the coordinator asks."""
    from edge_tl.errors import ConfigError
    from edge_tl.fed.site import run_node
    from edge_tl.store.datasets import dataset_info

    dataset_info(data)  # a missing dataset is an error now, not in the middle of a round
    if ca is None and not insecure:
        raise ConfigError("no --ca certificate", "pass --ca ca.pem from `edge-tl fed certs`")
    code = run_node(
        superlink,
        data=data,
        ca_cert=None if insecure else ca,
        key=key,
        port=port,
        require_secagg=not allow_plain,
    )
    raise SystemExit(code)


@fed.command("run")
@settings_options
@click.option("--superlink", default="127.0.0.1:9093", show_default=True, help="HOST:PORT.")
@click.option("--ca", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--insecure", is_flag=True, help="No TLS (a test on one machine only).")
@PASSPHRASE_FILE
def run(superlink: str, ca: Path | None, insecure: bool, **kw: Any) -> None:
    """Start a federation on the coordinator's SuperLink (`flwr run`) and stream its log."""
    from edge_tl.errors import ConfigError
    from edge_tl.fed.server import check_resumable
    from edge_tl.fed.site import submit_run

    if ca is None and not insecure:
        raise ConfigError("no --ca certificate", "pass --ca ca.pem from `edge-tl fed certs`")
    s = _settings(kw)
    check_resumable(s)
    submit_run(
        s, superlink, None if insecure else ca, capture=False
    )  # the log goes to the terminal
