"""One table from errors to HTTP statuses, and one JSON shape for every error:
``{"error": "<message>"}`` (Ollama's), whatever raised it: a use case, falcon's
router (404, 405) or a bug (500, logged, never a traceback in the body)."""

from __future__ import annotations

import json
import logging
from typing import Any

import falcon

from modelport.domain import (
    ContextOverflow,
    EngineUnavailable,
    InvalidModelName,
    InvalidRequest,
    ModelNotFound,
    ModelportError,
    ModelReadOnly,
)

log = logging.getLogger("modelport.http")

# First match wins; CapabilityMissing is an InvalidRequest.
STATUS_BY_ERROR: tuple[tuple[type[ModelportError], int], ...] = (
    (ModelNotFound, 404),
    (InvalidModelName, 400),
    (InvalidRequest, 400),
    (ContextOverflow, 400),
    (ModelReadOnly, 403),
    (EngineUnavailable, 503),
)


def status_of(error: ModelportError) -> int:
    for kind, status in STATUS_BY_ERROR:
        if isinstance(error, kind):
            return status
    return 500


def message_of(error: BaseException) -> str:
    """What the client is told: the message of a modelport error, only the type of
    anything else (which is a bug, logged in full by the caller)."""
    if isinstance(error, ModelportError):
        return error.message
    return f"internal error: {type(error).__name__}"


def install(app: falcon.App) -> None:
    """Register the handlers and the serializer on ``app``."""
    app.add_error_handler(ModelportError, _modelport_error)
    app.add_error_handler(Exception, _unexpected_error)
    app.set_error_serializer(_serialize)


def _modelport_error(req: falcon.Request, resp: falcon.Response, error: ModelportError,
                     params: dict[str, Any]) -> None:
    raise falcon.HTTPError(status_of(error), description=error.message)


def _unexpected_error(req: falcon.Request, resp: falcon.Response, error: Exception,
                      params: dict[str, Any]) -> None:
    log.error("unexpected error in %s %s", req.method, req.path, exc_info=error)
    raise falcon.HTTPInternalServerError(description=message_of(error))


def _serialize(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    resp.content_type = falcon.MEDIA_JSON
    resp.text = json.dumps({"error": _describe(req, error)}, ensure_ascii=False)


def _describe(req: falcon.Request, error: falcon.HTTPError) -> str:
    if isinstance(error, falcon.HTTPRouteNotFound):
        return f"not found: {req.method} {req.path}"
    if isinstance(error, falcon.HTTPMethodNotAllowed):
        allowed = (error.headers or {}).get("Allow", "")
        return f"method {req.method} not allowed on {req.path}; allowed: {allowed}"
    return error.description or error.title
