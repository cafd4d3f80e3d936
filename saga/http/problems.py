"""Errors as HTTP answers: each saga error gets a status, a code and the field at fault.

::

    WorkflowNotFoundError          404 workflow_not_found
    WorkflowAlreadyStartedError    409 workflow_already_started
    (workflow closed)              409 workflow_closed
    UnknownWorkflowTypeError       400 unknown_workflow_type      field "type"
    InvalidArgumentsError          422 invalid_arguments          field "args" (or "name")
    PayloadError                   422 invalid_payload            field "args"
    (body not even decodable)      422 body_unreadable
    QueryFailedError               409 query_failed               field "name"
    QueryTimeoutError              504 timeout (no coordinator answered)
    (no queries in this version)   501 queries_unavailable
    StoreError / TransportError    503 store_unavailable / broker_unavailable
    any other SagaError            400 saga_error

Every 422 has FastAPI's shape, ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}``,
whether pydantic or saga refused the value, so ``detail[].loc`` always names the field
(``["body", "args"]``); every other error is ``{"detail", "code", "field"}``.
"""

from __future__ import annotations

import builtins
import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from saga.errors import (
    ConfigurationError,
    InvalidArgumentsError,
    PayloadError,
    SagaError,
    StoreError,
    TransportError,
    UnknownWorkflowTypeError,
    WorkflowAlreadyStartedError,
    WorkflowNotFoundError,
)
from saga.http.models import ErrorBody

log = logging.getLogger("saga.http")


class ApiError(Exception):
    """An answer other than success, raised by an endpoint."""

    def __init__(
        self, status: int, code: str, detail: str, field: str | None = None, *, where: str = "body"
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.field = field
        self.where = where  # body, query or path: the first element of a 422's loc


def _classify(exc: SagaError) -> ApiError:
    if isinstance(exc, WorkflowNotFoundError):
        return ApiError(404, "workflow_not_found", str(exc), "workflow_id")
    if isinstance(exc, WorkflowAlreadyStartedError):
        return ApiError(409, "workflow_already_started", str(exc), "id")
    if isinstance(exc, UnknownWorkflowTypeError):
        return ApiError(400, "unknown_workflow_type", str(exc), "type")
    if isinstance(exc, InvalidArgumentsError):
        # "no signal named …" / "no query named …": the name is at fault, not the args.
        at_fault = "name" if exc.detail.startswith("no ") and " named " in exc.detail else "args"
        return ApiError(422, "invalid_arguments", str(exc), at_fault)
    if isinstance(exc, PayloadError):
        return ApiError(422, "invalid_payload", str(exc), "args")
    if isinstance(exc, StoreError):
        return ApiError(503, "store_unavailable", str(exc))
    if isinstance(exc, TransportError):
        return ApiError(503, "broker_unavailable", str(exc))
    if isinstance(exc, ConfigurationError):
        return ApiError(503, "misconfigured", str(exc))
    if type(exc).__name__ == "QueryFailedError":  # by name: queries are newer than this module
        return ApiError(409, "query_failed", str(exc), "name")
    return ApiError(400, "saga_error", str(exc))


class SafeJSONResponse(JSONResponse):
    """JSON in plain ASCII: a lone surrogate echoed from a request cannot break the answer."""

    def render(self, content: Any) -> bytes:
        """Serialise ``content``."""
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def error_response(error: ApiError) -> JSONResponse:
    """The JSON answer for an :class:`ApiError`."""
    if error.status == 422:
        loc = [error.where] if error.field is None else [error.where, error.field]
        item = {"loc": loc, "msg": error.detail, "type": error.code}
        return SafeJSONResponse({"detail": [item]}, status_code=422)
    body = ErrorBody(detail=error.detail, code=error.code, field=error.field)
    return SafeJSONResponse(body.model_dump(), status_code=error.status)


async def _on_invalid_request(request: Request, exc: Exception) -> JSONResponse:
    # FastAPI's shape, less the echoed ``input``: it may be huge, and it may be what broke
    # (a NaN, a lone surrogate) and so cannot be written back as JSON.
    assert isinstance(exc, RequestValidationError)
    items = [
        {
            "loc": list(e.get("loc", ())),
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in exc.errors()
    ]
    return SafeJSONResponse({"detail": items}, status_code=422)


async def _on_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _on_saga_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SagaError)
    error = _classify(exc)
    if error.status >= 500:
        log.warning("API request failed: %s", exc, extra={"path": request.url.path})
    return error_response(error)


_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    # FastAPI's own refusals (a body that is not JSON, no such route) in our shape too.
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400:  # a body that cannot even be decoded: invalid, like bad JSON
        return error_response(ApiError(422, "body_unreadable", str(exc.detail)))
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    response = error_response(ApiError(exc.status_code, code, str(exc.detail)))
    response.headers.update(exc.headers or {})
    return response


async def _on_timeout(request: Request, exc: Exception) -> JSONResponse:
    return error_response(ApiError(504, "timeout", str(exc) or "timed out"))


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(RequestValidationError, _on_invalid_request)
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(SagaError, _on_saga_error)
    app.add_exception_handler(builtins.TimeoutError, _on_timeout)


# For the OpenAPI document: which error answers an operation can give.
def responses(*codes: int) -> dict[int | str, dict[str, object]]:
    """``responses=`` for a route: each status documented with the ErrorBody schema.

    422 is left to FastAPI, which documents its own validation shape (ours match it).
    """
    text = {
        400: "Bad request (e.g. unknown workflow type)",
        401: "Missing or wrong bearer token",
        404: "No workflow with this id",
        409: "Conflict (already started, or already closed)",
        501: "Not available in this version",
        503: "Database or broker unavailable",
        504: "Timed out",
    }
    return {c: {"model": ErrorBody, "description": text[c]} for c in (401, 503, *codes)}
