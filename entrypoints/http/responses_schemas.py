"""OpenAI's Responses API JSON <-> modelport's domain (``/v1/responses``).

Parsing gives a :class:`ResponsesCall`; rendering gives the ``response`` object and
the streamed events the official ``openai`` client reads
(``client.responses.create``). Nothing here does I/O.
"""

from __future__ import annotations

import time
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
    ModelRef,
    SamplingPolicy,
    Usage,
)

from .schemas import Body

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
LOGPROBS_INCLUDE = "message.output_text.logprobs"
SUPPORTED = ("model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "stream",
             "previous_response_id", "store", "top_logprobs", "include", "seed", "text", "tools",
             "tool_choice", "reasoning", "truncation", "stream_options")
# Accepted and ignored: they change nothing a local model does.
IGNORED = ("metadata", "user", "parallel_tool_calls", "service_tier", "safety_identifier", "prompt_cache_key",
           "prompt_cache_retention", "max_tool_calls")
OpenAIPolicy = Callable[[str, Mapping[str, Any]], SamplingPolicy]


@attrs.frozen(kw_only=True)
class ResponsesCall:
    """A parsed ``POST /v1/responses`` body. ``input`` is the conversation this
    request adds (after ``previous_response_id``'s, which the resource looks up);
    ``instructions`` is a system message that applies to this response only."""

    model: str
    input: tuple[ChatMessage, ...]
    instructions: str | None
    sampling: SamplingPolicy
    previous_response_id: str | None = None
    stream: bool = False
    store: bool = True
    logprobs: int | None = None
    echo: Mapping[str, Any] = attrs.field(factory=dict)  # request fields the response repeats

    def request(self, history: Sequence[ChatMessage] = ()) -> GenerationRequest:
        """The generation: instructions, then the earlier turns, then the input."""
        system = (ChatMessage.system(self.instructions),) if self.instructions else ()
        messages = Conversation(messages=system + tuple(history) + self.input)
        return GenerationRequest(model=ModelRef.parse(self.model), messages=messages, sampling=self.sampling,
                                 logprobs=self.logprobs)


def parse(body: Body, policy: OpenAIPolicy) -> ResponsesCall:
    unknown = sorted(key for key in body if key not in SUPPORTED and key not in IGNORED)
    if unknown:
        raise InvalidRequest(f"/v1/responses does not support {', '.join(unknown)}")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a string")
    ModelRef.parse(model)
    _refuse_unsupported(body)
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise InvalidRequest("'instructions' must be a string")
    previous = body.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise InvalidRequest("'previous_response_id' must be a string")
    store = body.get("store", True)
    stream = body.get("stream", False)
    for key, value in (("store", store), ("stream", stream)):
        if value is not None and not isinstance(value, bool):
            raise InvalidRequest(f"'{key}' must be a boolean")
    sampling = policy(model, {key: body[key] for key in ("temperature", "top_p", "seed") if key in body}
                      | ({"max_tokens": body["max_output_tokens"]} if body.get("max_output_tokens") is not None
                         else {}))
    echo = {"instructions": instructions, "max_output_tokens": body.get("max_output_tokens"),
            "previous_response_id": previous, "store": store is not False,
            "temperature": sampling.temperature, "top_p": sampling.top_p,
            "metadata": body.get("metadata") or {}, "user": body.get("user"),
            "top_logprobs": body.get("top_logprobs")}
    return ResponsesCall(model=model, input=_input(body.get("input")), instructions=instructions or None,
                         sampling=sampling, previous_response_id=previous, stream=bool(stream),
                         store=store is not False, logprobs=_logprobs(body), echo=echo)


def _refuse_unsupported(body: Body) -> None:
    """Clear 400s for what no model here can do (yet), each naming the field."""
    text = body.get("text")
    if text is not None:
        if not isinstance(text, Mapping):
            raise InvalidRequest("'text' must be an object")
        fmt = text.get("format")
        kind = fmt.get("type") if isinstance(fmt, Mapping) else fmt
        if fmt is not None and kind != "text":
            raise InvalidRequest(f"text.format {kind!r} is not supported yet (structured outputs); "
                                 "only {'type': 'text'}")
        if text.get("verbosity") not in (None, "medium"):
            raise InvalidRequest("text.verbosity is not supported")
    if body.get("tools"):
        raise InvalidRequest("tools are not supported yet on /v1/responses (function calling)")
    if body.get("tool_choice") not in (None, "none", "auto"):
        raise InvalidRequest("tool_choice is not supported: no tools can be given")
    reasoning = body.get("reasoning")
    if reasoning is not None and (not isinstance(reasoning, Mapping) or reasoning.get("effort") not in
                                  (None, "none") or reasoning.get("summary")):
        raise InvalidRequest("reasoning is not supported: no model here thinks")
    if body.get("truncation") not in (None, "disabled", "auto"):
        raise InvalidRequest("truncation must be 'disabled' or 'auto'")
    include = body.get("include")
    if include is not None:
        if not isinstance(include, list) or not all(isinstance(i, str) for i in include):
            raise InvalidRequest("'include' must be an array of strings")
        others = [i for i in include if i != LOGPROBS_INCLUDE]
        if others:
            raise InvalidRequest(f"include {', '.join(others)} is not supported; only {LOGPROBS_INCLUDE}")


