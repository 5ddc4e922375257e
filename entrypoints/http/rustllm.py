"""RustLLM's REST API, as a second API profile (docs/migrating-rustllm.md).

Every answer is RustLLM's envelope: ``{"success": true, "data": ...}`` or
``{"success": false, "error": "..."}`` with the status (400, 404, 500, 501).
Its ``/api/models`` and ``/api/chat`` collide with Ollama's routes, so the profile is
always mounted under ``/rustllm`` and, with ``modelport serve --api rustllm``, at the
root instead of Ollama's ``/api`` routes.

| route | answer (``data``) |
|---|---|
| ``GET /api/health`` | ``"OK"`` |
| ``GET /api/models`` | ``{"models": [{"name", "size_bytes", "last_modified"}]}`` |
| ``GET /api/models/{name}`` | ``{"name", "size_bytes", "last_modified"}`` |
| ``POST /api/models/{name}`` ``{"force": bool}`` | the model, once downloaded |
| ``DELETE /api/models/{name}`` | ``{"name", "deleted": true}`` |
| ``POST /api/chat`` ``{model, messages, temperature, max_tokens}`` | ``{"message", "usage"}`` |
| ``POST /api/chat/stream`` (same body) | server-sent events, one ``data:`` envelope each |

RustLLM's registry names (``llama2-7b``, ``mistral-7b``, ``phi-2``,
``neural-chat-7b``) resolve through the catalog to their Hub repository.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Iterator

import falcon

from modelport.domain import (
    ChatMessage,
    Completion,
    Conversation,
    GenerationRequest,
    InvalidRequest,
    ModelInfo,
    ModelNotFound,
    ModelRef,
    TokenEvent,
    Usage,
)
from modelport.ports import GenerationStream, Services

from ..catalog import registry_name, resolve_name
from . import errors
from .inference import Runner
from .resources import MAX_BODY_BYTES, read_json
from .schemas import rfc3339
from .streaming import log_unexpected, sse_headers

PREFIX = "/rustllm"
ROLES = ("system", "user", "assistant")
log = logging.getLogger("modelport.http")


def ok(data: Any) -> dict[str, Any]:
    return {"success": True, "data": data}


def failure(message: str) -> dict[str, Any]:
    return {"success": False, "error": message}


def model_entry(info: ModelInfo) -> dict[str, Any]:
    """One model as RustLLM lists it: its registry name when it was pulled through one."""
    return {
        "name": registry_name(info.name) or info.name,
        "size_bytes": info.size,
        "last_modified": rfc3339(info.modified_at),
    }


def usage_of(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def parse_chat(body: dict[str, Any], services: Services) -> tuple[GenerationRequest, ModelInfo]:
    """RustLLM's ChatRequest: ``model``, ``messages`` ([{role, content}]), and the
    optional ``temperature`` and ``max_tokens`` (over the model's own defaults);
    with the model it names (the request's one store lookup)."""
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("'model' is required and must be a string")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("'messages' is required and must be a non-empty array")
    messages = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or item.get("role") not in ROLES or not isinstance(item.get("content"), str):
            raise InvalidRequest(f'messages[{index}] must be {{"role": {"|".join(ROLES)}, "content": string}}')
        messages.append(ChatMessage(role=item["role"], content=item["content"]))
    options: dict[str, Any] = {}
    temperature = body.get("temperature")
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
            raise InvalidRequest("'temperature' must be a number from 0 to 2")
        options["temperature"] = float(temperature)
    max_tokens = body.get("max_tokens")
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise InvalidRequest("'max_tokens' must be a whole number of at least 1")
        options["max_tokens"] = max_tokens
    name = resolve_name(model)
    info = services.show(name)
    request = GenerationRequest(
        model=ModelRef.parse(name),
        messages=Conversation(messages=tuple(messages)),
        sampling=services.sampling_for(info, options),
    )
    return request, info


class Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = ok("OK")


class Models:
    def __init__(self, services: Services, max_body: int = MAX_BODY_BYTES) -> None:
        self._services = services
        self._max_body = max_body

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = ok({"models": [model_entry(m) for m in self._services.list_models()]})

    def on_get_one(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.media = ok(model_entry(self._services.show(resolve_name(name))))

    def on_post_one(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        """Download ``name`` (again with ``"force": true``: what changed on the Hub is
        fetched, the rest checked against the Hub's sha256)."""
        has_body = (req.content_length or 0) > 0 or req.get_header("Transfer-Encoding") is not None
        body = read_json(req, self._max_body) if has_body else {}  # RustLLM's CLI sends none
        force = body.get("force", False)
        if not isinstance(force, bool):
            raise InvalidRequest("'force' must be true or false")
        target = resolve_name(name)
        if not force:
            try:
                resp.media = ok({**model_entry(self._services.show(target)), "downloaded": False})
                return
            except ModelNotFound:
                pass
        if self._services.source is None:
            raise falcon.HTTPNotImplemented(
                description="this server has no model source to download from; install 'modelport[hub]'"
            )
        info = self._services.pull(target)
        resp.media = ok({**model_entry(info), "downloaded": True})

    def on_delete_one(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        self._services.remove(resolve_name(name))
        resp.media = ok({"name": name, "deleted": True})


class Chat:
    """``/api/chat`` (one answer) and ``/api/chat/stream`` (server-sent events)."""

    def __init__(self, runner: Runner, *, stream: bool, max_body: int = MAX_BODY_BYTES) -> None:
        self._runner = runner
        self._stream = stream
        self._max_body = max_body

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        request, model = parse_chat(read_json(req, self._max_body), self._runner.services)
        events, stream = self._runner.generate(request, model=model, started=getattr(req.context, "started", None))
        if self._stream:
            sse_headers(resp)
            resp.stream = sse(events, stream)
            return
        try:
            done = Completion.fold(events)
        finally:
            stream.close()
        resp.media = ok({"message": {"role": "assistant", "content": done.text}, "usage": usage_of(done.usage)})


def event(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def sse(events: Iterator[TokenEvent], stream: GenerationStream) -> Iterator[bytes]:
    """``{"delta": text}`` envelopes while the reply comes, then one with ``done``,
    the whole message, the finish reason and the usage; an error is a last
    ``{"success": false, ...}`` event."""
    parts: list[str] = []
    try:
        for item in events:
            if item.text:
                parts.append(item.text)
                yield event(ok({"delta": item.text, "done": False}))
            if item.finish_reason is not None:
                yield event(
                    ok(
                        {
                            "done": True,
                            "message": {"role": "assistant", "content": "".join(parts)},
                            "finish_reason": item.finish_reason.value,
                            "usage": usage_of(item.usage or Usage()),
                        }
                    )
                )
                return
        raise RuntimeError("the generation stream ended without a final event")
    except Exception as exc:  # the status is already sent: report it in the stream
        yield event(failure(log_unexpected(exc, "generation")))
    finally:
        stream.close()


def mount(app: falcon.App, runner: Runner, prefix: str = PREFIX, max_body: int = MAX_BODY_BYTES) -> None:
    """Add the profile's routes under ``prefix`` ("" for the root) and its error shape."""
    services = runner.services
    models = Models(services, max_body)
    app.add_route(f"{prefix}/api/health", Health())
    app.add_route(f"{prefix}/api/models", models)
    app.add_route(f"{prefix}/api/models/{{name:path}}", models, suffix="one")
    app.add_route(f"{prefix}/api/chat", Chat(runner, stream=False, max_body=max_body))
    app.add_route(f"{prefix}/api/chat/stream", Chat(runner, stream=True, max_body=max_body))
    prefixes = tuple(sorted({*getattr(app, "rustllm_prefixes", ()), f"{prefix}/api"}))
    app.rustllm_prefixes = prefixes  # type: ignore[attr-defined]
    app.set_error_serializer(_serializer(prefixes))


def _serializer(prefixes: tuple[str, ...]):
    def serialize(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
        if not any(req.path == p or req.path.startswith(p + "/") for p in prefixes):
            errors._serialize(req, resp, error)
            return
        resp.content_type = falcon.MEDIA_JSON
        resp.text = json.dumps(failure(errors._describe(req, error)), ensure_ascii=False)

    return serialize


def openapi_paths(prefix: str = PREFIX) -> dict[str, Any]:
    """The profile's routes for ``/openapi.json``."""
    envelope = {
        "type": "object",
        "required": ["success"],
        "properties": {"success": {"type": "boolean"}, "data": {}, "error": {"type": "string"}},
    }

    def op(
        summary: str, statuses: tuple[int, ...], body: dict[str, Any] | None = None, media: str = "application/json"
    ) -> dict[str, Any]:
        answers: dict[str, Any] = {"200": {"description": summary, "content": {media: {"schema": {}}}}}
        for status in statuses:
            answers[str(status)] = {"description": "an error", "content": {"application/json": {"schema": envelope}}}
        operation: dict[str, Any] = {"summary": summary, "tags": ["rustllm"], "responses": answers}
        if body is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        return operation

    chat = {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string", "example": "fake"},
            "messages": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["role", "content"],
                    "properties": {"role": {"type": "string", "enum": list(ROLES)}, "content": {"type": "string"}},
                },
            },
            "temperature": {"type": "number"},
            "max_tokens": {"type": "integer"},
        },
    }
    name = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    return {
        f"{prefix}/api/health": {"get": op("RustLLM: the server is up", ())},
        f"{prefix}/api/models": {"get": op("RustLLM: installed models", ())},
        f"{prefix}/api/models/{{name}}": {
            "parameters": name,
            "get": op("RustLLM: one model", (400, 404)),
            "post": op(
                "RustLLM: download a model",
                (400, 404, 501, 502),
                {"type": "object", "properties": {"force": {"type": "boolean"}}},
            ),
            "delete": op("RustLLM: remove a model", (400, 403, 404)),
        },
        f"{prefix}/api/chat": {"post": op("RustLLM: a chat reply", (400, 404), chat)},
        f"{prefix}/api/chat/stream": {
            "post": op("RustLLM: a chat reply as server-sent events", (400, 404), chat, media="text/event-stream")
        },
    }
