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
    MAX_LOGPROBS,
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
from modelport.domain.sampling import typed

from . import tools as tool_wire
from .model_schemas import EmbedCall, listed_names, parse_dimensions, resize
from .schemas import Body, store_name

FINGERPRINT = "fp_modelport"
MAX_PROMPTS = 64  # /v1/completions answers them one after the other, as /v1/generate_batch does
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
ENCODINGS = ("float", "base64")
# Fields the server accepts and ignores: they change nothing a local model could do.
IGNORED = (
    "user",
    "logit_bias",
    "presence_penalty",
    "frequency_penalty",
    "parallel_tool_calls",
    "metadata",
    "store",
    "service_tier",
    "prediction",
    "modalities",
)

MAX_CHOICES = 16
OpenAIPolicy = Callable[[Mapping[str, Any]], SamplingPolicy]  # a body's sampling fields -> policy

# OpenAI's sampling fields (and the common extensions top_k, min_p, repeat_penalty)
# -> SamplingPolicy fields: the one place they are mapped.
FIELD_OF: dict[str, tuple[str, type]] = {
    "temperature": ("temperature", float),
    "top_p": ("top_p", float),
    "top_k": ("top_k", int),
    "min_p": ("min_p", float),
    "repeat_penalty": ("repeat_penalty", float),
    "seed": ("seed", int),
    "max_tokens": ("max_tokens", int),
    "max_completion_tokens": ("max_tokens", int),
}


def sampling_changes(body: Mapping[str, Any]) -> dict[str, Any]:
    """The SamplingPolicy changes an OpenAI body's fields ask for, typed."""
    changes: dict[str, Any] = {}
    for key, (field, kind) in FIELD_OF.items():
        if body.get(key) is not None:
            changes[field] = typed(key, body[key], kind)
    if "stop" in body:
        changes["stop"] = body["stop"] if body["stop"] is not None else ()
    return changes


def openai_policy(services: Any, model: ModelInfo) -> OpenAIPolicy:
    """The policy of an OpenAI-style request to ``model`` (the route's one lookup):
    its fields over the model's own defaults over modelport's (``Services.sampling_for``)."""
    return lambda body: services.sampling_for(model, sampling_changes(body))


def default_policy(body: Mapping[str, Any]) -> SamplingPolicy:
    """A body's fields over modelport's defaults (no model's own defaults)."""
    return SamplingPolicy().with_changes(sampling_changes(body))


@attrs.frozen(kw_only=True)
class OpenAICall:
    model: str
    requests: tuple[GenerationRequest, ...]
    stream: bool = False
    include_usage: bool = False
    n: int = 1  # choices per request
    logprobs: int | None = None  # None: not asked; k: the token's and k alternatives

    @property
    def request(self) -> GenerationRequest:
        return self.requests[0]


# -- requests -----------------------------------------------------------------------------


def parse_chat(body: Body, policy: OpenAIPolicy = default_policy, shown: str | None = None) -> OpenAICall:
    """``/v1/chat/completions``. ``shown`` is the name errors call the model by (the
    server passes the store's, as the Ollama routes say it; default: the body's)."""
    model = _model(body)
    shown = shown or model
    raw = body.get("messages")
    if not isinstance(raw, list):
        raise InvalidRequest("'messages' is required and must be an array")
    if not raw:
        raise InvalidRequest("'messages' must not be empty")
    messages = Conversation(messages=tool_wire.name_tool_results([_message(m, i) for i, m in enumerate(raw)]))
    _refuse_unsupported(body, shown)
    top = chat_logprobs(body)
    request = GenerationRequest(
        model=ModelRef.parse(model),
        messages=messages,
        sampling=policy(body),
        logprobs=top,
        format=tool_wire.openai_response_format(body.get("response_format")),
        tools=tool_wire.parse_tools(body.get("tools") or None),
        tool_choice=tool_wire.openai_tool_choice(body.get("tool_choice")),
    )
    return OpenAICall(model=model, requests=(request,), n=choices(body), logprobs=top, **_streaming(body))


