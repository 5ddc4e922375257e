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
    OutputFormat,
    Role,
    SamplingPolicy,
    Tool,
    ToolCall,
    ToolChoice,
    Usage,
    canonical_json_text,
)

from . import tools as tool_wire
from .schemas import Body

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
LOGPROBS_INCLUDE = "message.output_text.logprobs"
SUPPORTED = (
    "model",
    "input",
    "instructions",
    "max_output_tokens",
    "temperature",
    "top_p",
    "stream",
    "previous_response_id",
    "store",
    "top_logprobs",
    "include",
    "seed",
    "text",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning",
    "truncation",
    "stream_options",
)
# Accepted and ignored: they change nothing a local model does (max_tool_calls
# counts calls of hosted tools, which there are none of).
IGNORED = (
    "metadata",
    "user",
    "service_tier",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "max_tool_calls",
)
OpenAIPolicy = Callable[[str, Mapping[str, Any]], SamplingPolicy]


@attrs.frozen(kw_only=True)
class ResponsesCall:
    """A parsed ``POST /v1/responses`` body. ``input`` is the conversation this
    request adds (after ``previous_response_id``'s, which the resource looks up);
    ``instructions`` is a system message that applies to this response only.
    ``format``, ``tools`` and ``tool_choice`` are chat completions' own values
    (``text.format``, ``tools``, ``tool_choice`` read from their Responses shapes);
    ``parallel_tool_calls`` false keeps one call at most."""

    model: str
    input: tuple[ChatMessage, ...]
    instructions: str | None
    sampling: SamplingPolicy
    previous_response_id: str | None = None
    stream: bool = False
    store: bool = True
    logprobs: int | None = None
    format: OutputFormat | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = attrs.field(factory=ToolChoice)
    parallel_tool_calls: bool = True
    echo: Mapping[str, Any] = attrs.field(factory=dict)  # request fields the response repeats

    def request(self, history: Sequence[ChatMessage] = ()) -> GenerationRequest:
        """The generation: instructions, then the earlier turns, then the input
        (each tool result named after the call it answers, found in either)."""
        system = (ChatMessage.system(self.instructions),) if self.instructions else ()
        turns = named_results(tuple(history), self.input)
        messages = Conversation(messages=system + tuple(history) + turns)
        return GenerationRequest(
            model=ModelRef.parse(self.model),
            messages=messages,
            sampling=self.sampling,
            logprobs=self.logprobs,
            format=self.format,
            tools=self.tools,
            tool_choice=self.tool_choice,
        )

    def kept_calls(self, calls: Sequence[ToolCall]) -> tuple[ToolCall, ...]:
        """The calls an answer gives: all of them, or the first with
        ``parallel_tool_calls: false``."""
        return tuple(calls) if self.parallel_tool_calls else tuple(calls[:1])


def named_results(history: tuple[ChatMessage, ...], turns: tuple[ChatMessage, ...]) -> tuple[ChatMessage, ...]:
    """``turns`` with each tool result (a ``function_call_output``) given the name
    of the call whose ``call_id`` it answers; a result that answers no call of the
    conversation is a 400, as OpenAI's."""
    names: dict[str, str] = {}
    out = []
    for message in history + turns:
        for call in message.tool_calls:
            names[call.id] = call.name
    for message in turns:
        if message.role is Role.TOOL and message.tool_name is None:
            if message.tool_call_id not in names:
                raise InvalidRequest(
                    f"input: no function_call found for the function_call_output with call_id '{message.tool_call_id}'"
                )
            message = attrs.evolve(message, tool_name=names[message.tool_call_id])
        out.append(message)
    return tuple(out)


