"""Structured output and tool calling, as values: what a request asks the output to
be (an :class:`OutputFormat`), the tools it offers (:class:`Tool`), how the model
may use them (:class:`ToolChoice`), and the calls it made (:class:`ToolCall`).

A request's :class:`OutputSpec` is what the grammar engine compiles into a token
constraint. Tool calls are written in one syntax, Hermes' (the one Qwen 2.5/3,
Hermes and SmolLM3 templates teach their models)::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

:class:`ToolCallSplitter` takes them out of the generated text as it streams.
"""

from __future__ import annotations

import enum
import json
import random
import re
import string
from typing import Any, Iterable, Mapping

import attrs

from .errors import InvalidRequest

TOOL_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"


def canonical_json(value: Any) -> str:
    """Compact JSON text, key order kept (it is meaningful in a schema)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _schema_text(value: object) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"a JSON schema must be valid JSON: {exc}") from None
    if not isinstance(value, Mapping):
        raise InvalidRequest("a JSON schema must be a JSON object")
    return canonical_json(dict(value))


@attrs.frozen(kw_only=True)
class OutputFormat:
    """JSON mode (any JSON object: ``schema_text`` is None) or output that
    validates against a JSON schema. ``strict``: every keyword of the schema must
    be enforced (one the grammar engine does not implement is an error); not
    strict: keywords it does not implement are ignored."""

    schema_text: str | None = attrs.field(default=None, converter=attrs.converters.optional(_schema_text))
    strict: bool = True
    name: str | None = None

    @classmethod
    def json_mode(cls) -> "OutputFormat":
        return cls()

    @classmethod
    def from_schema(
        cls, schema: Mapping[str, Any] | str, *, strict: bool = True, name: str | None = None
    ) -> "OutputFormat":
        return cls(schema_text=schema, strict=strict, name=name)  # type: ignore[arg-type]

    @property
    def is_json_mode(self) -> bool:
        return self.schema_text is None

    @property
    def schema(self) -> dict[str, Any]:
        """The schema; JSON mode is ``{"type": "object"}`` (as Ollama's and
        OpenAI's JSON modes: an object)."""
        return {"type": "object"} if self.schema_text is None else json.loads(self.schema_text)


EMPTY_PARAMETERS = canonical_json({"type": "object", "properties": {}})


def _tool_name(value: object) -> str:
    if not isinstance(value, str) or not TOOL_NAME.fullmatch(value):
        raise InvalidRequest(f"invalid tool name {value!r}: use 1 to 64 letters, digits, '_', '-' or '.'")
    return value


def _parameters(value: object) -> str:
    if value is None:
        return EMPTY_PARAMETERS
    return _schema_text(value)


@attrs.frozen(kw_only=True)
class Tool:
    """A function the model may call: its name, what it does, and the JSON schema
    of its arguments (an object)."""

    name: str = attrs.field(converter=_tool_name)
    description: str = ""
    parameters_text: str = attrs.field(default=EMPTY_PARAMETERS, converter=_parameters)

    @property
    def parameters(self) -> dict[str, Any]:
        return json.loads(self.parameters_text)

    def to_dict(self) -> dict[str, Any]:
        """The shape chat templates and both wire formats use."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    @classmethod
    def from_dict(cls, data: object) -> "Tool":
        """``{"type": "function", "function": {"name", "description", "parameters"}}``."""
        if not isinstance(data, Mapping):
            raise InvalidRequest("each tool must be an object")
        if data.get("type", "function") != "function":
            raise InvalidRequest(f"tool type {data.get('type')!r} is not supported; use 'function'")
        function = data.get("function")
        if not isinstance(function, Mapping):
            raise InvalidRequest("a tool needs a 'function' object with a 'name'")
        description = function.get("description") or ""
        if not isinstance(description, str):
            raise InvalidRequest("a tool's description must be a string")
        return cls(
            name=function.get("name"),
            description=description,  # type: ignore[arg-type]
            parameters_text=function.get("parameters"),
        )  # type: ignore[arg-type]


class ToolChoiceMode(str, enum.Enum):
    NONE = "none"  # text only: no call
    AUTO = "auto"  # the model decides; a call it starts is grammar-constrained
    REQUIRED = "required"  # the output is one or more calls
    FUNCTION = "function"  # the output is a call of the named function


def _mode(value: object) -> ToolChoiceMode:
    try:
        return ToolChoiceMode(value)
    except ValueError:
        raise InvalidRequest(f"tool_choice must be one of: {', '.join(m.value for m in ToolChoiceMode)}") from None


@attrs.frozen(kw_only=True)
class ToolChoice:
    mode: ToolChoiceMode = attrs.field(default=ToolChoiceMode.AUTO, converter=_mode)
    name: str | None = None

    def __attrs_post_init__(self) -> None:
        if (self.mode is ToolChoiceMode.FUNCTION) != (self.name is not None):
            raise InvalidRequest("a named tool_choice needs the function's name (and only it has one)")

    @classmethod
    def function(cls, name: str) -> "ToolChoice":
        return cls(mode=ToolChoiceMode.FUNCTION, name=name)


def new_call_id() -> str:
    """``call_`` and 8 lowercase letters or digits, as Ollama's ids."""
    return "call_" + "".join(random.choices(string.ascii_lowercase + string.digits, k=8))


def _arguments(value: object) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise InvalidRequest("invalid tool call arguments: not JSON") from None
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise InvalidRequest("invalid tool call arguments: they must be a JSON object")
    return canonical_json(dict(value))


@attrs.frozen(kw_only=True)
class ToolCall:
    """One call the model made: ``arguments_text`` is the arguments' JSON object."""

    name: str = attrs.field(converter=_tool_name)
    arguments_text: str = attrs.field(default="{}", converter=_arguments)
    id: str = attrs.field(factory=new_call_id)

    @property
    def arguments(self) -> dict[str, Any]:
        return json.loads(self.arguments_text)

    def to_dict(self) -> dict[str, Any]:
        """The shape chat templates read (and Ollama sends): arguments as an object."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}

    @classmethod
    def from_dict(cls, data: object) -> "ToolCall":
        """Ollama's (arguments an object) or OpenAI's (arguments a JSON string) shape."""
        if not isinstance(data, Mapping) or not isinstance(data.get("function"), Mapping):
            raise InvalidRequest("a tool call must be an object with a 'function'")
        function = data["function"]
        call_id = data.get("id")
        fields: dict[str, Any] = {"name": function.get("name"), "arguments_text": function.get("arguments")}
        if isinstance(call_id, str) and call_id:
            fields["id"] = call_id
        return cls(**fields)


def _tools(values: Iterable[Tool | Mapping[str, Any]]) -> tuple[Tool, ...]:
    tools = tuple(t if isinstance(t, Tool) else Tool.from_dict(t) for t in values)
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise InvalidRequest("tool names must be unique")
    return tools


@attrs.frozen(kw_only=True)
class OutputSpec:
    """What a constrained generation must produce: ``calls`` (the tools a call may
    name; empty: none) with ``choice`` (AUTO: text or calls; REQUIRED or FUNCTION:
    calls only), and ``format`` for what is not a call (None: free text)."""

    format: OutputFormat | None = None
    tools: tuple[Tool, ...] = attrs.field(default=(), converter=_tools)
    choice: ToolChoiceMode = ToolChoiceMode.AUTO

    @property
    def constrained(self) -> bool:
        return self.format is not None or bool(self.tools)

    @property
    def calls_only(self) -> bool:
        return bool(self.tools) and self.choice in (ToolChoiceMode.REQUIRED, ToolChoiceMode.FUNCTION)


# -- tool calls in the generated text -----------------------------------------------------


class ToolCallSplitter:
    """Streamed text in, (text, tool calls) out: ``<tool_call>`` blocks become
    :class:`ToolCall` s, the rest passes through. Text that may be the start of
    an opening marker is held back until it is known not to be. A block that does
    not parse as a call of one of ``tools`` stays in the text."""

    def __init__(self, tools: Iterable[Tool]) -> None:
        self._tools = {t.name: t for t in tools}
        self._buffer = ""
        self._inside = False

    def push(self, text: str) -> tuple[str, tuple[ToolCall, ...]]:
        self._buffer += text
        out: list[str] = []
        calls: list[ToolCall] = []
        while True:
            if self._inside:
                end = self._buffer.find(CALL_CLOSE)
                if end < 0:
                    break
                body = self._buffer[:end]
                self._buffer = self._buffer[end + len(CALL_CLOSE) :]
                self._inside = False
                call = self._parse(body)
                if call is None:
                    out.append(CALL_OPEN + body + CALL_CLOSE)
                else:
                    calls.append(call)
                continue
            start = self._buffer.find(CALL_OPEN)
            if start >= 0:
                out.append(self._buffer[:start])
                self._buffer = self._buffer[start + len(CALL_OPEN) :]
                self._inside = True
                continue
            keep = _partial_suffix(self._buffer, CALL_OPEN)
            out.append(self._buffer[: len(self._buffer) - keep])
            self._buffer = self._buffer[len(self._buffer) - keep :]
            break
        return "".join(out), tuple(calls)

    def flush(self) -> str:
        """What is held back at the end (an unfinished block is text)."""
        rest = (CALL_OPEN if self._inside else "") + self._buffer
        self._buffer, self._inside = "", False
        return rest

    def _parse(self, body: str) -> ToolCall | None:
        try:
            data = json.loads(body)
        except json.JSONDecodeError:
            return None
        if not isinstance(data, Mapping) or data.get("name") not in self._tools:
            return None
        arguments = data.get("arguments", data.get("parameters", {}))
        if not isinstance(arguments, Mapping):
            return None
        return ToolCall(name=data["name"], arguments_text=dict(arguments))  # type: ignore[arg-type]


def _partial_suffix(text: str, marker: str) -> int:
    """The length of the longest end of ``text`` that begins ``marker``."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0


def split_tool_calls(text: str, tools: Iterable[Tool]) -> tuple[str, tuple[ToolCall, ...]]:
    """The whole text at once: (the text outside calls, the calls)."""
    splitter = ToolCallSplitter(tools)
    head, calls = splitter.push(text)
    return head + splitter.flush(), calls


# -- the prompt side ------------------------------------------------------------------------


def template_renders_tools(template: str | None) -> bool:
    """Whether a chat template renders ``tools`` itself and teaches the call syntax
    modelport parses (``<tool_call>`` blocks): transformers' convention, a
    ``tools`` variable in the template."""
    return bool(template) and "tools" in template and CALL_OPEN in template  # type: ignore[operator]


FALLBACK_INSTRUCTIONS = (
    "You can call functions. The functions are described in JSON Schema below, between <tools> and "
    "</tools>.\n<tools>\n{tools}\n</tools>\n"
    "To call a function, answer with one block per call, and nothing else:\n"
    '<tool_call>\n{{"name": <function name>, "arguments": <arguments as a JSON object>}}\n</tool_call>\n'
    "The results come back between <tool_response> and </tool_response>. "
    "When no function helps, answer in plain text."
)


def tool_prompt(tools: Iterable[Tool]) -> str:
    """The system text that describes ``tools`` to a model whose template cannot."""
    listing = "\n".join(canonical_json(t.to_dict()) for t in tools)
    return FALLBACK_INSTRUCTIONS.format(tools=listing)


def call_text(call: ToolCall) -> str:
    """A call as the model writes it."""
    return f"{CALL_OPEN}\n{canonical_json({'name': call.name, 'arguments': call.arguments})}\n{CALL_CLOSE}"
