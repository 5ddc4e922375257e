"""One table from errors to HTTP statuses, and one place that shapes error bodies.

Ollama's routes answer ``{"error": "<message>"}``; the OpenAI-compatible routes
(every path under ``/v1/``) answer ``{"error": {"message", "type", "param", "code"}}``.
Whatever raised the error (a use case, falcon's router, a middleware, or a bug: 500,
logged, never a traceback in the body) gets the same treatment. Errors a retry cannot
cure carry ``x-should-retry: false`` so that the OpenAI client does not retry them.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import falcon

from modelport.domain import (
    ContextOverflow,
    DownloadError,
    EngineUnavailable,
    InvalidModelName,
    InvalidRequest,
    ModelNotFound,
    ModelportError,
    ModelReadOnly,
    ServerBusy,
    UnsupportedArchitecture,
)

from . import disconnect

log = logging.getLogger("modelport.http")

# First match wins; CapabilityMissing is an InvalidRequest.
STATUS_BY_ERROR: tuple[tuple[type[ModelportError], int], ...] = (
    (ModelNotFound, 404),
    (InvalidModelName, 400),
    (InvalidRequest, 400),
    (ContextOverflow, 400),
    (UnsupportedArchitecture, 400),
    (ModelReadOnly, 403),
    (DownloadError, 502),
    (EngineUnavailable, 503),
    (ServerBusy, 503),
)
RETRY_AFTER_S = 2  # what a client turned away by a full queue is told to wait
RETRIABLE = frozenset({408, 409, 429})
OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    501: "not_supported_error",
    503: "unavailable_error",
}


def status_of(error: ModelportError) -> int:
    for kind, status in STATUS_BY_ERROR:
        if isinstance(error, kind):
            return status
    return 500


def message_of(error: BaseException) -> str:
    """What the client is told: the message of a modelport error, only the type of
    anything else (which is a bug, logged in full by the caller)."""
    if isinstance(error, ModelportError):
        return str(error)
    return f"internal error: {type(error).__name__}"


def is_openai(path: str) -> bool:
    return path.startswith("/v1/")


def openai_error(message: str, status: int, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The OpenAI error object."""
    kind = OPENAI_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def body_for(path: str, message: str, status: int, error: BaseException | None = None) -> dict[str, Any]:
    """The error body a route at ``path`` answers."""
    if not is_openai(path):
        return {"error": message}
    if isinstance(error, ModelNotFound):
        return openai_error(message, status, param="model", code="model_not_found")
    return openai_error(message, status)


def install(app: falcon.App) -> None:
    """Register the handlers and the serializer on ``app``."""
    app.add_error_handler(ModelportError, _modelport_error)
    app.add_error_handler(ServerBusy, _queue_full)
    disconnect.install(app)
    app.add_error_handler(Exception, _unexpected_error)
    app.set_error_serializer(_serialize)


class _Described(falcon.HTTPError):
    """An HTTPError that remembers the domain error behind it (for the OpenAI code)."""

    def __init__(self, status: int, cause: BaseException, **kwargs: Any) -> None:
        super().__init__(status, description=message_of(cause), **kwargs)
        self.cause = cause


def _modelport_error(req: falcon.Request, resp: falcon.Response, error: ModelportError, params: dict[str, Any]) -> None:
    raise _Described(status_of(error), error)


def _queue_full(req: falcon.Request, resp: falcon.Response, error: ServerBusy, params: dict[str, Any]) -> None:
    raise _Described(503, error, headers={"Retry-After": str(RETRY_AFTER_S)})


def _unexpected_error(req: falcon.Request, resp: falcon.Response, error: Exception, params: dict[str, Any]) -> None:
    if isinstance(error, falcon.HTTPError):  # raised on purpose: keep it
        raise error
    log.error("unexpected error in %s %s", req.method, req.path, exc_info=error)
    raise falcon.HTTPInternalServerError(description=message_of(error))


def _serialize(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    status = error.status_code
    resp.content_type = falcon.MEDIA_JSON
    resp.text = json.dumps(
        body_for(req.path, _describe(req, error), status, getattr(error, "cause", None)), ensure_ascii=False
    )
    if status not in RETRIABLE:
        resp.set_header("x-should-retry", "false")


def _describe(req: falcon.Request, error: falcon.HTTPError) -> str:
    if isinstance(error, falcon.HTTPRouteNotFound):
        return f"not found: {req.method} {req.path}"
    if isinstance(error, falcon.HTTPMethodNotAllowed):
        allowed = (error.headers or {}).get("Allow", "")
        return f"method {req.method} not allowed on {req.path}; allowed: {allowed}"
    return error.description or error.title
