"""`edge-tl doctor`: the hardware, the device profile and the resulting plan; --check-store."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edge_tl.config import ModelConfig, from_dict, to_dict
from edge_tl.errors import ConfigError, StoreError

from .options import PASSPHRASE_FILE

GiB = 2**30
PLAN_MODES = ("lm_train", "clas_train")


def _load_base_config(path: str | None) -> tuple[ModelConfig, str]:
    if path is None:
        return ModelConfig(), "WT103 AWD-LSTM shape (default)"
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(
            f"base config {path}: cannot read it as JSON ({e})",
            "give a JSON file with ModelConfig keys",
        ) from e
    return from_dict(ModelConfig, data, f"base config {path}"), path


def _gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB"


@click.command()
@click.option(
    "--profile",
    "profile_arg",
    metavar="NAME|PATH",
    help="Device profile to use instead of the auto-selected one.",
)
@click.option(
    "--base-config",
    metavar="PATH",
    help="JSON ModelConfig of the base to plan for (default: the WT103 shape).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--check-store",
    is_flag=True,
    help="Instead: verify every file under EDGE_TL_HOME (exit 1 on any problem).",
)
@PASSPHRASE_FILE
def doctor(
    profile_arg: str | None,
    base_config: str | None,
    as_json: bool,
    check_store: bool,
) -> None:
    """Show the hardware, device profile and training plan; or verify the store (--check-store)."""
    if check_store:
        if profile_arg or base_config or as_json:
            raise ConfigError(
                "--check-store runs on its own", "drop --profile, --base-config and --json"
            )
        _check_store()
        return
    from edge_tl.hardware.device import detect
    from edge_tl.hardware.planner import plan
    from edge_tl.hardware.profiles import auto_select, load_profile
    from edge_tl.hardware.runtime import choose_runtime

    cfg, base_name = _load_base_config(base_config)
    profile = load_profile(profile_arg) if profile_arg else None
    hw = detect()
    auto = profile is None
    profile = profile or auto_select(hw)
    rt = choose_runtime(hw, profile)
    plans = [plan(hw, profile, cfg, mode) for mode in PLAN_MODES]
    if as_json:
        hw_dict = hw.to_dict()
        out = {
            "hardware": {
                **hw_dict,
                "cores": hw.logical_cores,
                "ram_total_gib": round(hw.ram_total / GiB, 1),
                "ram_available_gib": round(hw.ram_available / GiB, 1),
            },
            "profile": {**_profile_dict(profile), "auto_selected": auto},
            "runtime": {
                "device": rt.device,
                "dtype": rt.dtype,
                "autocast": rt.autocast,
                "threads": rt.threads,
                "reason": rt.reason,
            },
            "base": {"name": base_name, "config": to_dict(cfg)},
            "plans": {p.mode: p.to_dict() for p in plans},
        }
        click.echo(json.dumps(out, indent=2))
        return
    cuda = (
        ", ".join(f"{d.name} ({_gib(d.free_bytes)} free of {_gib(d.total_bytes)})" for d in hw.cuda)
        or "none"
    )
    bf16 = f"native ({', '.join(f for f in hw.isa if 'bf16' in f)})" if hw.cpu_bf16 else "no"
    lines = [
        "Hardware",
        f"  cpu       {hw.cpu_model} ({hw.arch}), {hw.physical_cores} physical / "
        f"{hw.logical_cores} usable cores",
        f"  isa       {' '.join(hw.isa) or '-'}",
        f"  cpu bf16  {bf16}",
        f"  ram       {_gib(hw.ram_total)} total, {_gib(hw.ram_available)} available",
        f"  cuda      {cuda}",
        f"  mps       {'yes' if hw.mps else 'no'}",
        f"  board     {hw.board_model or '-'}"
        + (f" (Jetson, {hw.jetson_release})" if hw.jetson_release else ""),
        f"Profile     {profile.name} ({'auto-selected' if auto else 'given'}): "
        f"{profile.description}",
        f"  file      {profile.path}",
        f"Runtime     {rt.device}, {rt.dtype}, autocast {'on' if rt.autocast else 'off'}, "
        f"{rt.threads} threads",
        f"  why       {rt.reason}",
        f"Base        {base_name}: vocab {cfg.vocab_size}, emb {cfg.emb_sz}, "
        f"hidden {cfg.n_hid}, {cfg.n_layers} layers",
    ]
    for p in plans:
        seq = "bptt" if p.mode == "lm_train" else "seq len"
        lines.append(
            f"Plan {p.mode:10} batch {p.batch_size}, {seq} {p.seq_len}, "
            f"{p.model_params / 1e6:.1f}M params, peak ~{_gib(p.estimate.total)} "
            f"of {_gib(p.budget)} budget"
        )
        lines += [f"  warning: {w}" for w in p.warnings]
    click.echo("\n".join(lines))


def _check_store() -> None:
    """Run the store check, print one line per kind, then each problem with its fix."""
    from edge_tl.health.integrity import KINDS, check_store

    report = check_store()
    lines = [f"Store       {report.home}"]
    for kind in KINDS:
        n, bad = report.checked[kind], len(report.problems_of(kind))
        lines.append(
            f"  {kind:11} {n} file{'s' * (n != 1)} checked"
            + (f", {bad} problem{'s' * (bad != 1)}" if bad else ", ok")
        )
    lines += [f"  note        {note}" for note in report.notes]
    for p in report.problems:
        lines += [f"Problem     {report.relative(p.path)}: {p.what}", f"  fix       {p.fix}"]
    click.echo("\n".join(lines))
    n = len(report.problems)
    if n:
        raise StoreError(
            f"the store {report.home} has {n} problem{'s' * (n != 1)}",
            "fix each as its `fix` line says, then run `edge-tl doctor --check-store` again",
        )
    click.echo("Store OK: every file checked is intact and private")


def _profile_dict(profile) -> dict:  # type: ignore[no-untyped-def]
    return to_dict(profile)
