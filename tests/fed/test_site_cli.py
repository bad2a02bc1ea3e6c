"""`fed certs` makes a CA, a server certificate and node keys Flower accepts; the Flower App and
client config `fed run` writes pass Flower's own checks; the CLI's errors are exact."""

from __future__ import annotations

import stat
from pathlib import Path

from click.testing import CliRunner
from conftest import tiny_settings

from edge_tl.cli import cli


def test_certs_make_a_ca_a_server_certificate_and_node_keys(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key
    from flwr.supercore.primitives.asymmetric import uses_nist_ec_curve

    site = tmp_path / "site"
    args = ["fed", "certs", "--out", str(site), "--host", "coord.lan", "--host", "10.1.2.3"]
    res = CliRunner().invoke(cli, [*args, "--node", "dev1", "--node", "dev2"])
    assert res.exit_code == 0, res.output
    ca = x509.load_pem_x509_certificate((site / "ca.pem").read_bytes())
    server = x509.load_pem_x509_certificate((site / "server.pem").read_bytes())
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "coord.lan" in san.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} >= {"10.1.2.3", "127.0.0.1"}
    for secret in ("ca.key", "server.key", "nodes/dev1.key", "nodes/dev2.key"):
        assert stat.S_IMODE((site / secret).stat().st_mode) == 0o600, secret
    key = load_ssh_private_key((site / "nodes" / "dev1.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and uses_nist_ec_curve(key.public_key())
    assert (site / "nodes" / "dev1.pub").read_text().startswith("ecdsa-sha2-nistp384 ")

    res = CliRunner().invoke(cli, [*args, "--node", "dev1"])  # nothing is replaced silently
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1] == (
        f"Error: {site / 'nodes' / 'dev1.key'} already exists. pass --force to replace the "
        "node's key"
    )


def test_the_flower_app_and_connection_pass_flowers_checks(tmp_path: Path) -> None:
    from flwr.cli.config_utils import load_and_validate

    from edge_tl.fed.settings import settings_from_config
    from edge_tl.fed.site import node_config_arg, write_app, write_connection

    s = tiny_settings(labels='neg,pos "x"')
    app = write_app(tmp_path / "app", s)
    config, warnings = load_and_validate(app / "pyproject.toml", check_module=False)
    assert config["tool"]["flwr"]["app"]["components"]["clientapp"] == (
        "edge_tl.fed.client:client_app"
    )
    assert settings_from_config(config["tool"]["flwr"]["app"]["config"]) == s
    conn = write_connection(tmp_path / "flwr", "coord:9093", tmp_path / "ca.pem")
    assert 'root-certificates = "' in conn.read_text() and "insecure" not in conn.read_text()
    assert node_config_arg({"data": 'a"b', "require-secagg": True, "n": 2}) == (
        'data="a\\"b" require-secagg=true n=2'
    )


def test_cli_refuses_a_site_without_tls_unless_told() -> None:
    res = CliRunner().invoke(cli, ["fed", "serve"])
    assert res.exit_code == 1
    assert res.output.strip() == (
        "Error: no --site folder. make one with `edge-tl fed certs --out DIR`"
    )
    sim = ["fed", "simulate", "--data", "a", "--labels", "neg,pos", "--out", "m"]
    res = CliRunner().invoke(cli, [*sim, "--nodes", "2", "--min-nodes", "1"])
    assert res.exit_code == 1
    assert res.output.strip() == (
        "Error: SecAgg+ needs at least 2 nodes per round (one node's sum is its update). "
        "pass --min-nodes 2 or more, or --no-secagg"
    )
    res = CliRunner().invoke(cli, [*sim, "--nodes", "1"])
    assert res.exit_code == 1
    assert res.output.strip() == (
        "Error: --nodes 1 is fewer than --min-nodes 2. a round could never start"
    )