def parse_completion(body: Body, policy: OpenAIPolicy = default_policy, shown: str | None = None) -> OpenAICall:
    """``/v1/completions``: a raw prompt (no chat template); a list of prompts gives
    one choice each (not streamed). ``shown``: as for :func:`parse_chat`."""
    model = _model(body)
    prompts = _prompts(body.get("prompt"))
    shown = shown or model
    if body.get("suffix"):
        raise InvalidRequest(f"'{shown}' does not support insert (suffix)")
    if body.get("echo"):
        raise InvalidRequest("echo is not supported")
    n = choices(body)
    if _number(body, "best_of", n) != n:
        raise InvalidRequest("best_of must equal n: every choice generated is returned")
    top = _integer(body, "logprobs", 0, MAX_LOGPROBS)
    _refuse_unsupported(body, shown)
    if body.get("tools"):
        raise InvalidRequest("tools need /v1/chat/completions")
    sampling = policy(body)
    fmt = tool_wire.openai_response_format(body.get("response_format"))
    requests = tuple(
        GenerationRequest(model=ModelRef.parse(model), prompt=p, sampling=sampling, logprobs=top, format=fmt)
        for p in prompts
    )
    flags = _streaming(body)
    if flags["stream"] and len(requests) > 1:
        raise InvalidRequest("stream a single prompt at a time")
    return OpenAICall(model=model, requests=requests, n=n, logprobs=top, **flags)


def choices(body: Body) -> int:
    """``n``: how many choices to generate (1 to 16)."""
    return _integer(body, "n", 1, MAX_CHOICES) or 1


def chat_logprobs(body: Body) -> int | None:
    """Chat's ``logprobs`` (a boolean) and ``top_logprobs`` (0 to 20): None when not
    asked, else how many alternatives to report beside each token."""
    wanted = body.get("logprobs")
    if wanted is not None and not isinstance(wanted, bool):
        raise InvalidRequest("'logprobs' must be a boolean")
    top = _integer(body, "top_logprobs", 0, MAX_LOGPROBS)
    if top is not None and not wanted:
        raise InvalidRequest("'top_logprobs' needs 'logprobs': true")
    return (top or 0) if wanted else None


def _integer(body: Body, key: str, low: int, high: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(f"'{key}' must be an integer from {low} to {high}, got {value!r}")
    return value


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


def model_name(body: Body) -> str:
    """The body's ``model``: a well-formed store name (400 when missing or not one)."""
    return _model(body)


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
    tool_name = data.get("name") if role == "tool" else None  # else the call it answers names it
    call_id = data.get("tool_call_id") if role == "tool" else None
    return ChatMessage(
        role=ROLES[role],
        content=_content(data.get("content"), index),
        tool_name=tool_name if isinstance(tool_name, str) else None,
        tool_calls=data.get("tool_calls") or None,
        tool_call_id=call_id if isinstance(call_id, str) else None,
    )


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


def finish(reason: FinishReason | None, called: bool = False) -> str | None:
    """OpenAI's finish reason; a stop after tool calls is ``tool_calls``."""
    if reason is None:
        return None
    if reason is FinishReason.LENGTH:
        return "length"
    return "tool_calls" if called else "stop"


def usage(value: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": value.prompt_tokens,
        "completion_tokens": value.completion_tokens,
        "total_tokens": value.total_tokens,
        "prompt_tokens_details": {"cached_tokens": value.cached_tokens},
    }


def add_usage(values: Sequence[Usage]) -> Usage:
    return Usage(
        prompt_tokens=sum(u.prompt_tokens for u in values),
        completion_tokens=sum(u.completion_tokens for u in values),
        cached_tokens=sum(u.cached_tokens for u in values),
    )


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
        return {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
            **extra,
        }


def chat_message(
    text: str, reason: FinishReason, index: int = 0, logprobs: dict[str, Any] | None = None, calls: Sequence[Any] = ()
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message = {"role": "assistant", "content": text or None, "tool_calls": tool_wire.openai_calls(calls)}
    return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish(reason, bool(calls))}


def chat_delta(
    delta: dict[str, Any],
    reason: FinishReason | None = None,
    index: int = 0,
    logprobs: dict[str, Any] | None = None,
    called: bool = False,
) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish(reason, called)}


def text_choice(
    text: str, reason: FinishReason | None, index: int = 0, logprobs: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish(reason)}


def embeddings(
    vectors: Sequence[Sequence[float]], model: str, prompt_tokens: int, encoding: str, dimensions: int | None
) -> dict[str, Any]:
    data = [
        {"object": "embedding", "index": i, "embedding": encode(resize(tuple(v), dimensions), encoding)}
        for i, v in enumerate(vectors)
    ]
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def encode(vector: list[float], encoding: str) -> list[float] | str:
    """``float``: the numbers; ``base64``: little-endian float32 bytes, base64."""
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def model_entry(model: ModelInfo, name: str | None = None) -> dict[str, Any]:
    owner = ModelRef.parse(model.name).org or "library"
    return {"id": name or model.name, "object": "model", "created": int(model.modified_at), "owned_by": owner}


def model_list(models: Sequence[ModelInfo]) -> dict[str, Any]:
    """Every model, and each alias under its canonical name (as ``/api/tags``)."""
    return {"object": "list", "data": [model_entry(m, name) for m, name in listed_names(list(models))]}
