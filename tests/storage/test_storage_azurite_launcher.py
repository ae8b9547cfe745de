"""The Azurite launcher: loopback ports it reports really accept; a missing install fails loudly."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from standins.azurite import Azurite, AzuriteMissing, start_azurite

pytestmark = pytest.mark.azurite


def test_missing_binary_fails_with_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(AzuriteMissing, match="run `npm ci`"):
        start_azurite(tmp_path / "node_modules" / ".bin" / "azurite")


def test_services_listen_on_loopback_ports_named_in_the_connection_string(azurite: Azurite) -> None:
    assert set(azurite.ports) == {"blob", "queue", "table"}
    for port in azurite.ports.values():
        assert f"127.0.0.1:{port}/devstoreaccount1" in azurite.connection_string
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
