"""OpenAI's JSON <-> modelport's domain, for the ``/v1`` compatibility routes.

Parsing gives an :class:`OpenAICall` (a domain request plus the wire choices around
it); rendering gives the objects the official ``openai`` client reads. Nothing here
does I/O.
"""

from __future__ import annotations

import base64
import struct
import uuid
from typing import Any, Callable, Mapping, Sequence

import attrs

from modelport.domain import (
    ChatMessage,
    Conversation,
    FinishReason,
    GenerationRequest,
    InvalidRequest,
    ModelInfo,
    ModelRef,
    SamplingPolicy,
    Usage,
)

from .schemas import Body, EmbedCall, parse_dimensions, resize, store_name

FINGERPRINT = "fp_modelport"
MAX_PROMPTS = 64  # /v1/completions answers them one after the other, as /v1/generate_batch does
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
ENCODINGS = ("float", "base64")
# Fields the server accepts and ignores: they change nothing a local model could do.
IGNORED = ("user", "logit_bias", "presence_penalty", "frequency_penalty", "parallel_tool_calls",
           "metadata", "store", "service_tier", "prediction", "modalities")

OpenAIPolicy = Callable[[str, Mapping[str, Any]], SamplingPolicy]


@attrs.frozen(kw_only=True)
class OpenAICall:
    model: str
    requests: tuple[GenerationRequest, ...]
    stream: bool = False
    include_usage: bool = False

    @property
    def request(self) -> GenerationRequest:
        return self.requests[0]


# -- requests -----------------------------------------------------------------------------


def parse_chat(body: Body, policy: OpenAIPolicy) -> OpenAICall:
    """``/v1/chat/completions``."""
    model = _model(body)
    raw = body.get("messages")
    if not isinstance(raw, list):
        raise InvalidRequest("'messages' is required and must be an array")
    if not raw:
        raise InvalidRequest("'messages' must not be empty")
    messages = Conversation(messages=tuple(_message(m, i) for i, m in enumerate(raw)))
    _refuse_unsupported(body, model)
    request = GenerationRequest(model=ModelRef.parse(model), messages=messages, sampling=policy(model, body))
    return OpenAICall(model=model, requests=(request,), **_streaming(body))


def parse_completion(body: Body, policy: OpenAIPolicy) -> OpenAICall:
    """``/v1/completions``: a raw prompt (no chat template); a list of prompts gives
    one choice each (not streamed)."""
    model = _model(body)
    prompts = _prompts(body.get("prompt"))
    if body.get("suffix"):
        raise InvalidRequest(f"'{model}' does not support insert (suffix)")
    if body.get("echo"):
        raise InvalidRequest("echo is not supported")
    if _number(body, "best_of", 1) != 1:
        raise InvalidRequest("best_of must be 1")
    if body.get("logprobs") not in (None, 0):
        raise InvalidRequest("logprobs are not supported yet")
    _refuse_unsupported(body, model)
    sampling = policy(model, body)
    requests = tuple(GenerationRequest(model=ModelRef.parse(model), prompt=p, sampling=sampling) for p in prompts)
    flags = _streaming(body)
    if flags["stream"] and len(requests) > 1:
        raise InvalidRequest("stream a single prompt at a time")
    return OpenAICall(model=model, requests=requests, **flags)


def parse_embeddings(body: Body) -> tuple[EmbedCall, str]:
    """``/v1/embeddings``: (the call, the encoding: ``float`` or ``base64``)."""
    model = _model(body)
    value = body.get("input")
    if isinstance(value, str):
        inputs: tuple[str, ...] = (value,)
    elif isinstance(value, list) and value and all(isinstance(text, str) for text in value):
        inputs = tuple(value)
    elif isinstance(value, list) and value and all(isinstance(t, (int, list)) for t in value):
        raise InvalidRequest("token arrays are not supported as input; send strings")
    else:
        raise InvalidRequest("invalid input: 'input' must be a string or a non-empty array of strings")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ENCODINGS:
        raise InvalidRequest(f"invalid encoding_format {encoding!r}; supported: {', '.join(ENCODINGS)}")
    return EmbedCall(model=model, inputs=inputs, dimensions=parse_dimensions(body.get("dimensions"))), encoding


def _model(body: Body) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a string")
    return store_name(model)


def _message(data: object, index: int) -> ChatMessage:
    if not isinstance(data, Mapping):
        raise InvalidRequest(f"messages[{index}] must be an object with 'role' and 'content'")
    role = data.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise InvalidRequest(f"messages[{index}].role must be one of: {', '.join(ROLES)}")
    if data.get("tool_calls"):
        raise InvalidRequest(f"messages[{index}] has tool_calls, but no model here supports tools")
    tool_name = data.get("name") or data.get("tool_call_id") if role == "tool" else None
    return ChatMessage(role=ROLES[role], content=_content(data.get("content"), index),
                       tool_name=tool_name if isinstance(tool_name, str) else None)


