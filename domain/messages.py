"""Chat messages and conversations."""

from __future__ import annotations

import enum
from typing import Any, Iterable, Mapping

import attrs

from .errors import InvalidRequest
from .structured import ToolCall


class Role(str, enum.Enum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


def _role(value: Role | str) -> Role:
    try:
        return Role(value.lower() if isinstance(value, str) else value)
    except ValueError:
        raise InvalidRequest(
            f"invalid message role '{value}'; use one of: {', '.join(r.value for r in Role)}"
        ) from None


def _text(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(f"message content must be a string, not {type(value).__name__}")
    return value


def _calls(values: Iterable[ToolCall | Mapping[str, Any]] | None) -> tuple[ToolCall, ...]:
    if values is None:
        return ()
    if not isinstance(values, (list, tuple)):
        raise InvalidRequest("tool_calls must be an array")
    return tuple(v if isinstance(v, ToolCall) else ToolCall.from_dict(v) for v in values)


@attrs.frozen(kw_only=True)
class ChatMessage:
    """One message. An assistant message may carry the ``tool_calls`` it made; a
    ``tool`` message is a call's result, naming the call (``tool_call_id``) and
    the tool (``tool_name``)."""

    role: Role = attrs.field(converter=_role)
    content: str = attrs.field(default="", converter=_text)
    tool_name: str | None = None
    tool_calls: tuple[ToolCall, ...] = attrs.field(default=(), converter=_calls)
    tool_call_id: str | None = None

    @classmethod
    def system(cls, content: str) -> "ChatMessage":
        return cls(role=Role.SYSTEM, content=content)

    @classmethod
    def user(cls, content: str) -> "ChatMessage":
        return cls(role=Role.USER, content=content)

    @classmethod
    def assistant(cls, content: str) -> "ChatMessage":
        return cls(role=Role.ASSISTANT, content=content)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ChatMessage":
        if not isinstance(data, Mapping):
            raise InvalidRequest("each message must be an object with 'role' and 'content'")
        if "role" not in data:
            raise InvalidRequest("a message is missing its 'role'")
        return cls(
            role=data["role"],
            content=data.get("content"),
            tool_name=data.get("tool_name"),
            tool_calls=data.get("tool_calls"),
            tool_call_id=data.get("tool_call_id"),
        )

    def to_dict(self) -> dict[str, Any]:
        """Ollama's shape, which chat templates read too (a tool message's tool
        also as ``name``, transformers' convention)."""
        data: dict[str, Any] = {"role": self.role.value, "content": self.content}
        if self.tool_calls:
            data["tool_calls"] = [call.to_dict() for call in self.tool_calls]
        if self.tool_name:
            data["tool_name"] = self.tool_name
            if self.role is Role.TOOL:
                data["name"] = self.tool_name
        if self.tool_call_id:
            data["tool_call_id"] = self.tool_call_id
        return data


def _messages(values: Iterable[ChatMessage | Mapping[str, Any]]) -> tuple[ChatMessage, ...]:
    return tuple(m if isinstance(m, ChatMessage) else ChatMessage.from_dict(m) for m in values)


@attrs.frozen(kw_only=True)
class Conversation:
    """An ordered, immutable list of messages."""

    messages: tuple[ChatMessage, ...] = attrs.field(default=(), converter=_messages)

    def add(self, *messages: ChatMessage) -> "Conversation":
        return Conversation(messages=self.messages + messages)

    @property
    def system_prompt(self) -> str | None:
        systems = [m.content for m in self.messages if m.role is Role.SYSTEM]
        return systems[0] if systems else None

    def with_system(self, prompt: str | None) -> "Conversation":
        """Replace every system message by ``prompt`` (or drop them when None)."""
        rest = tuple(m for m in self.messages if m.role is not Role.SYSTEM)
        head = (ChatMessage.system(prompt),) if prompt else ()
        return Conversation(messages=head + rest)

    def last_turns(self, turns: int) -> "Conversation":
        """The system prompt plus the last ``turns`` user turns and what followed them."""
        if turns < 1:
            raise ValueError("keep at least one turn")
        system = tuple(m for m in self.messages if m.role is Role.SYSTEM)[:1]
        rest = [m for m in self.messages if m.role is not Role.SYSTEM]
        user_positions = [i for i, m in enumerate(rest) if m.role is Role.USER]
        start = user_positions[-turns] if len(user_positions) >= turns else 0
        return Conversation(messages=system + tuple(rest[start:]))

    def __len__(self) -> int:
        return len(self.messages)

    def __iter__(self):
        return iter(self.messages)


def without_native_tools(conversation: Conversation, tools: "Iterable[Any]" = ()) -> Conversation:
    """The conversation for a chat template that knows nothing of tools (the
    documented fallback): ``tools`` described in the system message (see
    :func:`~modelport.domain.structured.tool_prompt`), earlier calls written
    into their assistant messages as ``<tool_call>`` blocks, and each tool result
    sent as a user message between ``<tool_response>`` tags."""
    from .structured import call_text, canonical_json, tool_prompt

    tools = tuple(tools)
    out: list[ChatMessage] = []
    for message in conversation:
        if message.role is Role.ASSISTANT and message.tool_calls:
            text = "\n".join(filter(None, [message.content, *(call_text(c) for c in message.tool_calls)]))
            out.append(ChatMessage.assistant(text))
        elif message.role is Role.TOOL:
            result = (
                {"name": message.tool_name, "content": message.content}
                if message.tool_name
                else {"content": message.content}
            )
            out.append(ChatMessage.user(f"<tool_response>\n{canonical_json(result)}\n</tool_response>"))
        else:
            out.append(message)
    if tools:
        system = conversation.system_prompt
        instructions = tool_prompt(tools)
        prompt = f"{system}\n\n{instructions}" if system else instructions
        return Conversation(messages=tuple(out)).with_system(prompt)
    return Conversation(messages=tuple(out))