def model_name(body: Body) -> str:
    """The body's ``model`` (400 when missing or malformed)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a string")
    ModelRef.parse(model)
    return model


def parse(body: Body, policy: OpenAIPolicy) -> ResponsesCall:
    unknown = sorted(key for key in body if key not in SUPPORTED and key not in IGNORED)
    if unknown:
        raise InvalidRequest(f"/v1/responses does not support {', '.join(unknown)}")
    model = model_name(body)
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
    sampling = policy(
        {key: body[key] for key in ("temperature", "top_p", "seed") if key in body}
        | ({"max_tokens": body["max_output_tokens"]} if body.get("max_output_tokens") is not None else {})
    )
    text = body.get("text") or {}
    fmt = tool_wire.responses_text_format(text.get("format"))
    tools = tool_wire.responses_tools(body.get("tools"))
    choice = tool_wire.responses_tool_choice(body.get("tool_choice"))
    parallel = body.get("parallel_tool_calls", True)
    if parallel is not None and not isinstance(parallel, bool):
        raise InvalidRequest("'parallel_tool_calls' must be a boolean")
    echo = {
        "instructions": instructions,
        "max_output_tokens": body.get("max_output_tokens"),
        "previous_response_id": previous,
        "store": store is not False,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "metadata": body.get("metadata") or {},
        "user": body.get("user"),
        "top_logprobs": body.get("top_logprobs"),
        "text": {"format": dict(text.get("format") or {"type": "text"})},
        "tools": [_tool_echo(t, spec) for t, spec in zip(tools, body.get("tools") or ())],
        "tool_choice": _choice_echo(choice),
        "parallel_tool_calls": parallel is not False,
    }
    return ResponsesCall(
        model=model,
        input=_input(body.get("input")),
        instructions=instructions or None,
        sampling=sampling,
        previous_response_id=previous,
        stream=bool(stream),
        store=store is not False,
        logprobs=_logprobs(body),
        format=fmt,
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=parallel is not False,
        echo=echo,
    )


def _tool_echo(tool: Tool, spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "name": tool.name,
        "description": tool.description or None,
        "parameters": tool.parameters,
        "strict": spec.get("strict"),
    }


def _choice_echo(choice: ToolChoice) -> str | dict[str, Any]:
    if choice.name is not None:
        return {"type": "function", "name": choice.name}
    return choice.mode.value


def _refuse_unsupported(body: Body) -> None:
    """Clear 400s for what no model here can do (yet), each naming the field."""
    text = body.get("text")
    if text is not None:
        if not isinstance(text, Mapping):
            raise InvalidRequest("'text' must be an object")
        unknown = sorted(key for key in text if key not in ("format", "verbosity"))
        if unknown:
            raise InvalidRequest(f"text.{unknown[0]} is not supported")
        if text.get("verbosity") not in (None, "medium"):
            raise InvalidRequest("text.verbosity is not supported")
    reasoning = body.get("reasoning")
    if reasoning is not None and (
        not isinstance(reasoning, Mapping) or reasoning.get("effort") not in (None, "none") or reasoning.get("summary")
    ):
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
    """A string (one user message) or a list of input items: messages, the
    model's ``function_call`` s (joined to the assistant turn they follow) and
    the ``function_call_output`` s that answer them (``tool`` messages)."""
    if isinstance(value, str):
        if not value:
            raise InvalidRequest("'input' must not be empty")
        return (ChatMessage.user(value),)
    if not isinstance(value, list) or not value:
        raise InvalidRequest("'input' is required: a string or a non-empty array of input items")
    messages: list[ChatMessage] = []
    for index, item in enumerate(value):
        message = _item(item, index)
        last = messages[-1] if messages else None
        if message.tool_calls and not message.content and last is not None and last.role is Role.ASSISTANT:
            messages[-1] = attrs.evolve(last, tool_calls=last.tool_calls + message.tool_calls)
        else:
            messages.append(message)
    return tuple(messages)


def _item(item: object, index: int) -> ChatMessage:
    where = f"input[{index}]"
    if not isinstance(item, Mapping):
        raise InvalidRequest(f"{where} must be an object")
    kind = item.get("type", "message")
    if kind == "function_call":
        return _function_call(item, where)
    if kind == "function_call_output":
        return _function_call_output(item, where)
    if kind in ("reasoning", "item_reference"):
        raise InvalidRequest(f"{where}: {kind} items are not supported")
    if kind != "message":
        raise InvalidRequest(f"{where}.type {kind!r} is not supported; send messages")
    role = item.get("role")
    if role not in ROLES:
        raise InvalidRequest(f"{where}.role must be one of: {', '.join(ROLES)}")
    return ChatMessage(role=ROLES[role], content=_content(item.get("content"), f"{where}.content"))


def _call_id(item: Mapping[str, Any], where: str) -> str:
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(f"{where}.call_id is required and must be a string")
    return call_id


def _function_call(item: Mapping[str, Any], where: str) -> ChatMessage:
    """A call the model made: ``{"call_id", "name", "arguments": "<JSON>"}``."""
    call_id = _call_id(item, where)
    arguments = item.get("arguments")
    if not isinstance(arguments, str):
        raise InvalidRequest(f"{where}.arguments must be a string (the arguments' JSON object)")
    try:
        call = ToolCall(name=item.get("name"), arguments_text=arguments, id=call_id)  # type: ignore[arg-type]
    except InvalidRequest as exc:
        raise InvalidRequest(f"{where}: {exc}") from None
    return ChatMessage(role=Role.ASSISTANT, tool_calls=(call,))


def _function_call_output(item: Mapping[str, Any], where: str) -> ChatMessage:
    """A call's result: ``{"call_id", "output"}``, the output a string or text parts."""
    call_id = _call_id(item, where)
    output = item.get("output")
    if isinstance(output, list):
        output = _content(output, f"{where}.output")
    elif not isinstance(output, str):
        raise InvalidRequest(f"{where}.output must be a string or an array of input_text parts")
    return ChatMessage(role=Role.TOOL, content=output, tool_call_id=call_id)


