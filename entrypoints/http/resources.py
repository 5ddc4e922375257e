"""The HTTP resources: parse the body (schemas), call a use case (Services), render.

Resources never touch an adapter and never catch a modelport error: the handlers
in :mod:`.errors` turn those into statuses.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import falcon

from modelport.domain import CapabilityMissing, InvalidRequest
from modelport.ports import Services

from . import schemas, streaming
from .schemas import Body, Call, Clock, Reply

MAX_BODY_BYTES = 16 * 1024 * 1024


def read_json(req: falcon.Request, limit: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The request body as a JSON object; 400 when missing or malformed, 413 when
    larger than ``limit`` bytes."""
    if req.content_length is not None and req.content_length > limit:
        raise _too_large(limit)
    data = req.bounded_stream.read(limit + 1)
    if len(data) > limit:
        raise _too_large(limit)
    if not data.strip():
        raise InvalidRequest("missing request body")
    try:
        body = json.loads(data)
    except ValueError as exc:
        raise InvalidRequest(f"invalid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return body


def _too_large(limit: int) -> falcon.HTTPError:
    return falcon.HTTPContentTooLarge(description=f"the request body is larger than {limit} bytes")


class Root:
    """``/``: Ollama clients probe it to see whether a server is up."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "modelport is running"

    on_head = on_get


class Version:
    def __init__(self, version: str) -> None:
        self._version = version

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"version": self._version}

    on_head = on_get


class Health:
    def __init__(self, services: Services) -> None:
        self._services = services

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {
            "status": "ok",
            "engines": self._services.engines.status(),
            "loaded": [resident.model.name for resident in self._services.loaded()],
        }

    on_head = on_get


class Tags:
    """``/api/tags``: the installed models."""

    def __init__(self, services: Services) -> None:
        self._services = services

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = schemas.tags(self._services.list_models())

    on_head = on_get


class Deprecated:
    """An old path that answers like its successor, and says so in its headers."""

    def __init__(self, successor: Tags, path: str) -> None:
        self._successor = successor
        self._path = path

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._successor.on_get(req, resp)
        resp.set_header("Deprecation", "true")
        resp.set_header("Link", f'<{self._path}>; rel="successor-version"')

    on_head = on_get


class Show:
    def __init__(self, services: Services, max_body: int = MAX_BODY_BYTES) -> None:
        self._services = services
        self._max_body = max_body

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        name = schemas.parse_show(read_json(req, self._max_body))
        resp.media = schemas.show(self._services.show(name))


class Inference:
    """``/api/generate`` and ``/api/chat``: they differ only in how the body is
    parsed (``parse``) and how the answer is shaped (``shape``)."""

    def __init__(
        self,
        services: Services,
        *,
        parse: Callable[[Body, schemas.Policy], Call],
        shape: Callable[[str, Clock], Reply],
        clock: Clock,
        max_body: int = MAX_BODY_BYTES,
    ) -> None:
        self._services = services
        self._parse = parse
        self._shape = shape
        self._clock = clock
        self._max_body = max_body

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        call = self._parse(read_json(req, self._max_body), self._services.sampling_for)
        reply = self._shape(call.model, self._clock)
        self._refuse_what_no_model_offers(call)
        if call.request is None:
            resp.media = reply.done(self._load_or_unload(call))
            return
        stream = self._services.generate(call.request)
        events = streaming.started(stream)
        if call.stream:
            resp.content_type = streaming.NDJSON
            resp.stream = streaming.ndjson(events, stream, reply)
        else:
            resp.media = streaming.whole(events, stream, reply)

    def _refuse_what_no_model_offers(self, call: Call) -> None:
        if call.needs:
            model = self._services.show(call.model)  # an unknown model is a 404 first
            raise CapabilityMissing(model.name, call.needs[0])

    def _load_or_unload(self, call: Call) -> str:
        if call.unloads:
            self._services.unload(call.model)
            return "unload"
        self._services.load(call.model)
        return "load"
