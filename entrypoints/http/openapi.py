"""The OpenAPI 3.0 description of the server, served at ``/openapi.json``.

Written by hand, route by route, beside docs/http-api.md; a test walks the app's
routes and fails when one is missing here, and schemathesis sends generated
requests from it to the app.
"""

from __future__ import annotations

from typing import Any

import falcon

from . import rustllm

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
BOOL: Schema = {"type": "boolean"}
INT: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
MODEL: Schema = {"type": "string", "description": "a model name such as smollm2, org/name:tag", "example": "fake"}
KEEP_ALIVE: Schema = {
    "oneOf": [NUMBER, STRING],
    "description": 'seconds, or a duration such as "5m"; 0 unloads after the request, negative keeps the model loaded',
}
OPTIONS: Schema = {
    "type": "object",
    "description": "Ollama options (unknown keys are ignored)",
    "properties": {
        "temperature": NUMBER,
        "top_k": INT,
        "top_p": NUMBER,
        "min_p": NUMBER,
        "repeat_penalty": NUMBER,
        "repeat_last_n": INT,
        "seed": INT,
        "num_predict": INT,
        "num_ctx": {"type": "integer", "minimum": 256},
        "stop": {"type": "array", "items": STRING},
    },
}
STRINGS: Schema = {"oneOf": [STRING, {"type": "array", "items": STRING}]}
MESSAGE: Schema = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "user", "assistant", "tool"]},
        "content": STRING,
        "images": {"type": "array", "items": STRING},
        "tool_name": STRING,
    },
}
OPENAI_MESSAGE: Schema = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
        "content": {
            "oneOf": [
                STRING,
                {"type": "array", "items": {"type": "object", "properties": {"type": STRING, "text": STRING}}},
            ]
        },
        "name": STRING,
        "tool_call_id": STRING,
    },
}
ERROR: Schema = {"type": "object", "properties": {"error": {"oneOf": [STRING, {"type": "object"}]}}}


def _body(properties: Schema, required: tuple[str, ...] = ("model",)) -> Schema:
    return {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object", "required": list(required), "properties": properties}}
        },
    }


def _answers(description: str, *statuses: int, media: str = "application/json") -> Schema:
    answers: Schema = {"200": {"description": description, "content": {media: {"schema": {}}}}}
    for status in statuses:
        answers[str(status)] = {"description": "an error", "content": {"application/json": {"schema": ERROR}}}
    return answers


def _operation(
    summary: str,
    tag: str,
    body: Schema | None = None,
    *,
    media: str = "application/json",
    statuses: tuple[int, ...] = (400, 404),
    **extra: Any,
) -> Schema:
    operation: Schema = {"summary": summary, "tags": [tag], "responses": _answers(summary, *statuses, media=media)}
    if body is not None:
        operation["requestBody"] = body
    operation.update(extra)
    return operation