def _content(value: object, where: str) -> str:
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise InvalidRequest(f"{where} must be a string or an array of content parts")
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
            raise InvalidRequest(f"{where} parts must be input_text parts with a text")
    return "".join(texts)


# -- rendering ---------------------------------------------------------------------------------


def new_ids() -> tuple[str, str]:
    """(response id, message item id)."""
    return f"resp_{uuid.uuid4().hex}", new_item_id()


def new_item_id(kind: str = "msg") -> str:
    """An output item's id: ``msg_...`` for a message, ``fc_...`` for a function call."""
    return f"{kind}_{uuid.uuid4().hex}"


def usage(value: Usage) -> dict[str, Any]:
    return {
        "input_tokens": value.prompt_tokens,
        "input_tokens_details": {"cached_tokens": value.cached_tokens},
        "output_tokens": value.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": value.total_tokens,
    }


def text_part(text: str, logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "output_text", "text": text, "annotations": []}
    if logprobs is not None:
        part["logprobs"] = logprobs
    return part


def message_item(item_id: str, status: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": parts}


def function_call_item(
    item_id: str, call: ToolCall, status: str = "completed", arguments: str | None = None
) -> dict[str, Any]:
    """A ``function_call`` output item: ``arguments`` the JSON text (empty while in progress)."""
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call.id,
        "name": call.name,
        "arguments": canonical_json_text(call.arguments) if arguments is None else arguments,
    }


def status_of(reason: FinishReason | None) -> str:
    if reason is None:
        return "in_progress"
    return "incomplete" if reason is FinishReason.LENGTH else "completed"


def response(
    call: ResponsesCall,
    response_id: str,
    created: float,
    *,
    status: str,
    output: list[dict[str, Any]],
    usage_: Usage | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``response`` object, in any state (in_progress, completed, incomplete, failed)."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(created),
        "status": status,
        "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "model": call.model,
        "output": output,
        "reasoning": {"effort": None, "summary": None},
        "truncation": "disabled",
        "background": False,
        "usage": usage(usage_) if usage_ is not None else None,
        **call.echo,
    }


def now() -> float:
    return time.time()
