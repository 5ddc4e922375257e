"""The wire shapes of structured output and tool calls, Ollama's and OpenAI's.

Requests: Ollama ``format`` ("json" or a schema) and ``tools``; OpenAI
``response_format`` (``json_object``, ``json_schema`` with ``strict``), ``tools``
and ``tool_choice``. Answers: Ollama's ``message.tool_calls`` (arguments an
object, one whole call per streamed chunk), OpenAI's (arguments a JSON string,
call ids, ``finish_reason: "tool_calls"``, streamed as ``delta.tool_calls``).
The Responses API (``/v1/responses``) writes the same requests flatter
(``text.format`` is ``{"type": "json_schema", "name", "schema", "strict"}``, a
tool is ``{"type": "function", "name", "parameters"}``) and reads them into the
same values here.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import attrs

from modelport.domain import (
    ChatMessage,
    InvalidRequest,
    OutputFormat,
    Role,
    Tool,
    ToolCall,
    ToolChoice,
    canonical_json_text,
)

# -- requests -------------------------------------------------------------------------------


def ollama_format(value: object) -> OutputFormat | None:
    """Ollama's ``format``: "json" (JSON mode) or a JSON schema object."""
    if value is None or value == "":
        return None
    if value == "json":
        return OutputFormat.json_mode()
    if isinstance(value, Mapping):
        return OutputFormat.from_schema(value)
    raise InvalidRequest('field "format" must be "json" or a JSON schema object')


def parse_tools(value: object) -> tuple[Tool, ...]:
    """``tools``: ``[{"type": "function", "function": {"name", "description", "parameters"}}]``."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidRequest('field "tools" must be an array')
    return tuple(Tool.from_dict(tool) for tool in value)


def openai_response_format(value: object) -> OutputFormat | None:
    """``text``, ``json_object`` or ``json_schema`` (``{"name", "schema", "strict"}``)."""
    return _output_format(value, "response_format", nested=True)


def _output_format(value: object, field: str, *, nested: bool) -> OutputFormat | None:
    """``{"type": "text" | "json_object" | "json_schema", ...}`` at ``field``: the
    schema's ``name``, ``schema`` and ``strict`` beside ``type`` (Responses'
    ``text.format``) or, ``nested``, in a ``json_schema`` object (chat completions)."""
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, Mapping) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return OutputFormat.json_mode()
    if kind == "json_schema":
        if not nested:
            return _json_schema(value, field)  # type: ignore[arg-type]
        spec = value.get("json_schema")  # type: ignore[union-attr]
        if not isinstance(spec, Mapping):
            raise InvalidRequest(f"{field} json_schema needs a 'json_schema' object with a 'schema'")
        return _json_schema(spec, f"{field}.json_schema")
    raise InvalidRequest(f"{field}.type must be one of: text, json_object, json_schema")


def _json_schema(spec: Mapping[str, Any], field: str) -> OutputFormat:
    """``{"name", "schema", "strict"}`` (no schema: any JSON object), ``field``
    naming where it was in the errors."""
    schema = spec.get("schema")
    if schema is None:
        schema = {"type": "object"}
    strict = spec.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise InvalidRequest(f"{field}.strict must be a boolean")
    name = spec.get("name")
    if name is not None and not isinstance(name, str):
        raise InvalidRequest(f"{field}.name must be a string")
    try:
        return OutputFormat.from_schema(schema, strict=bool(strict), name=name)
    except InvalidRequest as exc:
        raise InvalidRequest(f"{field}.schema: {exc}") from None


def openai_tool_choice(value: object) -> ToolChoice:
    """``none``, ``auto``, ``required`` or ``{"type": "function", "function": {"name"}}``."""
    if value is None:
        return ToolChoice()
    if value in ("none", "auto", "required"):
        return ToolChoice(mode=value)  # type: ignore[arg-type]
    if isinstance(value, Mapping) and value.get("type") == "function":
        function = value.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        if isinstance(name, str) and name:
            return ToolChoice.function(name)
    raise InvalidRequest(
        'tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}'
    )


# -- the Responses API's requests ----------------------------------------------------------


def responses_text_format(value: object) -> OutputFormat | None:
    """``text.format``: ``{"type": "text"}`` (None), ``{"type": "json_object"}`` or
    ``{"type": "json_schema", "name", "schema", "strict"}``."""
    return _output_format(value, "text.format", nested=False)


def responses_tools(value: object) -> tuple[Tool, ...]:
    """``tools``: ``[{"type": "function", "name", "description", "parameters",
    "strict"}]`` (chat completions' ``{"type": "function", "function": {...}}``
    is read too). Call arguments always validate against ``parameters`` (the
    grammar enforces them whether ``strict`` or not). Other tool types (the
    hosted ones: web search, file search, MCP ...) are refused, naming them."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidRequest("'tools' must be an array")
    tools = []
    for index, tool in enumerate(value):
        where = f"tools[{index}]"
        if not isinstance(tool, Mapping):
            raise InvalidRequest(f"{where} must be an object")
        kind = tool.get("type")
        if kind != "function":
            raise InvalidRequest(f"{where}.type {kind!r} is not supported; only function tools are")
        if "function" in tool and "name" not in tool:  # chat completions' shape, as sent by mistake: read it
            tool = {**tool["function"], "type": "function"} if isinstance(tool["function"], Mapping) else {}
        strict = tool.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise InvalidRequest(f"{where}.strict must be a boolean")
        description = tool.get("description")
        if description is not None and not isinstance(description, str):
            raise InvalidRequest(f"{where}.description must be a string")
        try:
            tools.append(
                Tool(
                    name=tool.get("name"),
                    description=description or "",  # type: ignore[arg-type]
                    parameters_text=tool.get("parameters"),
                )
            )  # type: ignore[arg-type]
        except InvalidRequest as exc:
            raise InvalidRequest(f"{where}: {exc}") from None
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise InvalidRequest("tools: tool names must be unique")
    return tuple(tools)


