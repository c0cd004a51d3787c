"""Shared fixtures: real servers started once per session, and the network guard."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

pytest_plugins = ["tests.servers"]


def _loopback_only(address: Any) -> None:
    if not isinstance(address, tuple):
        return  # Unix sockets stay on this machine
    host = str(address[0])
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ConnectionRefusedError(f"tests may only connect to loopback, not {host}")


@pytest.fixture(autouse=True)
def network_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that tries to reach a non-loopback address (a real provider, say)."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def connect(self: socket.socket, address: Any) -> None:
        _loopback_only(address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        _loopback_only(address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
