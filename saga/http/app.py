"""The ASGI application: the JSON API under ``/api`` and the web console at ``/``.

Example:
    >>> async with WorkflowEnvironment(workflows=[TripBooking]) as env:
    ...     app = create_app(env.client)
    ...     async with httpx.AsyncClient(transport=httpx.ASGITransport(app),
    ...                                  base_url="http://saga") as http:
    ...         (await http.get("/api/workflows")).json()
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from saga.client import Client
from saga.config import Settings
from saga.http import problems
from saga.http.auth import BearerAuth, SecurityHeaders
from saga.http.models import ConsoleConfig
from saga.http.routes import ApiState, build_router

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_TRACE_SERVICE = "saga-coordinator"

_DESCRIPTION = """\
See, search and steer every saga. Every `/api` request needs
`Authorization: Bearer <token>` when the server has `SAGA_API_TOKEN` set.
Errors are JSON: `{"detail", "code", "field"}`, or FastAPI's validation shape for 422
(`detail[].loc` names the field)."""


def create_app(
    client: Client,
    *,
    api_token: str | None = None,
    jaeger_url: str | None = None,
    trace_service: str = DEFAULT_TRACE_SERVICE,
    broker_state: str | None = None,
    poll_seconds: float = 3.0,
) -> FastAPI:
    """Build the HTTP API and console over a connected client.

    Args:
        client: Reads through its store, steers through its store and transport.
        api_token: Bearer token every ``/api`` request must carry; defaults to
            ``SAGA_API_TOKEN``; empty turns authentication off.
        jaeger_url: Base URL of Jaeger's UI for trace links; defaults to ``SAGA_JAEGER_URL``.
        trace_service: The service name the coordinator's spans carry in Jaeger.
        broker_state: Shown by ``/api/cluster``; by default derived from the transport.
        poll_seconds: How often the console refreshes what it shows.
    """
    token = api_token if api_token is not None else Settings.resolve().api_token
    jaeger = jaeger_url if jaeger_url is not None else os.environ.get("SAGA_JAEGER_URL") or None
    if broker_state is None:
        broker_state = "connected" if getattr(client.transport, "durable", False) else "in-process"
    state = ApiState(
        client=client,
        jaeger_url=jaeger or None,
        trace_service=trace_service,
        broker_state=broker_state,
    )

    app = FastAPI(
        title="saga",
        summary="Durable sagas: the HTTP API behind the web console.",
        description=_DESCRIPTION,
        version=_version(),
        docs_url=None,  # Swagger UI and ReDoc load from a CDN; the console loads nothing
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    problems.install(app)
    app.include_router(build_router(state))

    @app.get("/console-config", response_model=ConsoleConfig, include_in_schema=False)
    async def console_config() -> ConsoleConfig:
        # Asked before any /api call, so the console can prompt for a token first.
        return ConsoleConfig(
            auth_required=bool(token), jaeger_url=state.jaeger_url, poll_seconds=poll_seconds
        )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(BearerAuth, token=token)
    app.add_middleware(SecurityHeaders)
    app.state.saga = state
    app.state.auth_required = bool(token)
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("saga")
    except PackageNotFoundError:
        return "0"