def _content(value: object, index: int) -> str:
    """A string, or an array of parts of which only text parts are understood."""
    if value is None or isinstance(value, str):
        return value or ""
    if not isinstance(value, list):
        raise InvalidRequest(f"messages[{index}].content must be a string or an array of parts")
    texts = []
    for part in value:
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind in ("image_url", "input_image"):
            raise InvalidRequest("no model here supports images")
        elif kind in ("input_audio", "file"):
            raise InvalidRequest(f"no model here supports {kind} parts")
        else:
            raise InvalidRequest(f"messages[{index}].content parts must be objects with type 'text' and a text")
    return "".join(texts)


def _prompts(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(p, str) for p in value):
        if len(value) > MAX_PROMPTS:
            raise InvalidRequest(f"at most {MAX_PROMPTS} prompts per request, got {len(value)}")
        return tuple(value)
    if isinstance(value, list) and value and all(isinstance(p, (int, list)) for p in value):
        raise InvalidRequest("token arrays are not supported as prompt; send a string")
    raise InvalidRequest("'prompt' is required and must be a string or a non-empty array of strings")


def _refuse_unsupported(body: Body, model: str) -> None:
    """Clear 400s for what no model here can do yet."""
    if _number(body, "n", 1) != 1:
        raise InvalidRequest("n must be 1: one choice per request")
    fmt = body.get("response_format")
    if fmt is not None:
        kind = fmt.get("type") if isinstance(fmt, Mapping) else None
        if kind in ("json_object", "json_schema"):
            raise InvalidRequest(f"response_format {kind} is not supported yet (structured outputs)")
        if kind != "text":
            raise InvalidRequest("response_format.type must be one of: text, json_object, json_schema")
    tools = body.get("tools")
    if tools and body.get("tool_choice") != "none":
        raise InvalidRequest(f"'{model}' does not support tools")
    if body.get("logprobs") is True or body.get("top_logprobs"):
        raise InvalidRequest("logprobs are not supported yet")
    effort = body.get("reasoning_effort")
    if effort not in (None, "none"):
        raise InvalidRequest(f"'{model}' does not support thinking (reasoning_effort)")


def _number(body: Body, key: str, default: int) -> object:
    value = body.get(key)
    return default if value is None else value


def _streaming(body: Body) -> dict[str, bool]:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, Mapping):
        raise InvalidRequest("'stream_options' must be an object")
    include = bool((options or {}).get("include_usage"))
    return {"stream": bool(stream), "include_usage": include}


# -- responses ----------------------------------------------------------------------------


def finish(reason: FinishReason | None) -> str | None:
    if reason is None:
        return None
    return "length" if reason is FinishReason.LENGTH else "stop"


def usage(value: Usage) -> dict[str, Any]:
    return {"prompt_tokens": value.prompt_tokens, "completion_tokens": value.completion_tokens,
            "total_tokens": value.total_tokens,
            "prompt_tokens_details": {"cached_tokens": value.cached_tokens}}


def add_usage(values: Sequence[Usage]) -> Usage:
    return Usage(prompt_tokens=sum(u.prompt_tokens for u in values),
                 completion_tokens=sum(u.completion_tokens for u in values),
                 cached_tokens=sum(u.cached_tokens for u in values))


@attrs.frozen
class Envelope:
    """What every object of one answer shares: id, object type, created, model."""

    id: str
    object: str
    created: int
    model: str

    @classmethod
    def chat(cls, model: str, now: float, chunk: bool = False) -> "Envelope":
        kind = "chat.completion.chunk" if chunk else "chat.completion"
        return cls(f"chatcmpl-{uuid.uuid4().hex[:24]}", kind, int(now), model)

    @classmethod
    def completion(cls, model: str, now: float) -> "Envelope":
        return cls(f"cmpl-{uuid.uuid4().hex[:24]}", "text_completion", int(now), model)

    def wrap(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {"id": self.id, "object": self.object, "created": self.created, "model": self.model,
                "system_fingerprint": FINGERPRINT, "choices": choices, **extra}


def chat_message(text: str, reason: FinishReason, index: int = 0) -> dict[str, Any]:
    return {"index": index, "message": {"role": "assistant", "content": text},
            "logprobs": None, "finish_reason": finish(reason)}


def chat_delta(delta: dict[str, Any], reason: FinishReason | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish(reason)}


def text_choice(text: str, reason: FinishReason | None, index: int = 0) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish(reason)}


def embeddings(vectors: Sequence[Sequence[float]], model: str, prompt_tokens: int, encoding: str,
               dimensions: int | None) -> dict[str, Any]:
    data = [{"object": "embedding", "index": i, "embedding": encode(resize(tuple(v), dimensions), encoding)}
            for i, v in enumerate(vectors)]
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}


def encode(vector: list[float], encoding: str) -> list[float] | str:
    """``float``: the numbers; ``base64``: little-endian float32 bytes, base64."""
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def model_entry(model: ModelInfo) -> dict[str, Any]:
    owner = ModelRef.parse(model.name).org or "library"
    return {"id": model.name, "object": "model", "created": int(model.modified_at), "owned_by": owner}


def model_list(models: Sequence[ModelInfo]) -> dict[str, Any]:
    return {"object": "list", "data": [model_entry(m) for m in models]}
