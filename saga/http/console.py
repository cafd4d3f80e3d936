"""The console as a service: ``saga console`` alone, or ``saga coordinator --http`` beside one.

Standalone, it opens its own database connection and, if it can, the broker. Without
a broker it still serves: reads come from the database, and steering (start, signal,
cancel, terminate) is written there too, where the coordinators' sweep finds it within
seconds; only the instant wake-up and the dead-letter listing are missing, and
``/api/cluster`` says so.

Example:
    >>> async with Console(database_url="postgresql+asyncpg://…", http="127.0.0.1:8088") as c:
    ...     print(c.url)
"""

from __future__ import annotations

import logging
from types import TracebackType

from saga.client import Client
from saga.config import Settings
from saga.errors import TransportError
from saga.http.app import create_app
from saga.http.server import HttpServer, parse_address
from saga.store.base import open_store
from saga.transports.base import Transport, open_transport
from saga.transports.memory import MemoryTransport

log = logging.getLogger("saga.http")


class Console:
    """The HTTP API and web console, with the connections it needs.

    Args:
        client: Serve over this (connected) client, e.g. one sharing a coordinator's
            store and transport; it is not closed here. Without it the console connects
            to ``database_url`` and ``broker_url`` itself.
        database_url, broker_url: Defaults to ``SAGA_DATABASE_URL`` / ``SAGA_BROKER_URL``.
        http: ``HOST:PORT`` to listen on; default ``127.0.0.1:8088``.
        api_token, jaeger_url: See :func:`saga.http.create_app` (environment by default).
    """

    def __init__(
        self,
        *,
        client: Client | None = None,
        database_url: str | None = None,
        broker_url: str | None = None,
        http: str | None = None,
        api_token: str | None = None,
        jaeger_url: str | None = None,
    ) -> None:
        self.host, self.port = parse_address(http)
        self._client = client
        self._owns_client = client is None
        self._settings = Settings.resolve(database_url=database_url, broker_url=broker_url)
        self._api_token = api_token
        self._jaeger_url = jaeger_url
        self._server: HttpServer | None = None

    @property
    def url(self) -> str:
        """Where the console answers (the real port once started)."""
        return self._server.url if self._server is not None else f"http://{self.host}:{self.port}"

    async def _connect(self) -> tuple[Client, str]:
        store = open_store(self._settings.database_url)
        await store.connect()
        try:
            if store.url.startswith("sqlite"):
                await store.migrate()  # like the coordinator: dev databases migrate themselves
            transport: Transport = open_transport(self._settings.broker_url)
            state = "connected" if transport.durable else "in-process"
            try:
                await transport.connect()
            except TransportError as exc:
                log.warning(
                    "console without a broker (%s); steering goes through the database", exc
                )
                transport, state = MemoryTransport(), "unavailable"
        except BaseException:
            await store.aclose()
            raise
        return Client(store, transport, owns_connections=True), state

    async def start(self) -> None:
        """Connect (unless given a client) and start serving."""
        if self._server is not None:
            return
        state = None
        if self._client is None:
            self._client, state = await self._connect()
        app = create_app(
            self._client,
            api_token=self._api_token,
            jaeger_url=self._jaeger_url,
            broker_state=state,
        )
        server = HttpServer(app, self.host, self.port)
        try:
            await server.start()
        except BaseException:
            await self._close_client()
            raise
        self._server = server

    async def _close_client(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def aclose(self) -> None:
        """Stop serving and close the connections the console opened."""
        if self._server is not None:
            await self._server.aclose()
            self._server = None
        await self._close_client()

    async def __aenter__(self) -> Console:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