GENERATE = {
    "model": MODEL,
    "prompt": STRING,
    "suffix": STRING,
    "system": STRING,
    "template": STRING,
    "context": {"type": "array", "items": INT},
    "raw": BOOL,
    "stream": BOOL,
    "format": {},
    "images": {"type": "array", "items": STRING},
    "options": OPTIONS,
    "keep_alive": KEEP_ALIVE,
    "think": {},
    "logprobs": BOOL,
    "top_logprobs": INT,
}
CHAT = {
    "model": MODEL,
    "messages": {"type": "array", "items": MESSAGE},
    "stream": BOOL,
    "options": OPTIONS,
    "keep_alive": KEEP_ALIVE,
    "tools": {"type": "array", "items": {"type": "object"}},
    "format": {},
    "logprobs": BOOL,
    "top_logprobs": INT,
}
OPENAI_SAMPLING = {
    "temperature": NUMBER,
    "top_p": NUMBER,
    "top_k": INT,
    "min_p": NUMBER,
    "seed": INT,
    "max_tokens": INT,
    "max_completion_tokens": INT,
    "stop": STRINGS,
    "n": INT,
    "stream": BOOL,
    "stream_options": {"type": "object", "properties": {"include_usage": BOOL}},
    "response_format": {"type": "object", "properties": {"type": STRING}},
}
RESPONSES = {
    "model": MODEL,
    "input": {"oneOf": [STRING, {"type": "array", "items": {"type": "object"}}]},
    "instructions": STRING,
    "max_output_tokens": INT,
    "temperature": NUMBER,
    "top_p": NUMBER,
    "seed": INT,
    "stream": BOOL,
    "store": BOOL,
    "previous_response_id": STRING,
    "top_logprobs": INT,
    "include": {"type": "array", "items": STRING},
    "text": {"type": "object"},
    "tools": {"type": "array", "items": {"type": "object"}},
    "tool_choice": {"oneOf": [STRING, {"type": "object"}]},
    "parallel_tool_calls": BOOL,
    "metadata": {"type": "object"},
}
CREATE = {
    "model": MODEL,
    "from": STRING,
    "stream": BOOL,
    "files": {"type": "object", "additionalProperties": STRING},
    "system": STRING,
    "template": STRING,
    "license": STRINGS,
    "parameters": OPTIONS,
    "messages": {"type": "array", "items": MESSAGE},
    "modelfile": STRING,
}
NATIVE = {
    "model": MODEL,
    "prompt": STRING,
    "messages": {"type": "array", "items": MESSAGE},
    "system": STRING,
    "raw": BOOL,
    "options": OPTIONS,
    "keep_alive": KEEP_ALIVE,
}
ND = "application/x-ndjson"
SSE = "text/event-stream"


def _get_and_head(summary: str, tag: str, **kwargs: Any) -> Schema:
    get = _operation(summary, tag, statuses=(), **kwargs)
    head = {**get, "summary": f"{summary} (headers only)", "responses": {"200": {"description": "headers only"}}}
    return {"get": get, "head": head}


