"""The suite's network guard: every inet connect, send and name lookup is recorded and refused.

The test process installs it from tests/conftest.py; every Python child the suite starts loads
it as `sitecustomize` (tinydata.child_env puts this folder first on PYTHONPATH) and appends each
attempt to the file named by EDGE_TL_TEST_NETLOG, which the suite then checks is empty."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

LOG_VAR = "EDGE_TL_TEST_NETLOG"
INET = (socket.AF_INET, socket.AF_INET6)
LOOKUPS = ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo")


class NetworkAttempt(RuntimeError):
    """Raised when code under test tries to reach the network."""


def install(record: Callable[[str], None], patch: Callable[[Any, str, Any], None]) -> None:
    """Refuse inet sockets and DNS: record(what) each attempt, patch(obj, name, new) each API."""
    cls = socket.socket

    def refuse(what: str) -> NetworkAttempt:
        record(what)
        return NetworkAttempt(f"network access blocked in tests: {what}")

    def guard_method(name: str) -> None:
        real = getattr(cls, name)

        def method(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            if self.family in INET:
                raise refuse(f"{name} {args[-1:]!r}")
            return real(self, *args, **kwargs)

        patch(cls, name, method)

    for name in ("connect", "connect_ex", "sendto", "sendmsg"):
        guard_method(name)

    def guard_lookup(name: str) -> None:
        def lookup(host, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise refuse(f"{name} {host!r}")

        patch(socket, name, lookup)

    for name in LOOKUPS:
        guard_lookup(name)

    def create_connection(address, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise refuse(f"create_connection {address!r}")

    patch(socket, "create_connection", create_connection)


def _append_to_log(path: str) -> Callable[[str], None]:
    def record(what: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"pid {os.getpid()}: {what}\n".encode())
        finally:
            os.close(fd)

    return record


if os.environ.get(LOG_VAR):
    install(_append_to_log(os.environ[LOG_VAR]), setattr)
