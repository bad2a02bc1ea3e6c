"""A real site on Flower's Deployment Runtime: the commands that start the coordinator's
SuperLink and a device's SuperNode, the Flower App that `flwr run` submits, and the Flower
client configuration it reads. edge_tl starts Flower's own programs; it adds no networking."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edge_tl.errors import ConfigError, EdgeTLError
from edge_tl.fed.certs import SitePaths
from edge_tl.fed.settings import FedSettings
from edge_tl.store.home import home
from edge_tl.store.keys import passphrase_file

DEFAULT_PORT = 9093  # Flower's Control API port: the SuperLink serves all its APIs on one port
CONNECTION = "edge_tl"  # the SuperLink connection's name in Flower's client config


def flwr_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for Flower's programs: telemetry off, Flower's own files under the
    store, and this interpreter's scripts first on PATH (SuperLink starts helpers by name)."""
    env = dict(os.environ)
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    # The Apps run in Flower's child processes: they find this store and its passphrase here
    # (--home and --passphrase-file set them for this process only).
    env["EDGE_TL_HOME"] = str(home())
    if passphrase_file() is not None:
        env["EDGE_TL_PASSPHRASE_FILE"] = str(passphrase_file())
    env.setdefault("FLWR_HOME", str(home() / "flwr"))
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bindir, env.get("PATH", "")])
    env.update(extra or {})
    return env


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise EdgeTLError(f"Flower's `{name}` is not installed", "pip install 'edge_tl[fed]'")
    return found


def _need(path: Path, what: str) -> str:
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist", "make it with `edge-tl fed certs`")
    return str(path)


def superlink_command(
    site: Path | None,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    auth: bool = True,
    database: Path | None = None,
) -> list[str]:
    """`flower-superlink` with TLS from `site` (None: --insecure) and node authentication."""
    cmd = [_tool("flower-superlink"), "--host", host, "--port", str(port)]
    cmd += ["--disable-runtime-dependency-installation"]  # never pip/uv at run time
    if database is not None:  # enrolled nodes and runs outlive a restart
        cmd += ["--database", str(database)]
    if site is None:
        cmd.append("--insecure")
    else:
        p = SitePaths(site)
        cmd += ["--ssl-certfile", _need(p.server_cert, "the coordinator's TLS certificate")]
        cmd += ["--ssl-keyfile", _need(p.server_key, "the coordinator's TLS key")]
        cmd += ["--ssl-ca-certfile", _need(p.ca_cert, "the site's CA certificate")]
    if auth:
        cmd.append("--enable-supernode-auth")
    return cmd


def node_config_arg(values: Mapping[str, Any]) -> str:
    """Flower's `--node-config` string (`k="v" n=1`), values as TOML."""
    parts = []
    for k, v in values.items():
        if isinstance(v, bool):
            parts.append(f"{k}={'true' if v else 'false'}")
        elif isinstance(v, int | float):
            parts.append(f"{k}={v}")
        else:
            text = str(v).replace("\\", "\\\\").replace('"', '\\"')
            parts.append(f'{k}="{text}"')
    return " ".join(parts)


def supernode_command(
    superlink: str,
    *,
    data: str,
    ca_cert: Path | None,
    key: Path | None,
    port: int = 9094,
    require_secagg: bool = True,
    max_wait: float | None = None,
) -> list[str]:
    """`flower-supernode` joining `superlink` (host:port) with TLS and its auth key."""
    cmd = [_tool("flower-supernode"), "--superlink", superlink, "--port", str(port)]
    cmd += ["--host", "127.0.0.1"]  # its local runtime API, for its own ClientApp process only
    if ca_cert is None:
        cmd.append("--insecure")
    else:
        cmd += ["--root-certificates", _need(Path(ca_cert), "the site's CA certificate")]
    if key is not None:
        cmd += ["--auth-supernode-private-key", _need(Path(key), "the node's key")]
    if max_wait is not None:
        cmd += ["--max-wait-time", str(max_wait)]
    cfg = {"data": data, "require-secagg": require_secagg, "home": str(home())}
    cmd += ["--node-config", node_config_arg(cfg)]
    return cmd


APP_TOML = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "edge-tl-fed"
version = "1.0.0"
description = "edge_tl federated fine-tuning (the code is the installed edge_tl package)"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "edge_tl"

[tool.flwr.app.components]
serverapp = "edge_tl.fed.server:server_app"
clientapp = "edge_tl.fed.client:client_app"

[tool.flwr.app.config]
{config}
"""


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_app(folder: Path, s: FedSettings) -> Path:
    """The Flower App `flwr run` builds and submits: a pyproject.toml naming edge_tl's apps,
    with the run's settings as its config (no code: every machine runs its installed edge_tl)."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    lines = [f"{k} = {_toml_value(v)}" for k, v in s.to_run_config().items()]
    (folder / "pyproject.toml").write_text(APP_TOML.format(config="\n".join(lines)))
    return folder


