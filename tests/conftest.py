"""Every test: its own EDGE_TL_HOME, and no network (any connection attempt fails the test)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


class NetworkAttempt(RuntimeError):
    """Raised when code under test tries to open a network connection."""


@pytest.fixture(autouse=True)
def edge_tl_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point EDGE_TL_HOME at a fresh temp folder and clear passphrase/proxy variables."""
    home = tmp_path_factory.mktemp("edge_tl_home")
    monkeypatch.setenv("EDGE_TL_HOME", str(home))
    for var in ("EDGE_TL_PASSPHRASE", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch):
    """Block inet sockets; a connection attempt fails the test even if the code swallows it."""
    attempts: list[str] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def _is_inet(sock: socket.socket) -> bool:
        return sock.family in (socket.AF_INET, socket.AF_INET6)

    def connect(self, address):  # type: ignore[no-untyped-def]
        if _is_inet(self):
            attempts.append(f"connect {address!r}")
            raise NetworkAttempt(f"network access blocked in tests: {address!r}")
        return real_connect(self, address)

    def connect_ex(self, address):  # type: ignore[no-untyped-def]
        if _is_inet(self):
            attempts.append(f"connect_ex {address!r}")
            raise NetworkAttempt(f"network access blocked in tests: {address!r}")
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        attempts.append(f"getaddrinfo {host!r}")
        raise NetworkAttempt(f"DNS lookup blocked in tests: {host!r}")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: connect(socket.socket(), a[0]))
    yield attempts
    if attempts:
        pytest.fail(f"test made {len(attempts)} network attempt(s): {attempts[:3]}")


@pytest.fixture
def shared_data() -> Path:
    """The shared data folder (../shared/data); skips the test when it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared/data is not beside this checkout")
    return SHARED
