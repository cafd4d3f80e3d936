"""Serving the app with uvicorn inside the caller's event loop (beside a coordinator).

We bind the socket ourselves, so a taken port is a :class:`ConfigurationError` rather
than uvicorn's ``sys.exit``, port 0 gives a free port (tests), and uvicorn is kept from
installing signal handlers: the daemon that embeds us owns SIGINT and SIGTERM.

Example:
    >>> async with HttpServer(create_app(client), "127.0.0.1", 8088) as server:
    ...     print(server.url)
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Iterator
from types import TracebackType

import uvicorn
from fastapi import FastAPI

from saga.errors import ConfigurationError

log = logging.getLogger("saga.http")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8088


def parse_address(text: str | None) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT``, ``HOST`` or ``[::1]:PORT``; the defaults fill the gaps."""
    if not text:
        return DEFAULT_HOST, DEFAULT_PORT
    host, port_text = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    host = host or DEFAULT_HOST
    try:
        port = int(port_text) if port_text else DEFAULT_PORT
    except ValueError:
        raise ConfigurationError(f"--http wants HOST:PORT, not {text!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigurationError(f"--http port {port} is out of range")
    return host, port


def is_loopback(host: str) -> bool:
    """True for localhost and the loopback ranges."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the embedding daemon handles signals and calls HttpServer.aclose()


class HttpServer:
    """Serve an ASGI app on ``host:port`` until :meth:`aclose`.

    Args:
        app: The application (see :func:`saga.http.create_app`).
        host: Address to bind; loopback unless you mean it.
        port: 0 picks a free port; read it back from :attr:`port`.
    """

    def __init__(self, app: FastAPI, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        """Base URL of the server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _bind(self) -> socket.socket:
        try:
            infos = socket.getaddrinfo(
                self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
        except socket.gaierror as exc:
            raise ConfigurationError(f"cannot resolve HTTP host {self.host!r}: {exc}") from exc
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise ConfigurationError(
                f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}"
            ) from exc
        self.port = sock.getsockname()[1]
        return sock

    async def start(self) -> None:
        """Bind and start serving; returns once requests are accepted."""
        if self._task is not None:
            return
        self._socket = self._bind()
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
            server_header=False,
        )
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(
            self._server.serve(sockets=[self._socket]), name="saga-http"
        )
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raise what stopped it
                raise ConfigurationError("the HTTP server stopped while starting")
            await asyncio.sleep(0.01)
        if not is_loopback(self.host) and not getattr(self.app.state, "auth_required", False):
            log.warning(
                "HTTP API on %s without SAGA_API_TOKEN: anyone who can reach it can "
                "steer workflows",
                self.url,
            )

    async def aclose(self) -> None:
        """Stop accepting, let requests in flight finish (5 s at most), close the socket."""
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            try:
                await self._task
            except Exception:  # noqa: BLE001 - stopping: the cause was logged by uvicorn
                log.warning("HTTP server ended with an error", exc_info=True)
        if self._socket is not None:
            self._socket.close()
        self._server = self._task = self._socket = None

    async def __aenter__(self) -> HttpServer:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