def responses_tool_choice(value: object) -> ToolChoice:
    """``none``, ``auto``, ``required`` or ``{"type": "function", "name"}``."""
    if value is None:
        return ToolChoice()
    if value in ("none", "auto", "required"):
        return ToolChoice(mode=value)  # type: ignore[arg-type]
    if isinstance(value, Mapping) and value.get("type") == "function":
        name = value.get("name")
        if isinstance(name, str) and name:
            return ToolChoice.function(name)
    kind = value.get("type") if isinstance(value, Mapping) else None
    if kind not in (None, "function"):
        raise InvalidRequest(f"tool_choice {kind!r} is not supported; only function tools are")
    raise InvalidRequest('tool_choice must be "none", "auto", "required" or {"type": "function", "name": ...}')


def name_tool_results(messages: Sequence[ChatMessage]) -> tuple[ChatMessage, ...]:
    """``messages`` with each tool result that does not name its tool given the name
    of the call it answers, so that the model is told which tool it came from: the
    earlier call whose id is its ``tool_call_id`` (what the OpenAI clients and
    litellm's ``ollama_chat`` send), else the call in its place among the calls of
    the assistant message before it (langchain-ollama sends neither a name nor an
    id: the k-th result after that message answers its k-th call). A result that
    matches no call stays unnamed."""
    names: dict[str, str] = {}
    in_order: list[str] = []  # the last assistant message's calls, in order, while its results follow
    out = []
    for message in messages:
        if message.role is not Role.TOOL:
            in_order = [call.name for call in message.tool_calls]
            names.update((call.id, call.name) for call in message.tool_calls)
        else:
            by_place = in_order.pop(0) if in_order else None
            if message.tool_name is None:
                name = names.get(message.tool_call_id or "") or by_place
                message = attrs.evolve(message, tool_name=name)
        out.append(message)
    return tuple(out)


# -- answers --------------------------------------------------------------------------------


def ollama_calls(calls: Sequence[ToolCall], start: int = 0) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "function": {"index": start + i, "name": c.name, "arguments": c.arguments}}
        for i, c in enumerate(calls)
    ]


def openai_calls(calls: Sequence[ToolCall], start: int = 0, *, streamed: bool = False) -> list[dict[str, Any]]:
    shapes = []
    for i, call in enumerate(calls):
        shape: dict[str, Any] = {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": canonical_json_text(call.arguments)},
        }
        if streamed:
            shape = {"index": start + i, **shape}
        shapes.append(shape)
    return shapes