def write_connection(flwr_home: Path, address: str, ca_cert: Path | None) -> Path:
    """Flower's client config (FLWR_HOME/config.toml) naming the coordinator's SuperLink."""
    flwr_home.mkdir(parents=True, exist_ok=True, mode=0o700)
    lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]"]
    lines.append(f"address = {_toml_value(address)}")
    if ca_cert is None:
        lines.append("insecure = true")
    else:
        lines.append(f"root-certificates = {_toml_value(str(Path(ca_cert).resolve()))}")
    path = flwr_home / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _flwr(args: Sequence[str], env: Mapping[str, str], timeout: float, capture: bool = True) -> str:
    """Run the `flwr` CLI; its output (or "" when it went to the terminal), or EdgeTLError."""
    try:
        res = subprocess.run(
            [_tool("flwr"), *args],
            env=dict(env),
            capture_output=capture,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        raise EdgeTLError(f"`flwr {args[0]}` did not answer in {timeout:.0f} s") from e
    out = ((res.stdout or "") + (res.stderr or "")).strip()
    if res.returncode != 0:
        raise EdgeTLError(f"`flwr {' '.join(args[:2])}` failed: {out[-800:] or 'see above'}")
    return out


def enroll_node(public_key: Path, address: str, ca_cert: Path | None, timeout: float = 60) -> str:
    """Register a device's public key at the SuperLink (only enrolled nodes may join)."""
    env = flwr_env()
    write_connection(Path(env["FLWR_HOME"]), address, ca_cert)
    return _flwr(["supernode", "register", str(public_key), CONNECTION], env, timeout)


def submit_run(
    s: FedSettings,
    address: str,
    ca_cert: Path | None,
    *,
    stream: bool = True,
    capture: bool = True,
    timeout: float = 0,
) -> str:
    """Submit federation `s` to the SuperLink with `flwr run`, following its log (`stream`);
    the log, or "" when `capture` is off and it went to the terminal."""
    env = flwr_env()
    flwr_home = Path(env["FLWR_HOME"])
    write_connection(flwr_home, address, ca_cert)
    app = write_app(flwr_home / "apps" / s.out, s)
    args = ["run", str(app), CONNECTION, *(["--stream"] if stream else [])]
    return _flwr(args, env, timeout or 10 * 24 * 3600, capture)


def _wait(proc: subprocess.Popen) -> int:
    """Wait for a foreground Flower program; Ctrl-C stops it and waits for it to exit."""
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()


def start_superlink(
    site: Path | None,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    database: Path | None = None,
    **popen: Any,
) -> subprocess.Popen:
    """Start the coordinator's SuperLink in the background (the caller waits for it)."""
    cmd = superlink_command(site, host=host, port=port, database=database)
    return subprocess.Popen(cmd, env=flwr_env(), **popen)


def serve_site(
    site: Path | None,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    enroll: Sequence[Path] = (),
    database: Path | None = None,
    echo: Any = print,
) -> int:
    """Run the coordinator's SuperLink in the foreground, enrolling the given node keys once it
    answers; its exit status."""
    proc = start_superlink(site, host=host, port=port, database=database)
    address = f"{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    ca = None if site is None else SitePaths(site).ca_cert
    for key in enroll:
        echo(enroll_when_up(proc, Path(key), address, ca))
    echo(f"SuperLink on {host}:{port} ({'TLS' if site else 'no TLS'}); Ctrl-C stops it")
    return _wait(proc)


def enroll_when_up(proc: subprocess.Popen, key: Path, address: str, ca: Path | None) -> str:
    """Enroll `key` at the SuperLink `proc` serves, retrying while it starts (3 minutes)."""
    deadline = time.monotonic() + 180
    while True:
        try:
            out = enroll_node(key, address, ca, timeout=120)
            return f"enrolled {key.name}: " + out.splitlines()[-1]
        except EdgeTLError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(1)


def start_supernode(superlink: str, **kw: Any) -> subprocess.Popen:
    """Start this device's SuperNode in the background (supernode_command's arguments, plus
    Popen's as `popen`)."""
    popen = kw.pop("popen", {})
    return subprocess.Popen(supernode_command(superlink, **kw), env=flwr_env(), **popen)


def run_node(superlink: str, *, retry_s: float = 180.0, echo: Any = print, **kw: Any) -> int:
    """Run this device's SuperNode in the foreground (supernode_command's arguments). A node
    that exits with an error within `retry_s` seconds is started again every 10 s: after an
    unclean stop the SuperLink counts the node online until it has missed two heartbeats (up
    to a minute) and refuses it meanwhile (Flower's exit code 305, seen as status 1)."""
    deadline = time.monotonic() + retry_s
    while True:
        code = _wait(start_supernode(superlink, **kw))
        if code != 1 or time.monotonic() > deadline:
            return code
        echo("the SuperNode stopped with an error (see above); starting it again in 10 s")
        time.sleep(10)


__all__ = [
    "enroll_when_up",
    "run_node",
    "serve_site",
    "start_superlink",
    "start_supernode",
    "DEFAULT_PORT",
    "enroll_node",
    "flwr_env",
    "node_config_arg",
    "submit_run",
    "supernode_command",
    "superlink_command",
    "write_app",
    "write_connection",
]
