"""A chat session: the model, the conversation and the sampling in force, and its
saved form (a JSON file whose ``options`` are the Modelfile's PARAMETER names)."""

from __future__ import annotations

import json

import attrs

from .errors import InvalidRequest
from .messages import ChatMessage, Conversation, Role
from .modelfile import as_parameters, parameter_policy
from .sampling import SamplingPolicy
from .structured import ToolCall

DEFAULT_KEPT_TURNS = 10


@attrs.frozen(kw_only=True)
class ChatSession:
    """A saved chat: the model, its messages and the sampling options in force."""

    id: str = attrs.field(validator=attrs.validators.matches_re(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"))
    model: str
    conversation: Conversation = attrs.field(factory=Conversation)
    sampling: SamplingPolicy = attrs.field(factory=SamplingPolicy)
    kept_turns: int = attrs.field(default=DEFAULT_KEPT_TURNS, validator=attrs.validators.ge(1))

    def with_user(self, content: str) -> "ChatSession":
        return attrs.evolve(self, conversation=self.conversation.add(ChatMessage.user(content)))

    def with_reply(self, content: str, tool_calls: "tuple[ToolCall, ...]" = ()) -> "ChatSession":
        reply = ChatMessage(role=Role.ASSISTANT, content=content, tool_calls=tool_calls)
        return attrs.evolve(self, conversation=self.conversation.add(reply))

    def with_system(self, prompt: str | None) -> "ChatSession":
        return attrs.evolve(self, conversation=self.conversation.with_system(prompt))

    def cleared(self) -> "ChatSession":
        """Forget the turns, keep the system prompt."""
        return attrs.evolve(self, conversation=Conversation().with_system(self.conversation.system_prompt))

    @property
    def context(self) -> Conversation:
        """What is sent to the model: the system prompt and the last ``kept_turns`` turns."""
        return self.conversation.last_turns(self.kept_turns)

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "model": self.model,
                "messages": [m.to_dict() for m in self.conversation],
                "options": as_parameters(self.sampling),
                "kept_turns": self.kept_turns,
            },
            indent=2,
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str) -> "ChatSession":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"not a saved chat session: {exc}") from None
        if not isinstance(data, dict) or "id" not in data or "model" not in data:
            raise InvalidRequest("not a saved chat session: 'id' and 'model' are required")
        try:
            return cls(
                id=data["id"],
                model=data["model"],
                conversation=Conversation(messages=data.get("messages") or ()),
                sampling=parameter_policy(data.get("options") or {}),
                kept_turns=data.get("kept_turns", DEFAULT_KEPT_TURNS),
            )
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(f"not a saved chat session: {exc}") from None
