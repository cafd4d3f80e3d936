"""Serving the console: addresses, binding, start and stop inside a running loop."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from saga.cli import build_parser
from saga.client import Client
from saga.errors import ConfigurationError
from saga.http import HttpServer, create_app, parse_address
from saga.http.console import Console
from saga.http.server import is_loopback
from saga.store.base import open_store
from saga.transports.memory import MemoryTransport


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, ("127.0.0.1", 8088)),
        ("", ("127.0.0.1", 8088)),
        ("0.0.0.0:9000", ("0.0.0.0", 9000)),  # noqa: S104 - parsing, not binding
        (":9000", ("127.0.0.1", 9000)),
        ("localhost", ("localhost", 8088)),
        ("[::1]:9000", ("::1", 9000)),
        ("[::1]", ("::1", 8088)),
    ],
)
def test_parse_address(text: str | None, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["host:port", "127.0.0.1:70000", "[::1]:x"])
def test_parse_address_refuses_nonsense(text: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_address(text)


def test_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.com")  # noqa: S104


def test_cli_http_options() -> None:
    parser = build_parser()
    assert parser.parse_args(["coordinator", "--app", "m"]).http is None
    assert parser.parse_args(["coordinator", "--app", "m", "--http"]).http == "127.0.0.1:8088"
    assert parser.parse_args(["coordinator", "--app", "m", "--http", ":9"]).http == ":9"
    console = parser.parse_args(["console", "--db", "sqlite+aiosqlite://"])
    assert console.http == "127.0.0.1:8088" and console.db == "sqlite+aiosqlite://"


def _unconnected_client() -> Client:
    return Client(open_store("sqlite+aiosqlite://"), MemoryTransport())


async def test_server_picks_a_free_port_serves_and_stops() -> None:
    app = create_app(_unconnected_client(), api_token="")
    async with HttpServer(app, "127.0.0.1", 0) as server:
        assert server.port != 0
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert (await http.get("/healthz")).json() == {"ok": True}
        url = server.url
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=2)


async def test_a_taken_port_is_a_configuration_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = HttpServer(create_app(_unconnected_client(), api_token=""), "127.0.0.1", port)
        with pytest.raises(ConfigurationError, match=f"cannot listen on 127.0.0.1:{port}"):
            await server.start()
        await server.aclose()


async def test_console_over_its_own_connections(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/saga.db"
    async with (
        Console(
            database_url=url, broker_url="memory://", http="127.0.0.1:0", api_token="t"
        ) as console,
        httpx.AsyncClient(base_url=console.url) as http,
    ):
        assert (await http.get("/api/counts")).status_code == 401
        counts = await http.get("/api/counts", headers={"Authorization": "Bearer t"})
        assert counts.json()["total"] == 0
        cluster = await http.get("/api/cluster", headers={"Authorization": "Bearer t"})
        assert cluster.json()["broker"] == "in-process"
