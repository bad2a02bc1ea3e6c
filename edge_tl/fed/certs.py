"""A site's own PKI for Flower: a CA, the coordinator's TLS certificate (signed by it) and one
EC P-384 key pair per device for SuperNode authentication. Private keys are written 0600."""

from __future__ import annotations

import datetime as _dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_tl.errors import ConfigError
from edge_tl.store.files import atomic_write
from edge_tl.store.models import check_name

CA_DAYS = 3650
SERVER_DAYS = 825  # the most that common TLS clients accept for a leaf certificate


@dataclass(frozen=True)
class SitePaths:
    """The files `fed certs` writes under one folder."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        """The CA certificate every node and `flwr run` trust."""
        return self.root / "ca.pem"

    @property
    def ca_key(self) -> Path:
        """The CA's private key: keep it off the coordinator once certificates are made."""
        return self.root / "ca.key"

    @property
    def server_cert(self) -> Path:
        """The coordinator's TLS certificate."""
        return self.root / "server.pem"

    @property
    def server_key(self) -> Path:
        """The coordinator's TLS private key."""
        return self.root / "server.key"

    def node_key(self, node: str) -> Path:
        """A device's SuperNode authentication key (OpenSSH private key, EC P-384)."""
        return self.root / "nodes" / f"{check_name(node, 'node')}.key"

    def node_pub(self, node: str) -> Path:
        """A device's public key, enrolled at the coordinator."""
        return self.root / "nodes" / f"{check_name(node, 'node')}.pub"


def _hosts(hosts: Sequence[str]) -> list[object]:
    from cryptography import x509

    names: list[object] = []
    for h in ["localhost", "127.0.0.1", "::1", *hosts]:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return list(dict.fromkeys(names))


def _name(common: str) -> object:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edge_tl site"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _pem_key(key: object) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_site_certs(folder: Path, hosts: Sequence[str] = (), *, force: bool = False) -> SitePaths:
    """A new CA and a server certificate for `hosts` (plus localhost) under `folder`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    p = SitePaths(Path(folder))
    if p.ca_key.exists() and not force:
        raise ConfigError(
            f"{p.ca_key} already exists", "pass --force to replace the site's CA and certificate"
        )
    now = _dt.datetime.now(_dt.UTC) - _dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("edge_tl site CA"))
        .issuer_name(_name("edge_tl site CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .sign(ca_key, hashes.SHA384())
    )
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("edge_tl coordinator"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(_hosts(hosts)), critical=False)  # type: ignore[arg-type]
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA384())
    )
    p.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(p.ca_key, _pem_key(ca_key))
    atomic_write(p.server_key, _pem_key(key))
    atomic_write(p.ca_cert, ca.public_bytes(serialization.Encoding.PEM), mode=0o644)
    atomic_write(p.server_cert, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return p


def make_node_key(folder: Path, node: str, *, force: bool = False) -> tuple[Path, Path]:
    """A device's SuperNode authentication key pair (private, public), OpenSSH format."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    p = SitePaths(Path(folder))
    priv, pub = p.node_key(node), p.node_pub(node)
    if priv.exists() and not force:
        raise ConfigError(f"{priv} already exists", "pass --force to replace the node's key")
    key = ec.generate_private_key(ec.SECP384R1())
    priv.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(
        priv,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    ssh_pub = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    atomic_write(pub, ssh_pub + f" edge_tl-node-{node}\n".encode(), mode=0o644)
    return priv, pub


__all__ = ["SitePaths", "make_node_key", "make_site_certs"]