def _logprobs(body: Body) -> int | None:
    top = body.get("top_logprobs")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= MAX_LOGPROBS):
        raise InvalidRequest(f"'top_logprobs' must be an integer from 0 to {MAX_LOGPROBS}")
    if top is not None or LOGPROBS_INCLUDE in (body.get("include") or ()):
        return top or 0
    return None


def _input(value: object) -> tuple[ChatMessage, ...]:
    """A string (one user message) or a list of input items (messages)."""
    if isinstance(value, str):
        if not value:
            raise InvalidRequest("'input' must not be empty")
        return (ChatMessage.user(value),)
    if not isinstance(value, list) or not value:
        raise InvalidRequest("'input' is required: a string or a non-empty array of input items")
    return tuple(_item(item, i) for i, item in enumerate(value))


def _item(item: object, index: int) -> ChatMessage:
    where = f"input[{index}]"
    if not isinstance(item, Mapping):
        raise InvalidRequest(f"{where} must be an object")
    kind = item.get("type", "message")
    if kind in ("function_call", "function_call_output"):
        raise InvalidRequest(f"{where}: {kind} items are not supported yet (function calling)")
    if kind in ("reasoning", "item_reference"):
        raise InvalidRequest(f"{where}: {kind} items are not supported")
    if kind != "message":
        raise InvalidRequest(f"{where}.type {kind!r} is not supported; send messages")
    role = item.get("role")
    if role not in ROLES:
        raise InvalidRequest(f"{where}.role must be one of: {', '.join(ROLES)}")
    return ChatMessage(role=ROLES[role], content=_content(item.get("content"), where))


def _content(value: object, where: str) -> str:
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise InvalidRequest(f"{where}.content must be a string or an array of content parts")
    texts = []
    for part in value:
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "input_image":
            raise InvalidRequest("no model here supports images (input_image)")
        elif kind in ("input_file", "input_audio"):
            raise InvalidRequest(f"no model here supports {kind} parts")
        elif kind == "refusal":
            texts.append(str(part.get("refusal", "")))
        else:
            raise InvalidRequest(f"{where}.content parts must be input_text parts with a text")
    return "".join(texts)


# -- rendering ---------------------------------------------------------------------------------


def new_ids() -> tuple[str, str]:
    """(response id, message item id)."""
    return f"resp_{uuid.uuid4().hex}", f"msg_{uuid.uuid4().hex}"


def usage(value: Usage) -> dict[str, Any]:
    return {"input_tokens": value.prompt_tokens,
            "input_tokens_details": {"cached_tokens": value.cached_tokens},
            "output_tokens": value.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": value.total_tokens}


def text_part(text: str, logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "output_text", "text": text, "annotations": []}
    if logprobs is not None:
        part["logprobs"] = logprobs
    return part


def message_item(item_id: str, status: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": parts}


def status_of(reason: FinishReason | None) -> str:
    if reason is None:
        return "in_progress"
    return "incomplete" if reason is FinishReason.LENGTH else "completed"


def response(call: ResponsesCall, response_id: str, created: float, *, status: str,
             output: list[dict[str, Any]], usage_: Usage | None = None,
             error: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``response`` object, in any state (in_progress, completed, incomplete, failed)."""
    return {
        "id": response_id, "object": "response", "created_at": int(created), "status": status,
        "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "model": call.model, "output": output,
        "parallel_tool_calls": False, "tool_choice": "none", "tools": [],
        "text": {"format": {"type": "text"}}, "reasoning": {"effort": None, "summary": None},
        "truncation": "disabled", "background": False,
        "usage": usage(usage_) if usage_ is not None else None,
        **call.echo,
    }


def now() -> float:
    return time.time()