def paths() -> dict[str, Schema]:
    o, oa, mp = "ollama", "openai", "modelport"
    name_body = _body({"model": MODEL, "name": MODEL}, ())
    return {
        "/": _get_and_head("liveness text", o, media="text/plain"),
        "/api/version": _get_and_head("the server version", o),
        "/api/tags": _get_and_head("installed models", o),
        "/api/show": {"post": _operation("one model's details", o, name_body)},
        "/api/generate": {
            "post": _operation("a completion (NDJSON stream unless stream is false)", o, _body(GENERATE), media=ND)
        },
        "/api/chat": {
            "post": _operation("a chat reply (NDJSON stream unless stream is false)", o, _body(CHAT), media=ND)
        },
        "/api/embed": {
            "post": _operation(
                "embeddings of one or more inputs",
                o,
                _body(
                    {
                        "model": MODEL,
                        "input": STRINGS,
                        "truncate": BOOL,
                        "dimensions": INT,
                        "keep_alive": KEEP_ALIVE,
                        "options": OPTIONS,
                    }
                ),
            )
        },
        "/api/embeddings": {
            "post": _operation(
                "the embedding of one prompt (legacy)",
                o,
                _body({"model": MODEL, "prompt": STRING, "keep_alive": KEEP_ALIVE, "options": OPTIONS}),
            )
        },
        "/api/ps": {"get": _operation("models loaded in this worker", o, statuses=())},
        "/api/pull": {
            "post": _operation(
                "download a model (NDJSON progress)",
                o,
                _body(
                    {"model": MODEL, "insecure": BOOL, "stream": BOOL, "revision": STRING, "trust_remote_code": BOOL}
                ),
                media=ND,
                statuses=(400, 404, 502),
            )
        },
        "/api/push": {
            "post": _operation(
                "not supported: always 501",
                o,
                _body({"model": MODEL, "insecure": BOOL, "stream": BOOL}),
                statuses=(501,),
            )
        },
        "/api/create": {
            "post": _operation(
                "a model from a local file, an installed model or blobs, with a Modelfile's defaults",
                o,
                _body(CREATE),
                media=ND,
                statuses=(400, 403, 404),
            )
        },
        "/api/blobs/{digest}": {
            "parameters": [{"name": "digest", "in": "path", "required": True, "schema": STRING}],
            "head": _operation("whether a blob is here", o, statuses=(400, 404)),
            "post": _operation(
                "upload a blob",
                o,
                {
                    "required": True,
                    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                },
                statuses=(400,),
            ),
        },
        "/api/copy": {
            "post": _operation(
                "copy a model under a new name",
                o,
                _body({"source": MODEL, "destination": MODEL}, ("source", "destination")),
                statuses=(400, 403, 404),
            )
        },
        "/api/delete": {"delete": _operation("remove a model", o, name_body, statuses=(400, 403, 404))},
        "/v1/chat/completions": {
            "post": _operation(
                "OpenAI chat completion (SSE when stream)",
                oa,
                _body(
                    {
                        "model": MODEL,
                        "messages": {"type": "array", "items": OPENAI_MESSAGE},
                        **OPENAI_SAMPLING,
                        "logprobs": BOOL,
                        "top_logprobs": INT,
                        "tools": {"type": "array", "items": {"type": "object"}},
                        "tool_choice": {},
                    },
                    ("model", "messages"),
                ),
            )
        },
        "/v1/responses": {
            "post": _operation(
                "OpenAI Responses API (SSE events when stream)", oa, _body(RESPONSES, ("model", "input"))
            )
        },
        "/v1/responses/{response_id}": {
            "parameters": [{"name": "response_id", "in": "path", "required": True, "schema": STRING}],
            "get": _operation("a stored response", oa, statuses=(404,)),
            "delete": _operation("forget a stored response", oa, statuses=(404,)),
        },
        "/v1/completions": {
            "post": _operation(
                "OpenAI text completion (SSE when stream)",
                oa,
                _body(
                    {
                        "model": MODEL,
                        "prompt": STRINGS,
                        **OPENAI_SAMPLING,
                        "suffix": STRING,
                        "echo": BOOL,
                        "best_of": INT,
                        "logprobs": INT,
                    },
                    ("model", "prompt"),
                ),
            )
        },
        "/v1/embeddings": {
            "post": _operation(
                "OpenAI embeddings (float or base64)",
                oa,
                _body(
                    {
                        "model": MODEL,
                        "input": STRINGS,
                        "encoding_format": {"type": "string", "enum": ["float", "base64"]},
                        "dimensions": INT,
                    },
                    ("model", "input"),
                ),
            )
        },
        "/v1/models": {"get": _operation("OpenAI model list", oa, statuses=())},
        "/v1/models/{model}": {
            "parameters": [{"name": "model", "in": "path", "required": True, "schema": STRING}],
            "get": _operation("one OpenAI model", oa),
        },
        "/health": _get_and_head("status, engines, devices, loaded models, queue", mp),
        "/metrics": {"get": _operation("Prometheus metrics", mp, media="text/plain", statuses=())},
        "/openapi.json": {"get": _operation("this document", mp, statuses=())},
        "/api/models": _get_and_head("deprecated alias of /api/tags", mp, deprecated=True),
        "/v1/generate": {"post": _operation("one generation in modelport's terms", mp, _body(NATIVE))},
        "/v1/generate_stream": {"post": _operation("the same as server-sent events", mp, _body(NATIVE), media=SSE)},
        "/v1/generate_batch": {
            "post": _operation(
                "several prompts, one result each",
                mp,
                _body({**NATIVE, "prompts": {"type": "array", "items": STRING}}, ("model", "prompts")),
            )
        },
        **rustllm.openapi_paths(),  # RustLLM's REST API (at /api too with api=rustllm)
    }


def document(version: str) -> Schema:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "modelport",
            "version": version,
            "description": "Ollama- and OpenAI-compatible API over local models; see docs/http-api.md.",
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths(),
    }


class OpenAPI:
    def __init__(self, version: str) -> None:
        self._document = document(version)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self._document
