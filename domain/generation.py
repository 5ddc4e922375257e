"""Requests to an engine and the events it streams back."""

from __future__ import annotations

import enum
from typing import Iterable

import attrs

from .errors import InvalidRequest, PromptTooLong
from .messages import ChatMessage, Conversation
from .models import ModelRef
from .sampling import SamplingPolicy
from .structured import OutputFormat, OutputSpec, Tool, ToolCall, ToolChoice, ToolChoiceMode, _tools


class FinishReason(str, enum.Enum):
    STOP = "stop"  # end-of-sequence token or a stop string
    LENGTH = "length"  # max_tokens reached, or the context window is full
    CANCELLED = "cancelled"
    ERROR = "error"


@attrs.frozen(kw_only=True)
class Usage:
    """Token counts and timings, in nanoseconds as Ollama reports them.
    ``cached_tokens``: how many of the prompt tokens were not computed again,
    found in the cache of an earlier request."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    load_ns: int = 0
    prompt_eval_ns: int = 0
    eval_ns: int = 0
    total_ns: int = 0

    @property
    def prompt_rate(self) -> float:
        """Prompt tokens per second (0 when not measured)."""
        return _rate(self.prompt_tokens, self.prompt_eval_ns)

    @property
    def eval_rate(self) -> float:
        """Decode steps per second (0 when not measured): ``eval_ns`` runs from the
        first generated token, which comes with the prompt's evaluation, to the
        last, so it holds one step fewer than the tokens. The CLI's --verbose and
        the benches report this one rate."""
        return _rate(max(0, self.completion_tokens - 1), self.eval_ns)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _rate(tokens: int, ns: int) -> float:
    return tokens / ns * 1e9 if ns > 0 else 0.0


MAX_LOGPROBS = 20
# No token of a tokenizer we know spans more bytes than this (SmolLM2's longest is 81,
# a newline and 80 spaces), so a prompt of more than num_ctx x MAX_TOKEN_BYTES bytes
# cannot fit in num_ctx tokens, whatever it tokenizes to. Such a prompt is refused by
# its size, before anything tokenizes it.
MAX_TOKEN_BYTES = 256


def _conversation(value: Conversation | Iterable[ChatMessage]) -> Conversation:
    return value if isinstance(value, Conversation) else Conversation(messages=tuple(value))


@attrs.frozen(kw_only=True)
class GenerationRequest:
    """Either a raw ``prompt`` (sent as is) or ``messages`` (rendered through the
    model's chat template). Never both. ``logprobs``: report each token's
    log-probability (0) and that many most likely alternatives (1 to 20); None:
    none. ``format``: the output must be JSON (validating against its schema);
    ``tools``: functions the model may call (a chat only), as ``tool_choice``
    says."""

    model: ModelRef
    prompt: str = ""
    messages: Conversation = attrs.field(factory=Conversation, converter=_conversation)
    sampling: SamplingPolicy = attrs.field(factory=SamplingPolicy)
    logprobs: int | None = None
    format: OutputFormat | None = None
    tools: tuple[Tool, ...] = attrs.field(default=(), converter=_tools)
    tool_choice: ToolChoice = attrs.field(factory=ToolChoice)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.prompt, str):
            raise InvalidRequest("prompt must be a string")
        if self.prompt and len(self.messages):
            raise InvalidRequest("give either a prompt or messages, not both")
        if self.logprobs is not None and not (isinstance(self.logprobs, int) and 0 <= self.logprobs <= MAX_LOGPROBS):
            raise InvalidRequest(f"logprobs must be an integer from 0 to {MAX_LOGPROBS}")
        choice = self.tool_choice
        if self.tools and not self.is_chat:
            raise InvalidRequest("tools need messages (a chat), not a raw prompt")
        if choice.mode in (ToolChoiceMode.REQUIRED, ToolChoiceMode.FUNCTION) and not self.tools:
            raise InvalidRequest(f"tool_choice {choice.name or choice.mode.value!r} needs tools")
        if choice.name is not None and choice.name not in {t.name for t in self.tools}:
            raise InvalidRequest(f"tool_choice names '{choice.name}', which is not one of the tools")
        _check_size(self._texts(), self.sampling.num_ctx)

    @property
    def is_chat(self) -> bool:
        return len(self.messages) > 0

    @property
    def calls_tools(self) -> bool:
        """Whether the model is offered tools to call (tool_choice is not none)."""
        return bool(self.tools) and self.tool_choice.mode is not ToolChoiceMode.NONE

    @property
    def output_spec(self) -> OutputSpec:
        """What a constraint must enforce (nothing: ``constrained`` is False)."""
        choice = self.tool_choice
        if not self.calls_tools:
            return OutputSpec(format=self.format)
        tools = tuple(t for t in self.tools if choice.name is None or t.name == choice.name)
        return OutputSpec(format=self.format, tools=tools, choice=choice.mode)

    def check_fits(self, context_length: int) -> None:
        """Refuse (:class:`PromptTooLong`) a prompt too long for a model whose own
        context is ``context_length`` tokens (when that is less than ``num_ctx``)."""
        if 0 < context_length < self.sampling.num_ctx:
            _check_size(self._texts(), context_length)

    def _texts(self) -> list[str]:
        return [self.prompt] if self.prompt else [m.content for m in self.messages]


def _check_size(texts: list[str], num_ctx: int) -> None:
    """Refuse text that cannot fit in ``num_ctx`` tokens (by its UTF-8 size, which
    costs no tokenizing), or that is not valid Unicode (a lone surrogate from JSON)."""
    limit = num_ctx * MAX_TOKEN_BYTES
    if sum(len(text) for text in texts) > limit:  # each character is at least a byte
        raise PromptTooLong(sum(len(text) for text in texts), num_ctx, limit)
    size = 0
    for text in texts:
        try:
            size += len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise InvalidRequest(f"the prompt is not valid Unicode: {exc.reason} at character {exc.start}") from None
    if size > limit:
        raise PromptTooLong(size, num_ctx, limit)


@attrs.frozen(kw_only=True)
class EmbeddingRequest:
    model: ModelRef
    inputs: tuple[str, ...] = attrs.field(converter=tuple)
    truncate: bool = True

    @inputs.validator
    def _strings(self, _attribute: object, value: tuple) -> None:
        if not all(isinstance(text, str) for text in value):
            raise InvalidRequest("embedding inputs must be strings")


@attrs.frozen(kw_only=True)
class TokenEvent:
    """One step of a generation stream.

    Every event but the last carries a text delta (possibly empty while a multi-byte
    character or a possible stop string is held back). The last event has
    ``finish_reason`` and ``usage`` set. ``logprob`` is the token's log-probability
    under the distribution it was drawn from; ``top_logprobs`` the most likely
    tokens there, as (token id, log-probability), when the request asked for them.
    ``tool_calls``: calls the model completed with this event (their text is not
    in any ``text``).
    """

    text: str = ""
    token_id: int | None = None
    logprob: float | None = None
    top_logprobs: tuple[tuple[int, float], ...] = ()
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    tool_calls: tuple[ToolCall, ...] = ()

    @property
    def done(self) -> bool:
        return self.finish_reason is not None


@attrs.frozen(kw_only=True)
class Completion:
    """A whole generation, folded from its events."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason
    usage: Usage
    logprobs: tuple[float, ...] = ()
    top_logprobs: tuple[tuple[tuple[int, float], ...], ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()

    @classmethod
    def fold(cls, events: Iterable[TokenEvent]) -> "Completion":
        parts: list[str] = []
        calls: list[ToolCall] = []
        tokens: list[int] = []
        logprobs: list[float] = []
        top: list[tuple[tuple[int, float], ...]] = []
        for event in events:
            parts.append(event.text)
            calls.extend(event.tool_calls)
            if event.token_id is not None:
                tokens.append(event.token_id)
                if event.top_logprobs:
                    top.append(event.top_logprobs)
            if event.logprob is not None:
                logprobs.append(event.logprob)
            if event.done:
                return cls(
                    text="".join(parts),
                    token_ids=tuple(tokens),
                    finish_reason=event.finish_reason,
                    usage=event.usage or Usage(completion_tokens=len(tokens)),
                    logprobs=tuple(logprobs),
                    top_logprobs=tuple(top),
                    tool_calls=tuple(calls),
                )
        raise RuntimeError("the generation stream ended without a final event")


@attrs.frozen(kw_only=True)
class Embeddings:
    model: str
    vectors: tuple[tuple[float, ...], ...]
    usage: Usage = attrs.field(factory=Usage)


def system_and_user(prompt: str, system: str | None = None) -> Conversation:
    """The conversation a one-shot prompt becomes when it goes through a chat template."""
    messages = (ChatMessage.system(system),) if system else ()
    return Conversation(messages=messages + (ChatMessage.user(prompt),))
