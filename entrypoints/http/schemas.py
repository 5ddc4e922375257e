"""Ollama's JSON <-> modelport's domain: the only module that knows the wire names.

Parsing turns a request body into a :class:`Call` (a domain request plus the few
HTTP-only choices around it); rendering turns domain values into Ollama's shapes.
Nothing here does I/O or calls a use case.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

import attrs

from modelport.domain import (
    MAX_LOGPROBS,
    ChatMessage,
    Conversation,
    FinishReason,
    GenerationRequest,
    InvalidModelName,
    InvalidRequest,
    ModelRef,
    SamplingPolicy,
    ToolCall,
    Usage,
    system_and_user,
)

from modelport.domain.modelfile import parameter_changes

from . import tools as tool_wire

THINK_LEVELS = ("low", "medium", "high", "max")
RAW_CONFLICT = "raw mode does not support template, system, or context"

Body = Mapping[str, Any]
Clock = Callable[[], float]


# -- requests -------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Call:
    """A parsed ``/api/generate`` or ``/api/chat`` body.

    ``request`` is None when the body only asks to load (or, with ``keep_alive`` 0,
    unload) the model. ``needs`` names features the client asked for that no model
    here offers yet (Ollama's capability names: images, insert, thinking, tools).
    """

    model: str
    request: GenerationRequest | None
    stream: bool = True
    keep_alive: float | None = None
    needs: tuple[str, ...] = ()

    @property
    def unloads(self) -> bool:
        return self.request is None and self.keep_alive == 0


# SamplingPolicy field changes -> the request's policy. The server passes one bound to
# the model it looked up (``Services.sampling_for``: the model's own defaults go in
# between), so parsing asks the store nothing.
Policy = Callable[["Mapping[str, Any] | None"], SamplingPolicy]


def default_policy(changes: Mapping[str, Any] | None) -> SamplingPolicy:
    """The request's changes over modelport's defaults."""
    return SamplingPolicy().with_changes(changes)


def parse_generate(body: Body, policy: Policy = default_policy) -> Call:
    """An Ollama ``GenerateRequest``.

    Supported: model, prompt, system, raw, stream, options, keep_alive, ``format``
    ("json" or a JSON schema: the output is constrained to it).
    Refused with 400 (no model here can honour them yet): non-empty ``images``
    (vision), ``suffix`` (fill-in-the-middle).
    Accepted and ignored: ``think`` (no model here has a reasoning mode),
    ``template`` (the model's own chat template is used), ``context``
    (deprecated), truncate, shift. ``logprobs``/``top_logprobs`` add each token's
    log-probability (and that many alternatives) to the answer.
    ``raw`` with system, template or context is refused, as Ollama does.
    """
    model = _model(body)
    prompt = _optional(body, "prompt", str, "")
    system = _optional(body, "system", str, "")
    raw = _optional(body, "raw", bool, False)
    template = _optional(body, "template", str, "")
    context = _optional(body, "context", list, [])
    if raw and (system or template or context):
        raise InvalidRequest(RAW_CONFLICT)
    needs = _needs(body, images=_optional(body, "images", list, []))
    if _optional(body, "suffix", str, ""):
        needs += ("insert",)
    request = None
    fmt = tool_wire.ollama_format(body.get("format"))
    if prompt or system:
        sampling = policy(parameter_changes(_options(body)))
        top = parse_logprobs(body)
        if raw:
            request = GenerationRequest(
                model=ModelRef.parse(model), prompt=prompt, sampling=sampling, logprobs=top, format=fmt
            )
        else:
            messages = system_and_user(prompt, system or None)
            request = GenerationRequest(
                model=ModelRef.parse(model), messages=messages, sampling=sampling, logprobs=top, format=fmt
            )
    return Call(
        model=model,
        request=request,
        stream=_stream(body),
        keep_alive=parse_keep_alive(body.get("keep_alive")),
        needs=needs,
    )


def parse_chat(body: Body, policy: Policy = default_policy) -> Call:
    """An Ollama ``ChatRequest``: model, messages, stream, options, keep_alive,
    ``format`` as in :func:`parse_generate`, and ``tools`` (the model decides
    whether to call one: Ollama has no ``tool_choice``). Messages may carry
    ``tool_calls`` (arguments an object); ``tool`` messages name their tool with
    ``tool_name`` (and may give ``tool_call_id``; without a name, the call they
    answer names it: :func:`tools.name_tool_results`). Images are refused.
    """
    model = _model(body)
    raw_messages = _optional(body, "messages", list, [])
    images = [image for m in raw_messages if isinstance(m, Mapping) for image in _images(m)]
    needs = _needs(body, images=images)
    fmt = tool_wire.ollama_format(body.get("format"))
    tools = tool_wire.parse_tools(body.get("tools"))
    messages = Conversation(messages=tool_wire.name_tool_results([ChatMessage.from_dict(m) for m in raw_messages]))
    request = None
    if len(messages):
        request = GenerationRequest(
            model=ModelRef.parse(model),
            messages=messages,
            sampling=policy(parameter_changes(_options(body))),
            logprobs=parse_logprobs(body),
            format=fmt,
            tools=tools,
        )
    return Call(
        model=model,
        request=request,
        stream=_stream(body),
        keep_alive=parse_keep_alive(body.get("keep_alive")),
        needs=needs,
    )


def parse_logprobs(body: Body) -> int | None:
    """Ollama's ``logprobs`` (a boolean) and ``top_logprobs`` (0 to 20): None when
    not asked, else how many alternatives to report beside each token."""
    wanted = _optional(body, "logprobs", bool, False)
    top = body.get("top_logprobs")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= MAX_LOGPROBS):
        raise InvalidRequest(f'field "top_logprobs" must be an integer from 0 to {MAX_LOGPROBS}')
    return (top or 0) if wanted else None


def _images(message: Mapping[str, Any]) -> list:
    images = message.get("images")
    if images is not None and not isinstance(images, list):
        raise InvalidRequest(f'field "images" of a message must be an array, not {_json_type(images)}')
    return images or []


def parse_show(body: Body) -> str:
    """``/api/show``: ``model``, or the legacy ``name``."""
    name = body.get("model") or body.get("name")
    if name is None:
        raise InvalidRequest("model is required")
    if not isinstance(name, str):
        raise InvalidRequest('field "model" must be a string')
    return store_name(name)


PATH_REFUSED = (
    "over HTTP a model is named as in the store ('name', 'name:tag' or 'org/name'), not by a path on the server"
)


def store_name(name: str, field: str = "model") -> str:
    """``name``, checked to be a well-formed store name: over HTTP a model is never
    a path (on the command line it may be), so no request can probe or load the
    server's files through it."""
    if ModelRef.parse(name).is_path:  # a malformed name fails here too
        raise InvalidModelName(f'field "{field}": {PATH_REFUSED}')
    return name


def model_name(body: Body) -> str:
    """The body's ``model``: a well-formed store name (400 when missing or not one)."""
    return _model(body)


def _model(body: Body) -> str:
    model = body.get("model")
    if model is None or model == "":
        raise InvalidRequest("model is required")
    if not isinstance(model, str):
        raise InvalidRequest('field "model" must be a string')
    return store_name(model)


def _stream(body: Body) -> bool:
    return _optional(body, "stream", bool, True)


def parse_stream(body: Body, default: bool = True) -> bool:
    """``stream`` (Ollama streams unless told not to; OpenAI the other way round)."""
    return _optional(body, "stream", bool, default)


def _options(body: Body) -> Mapping[str, Any] | None:
    return _optional(body, "options", dict, None)


def _needs(body: Body, *, images: list) -> tuple[str, ...]:
    needs: tuple[str, ...] = ()
    if images:
        needs += ("images",)
    _wants_thinking(body.get("think"))  # checked, then ignored: no model here has a reasoning mode
    return needs


def _wants_thinking(think: object) -> bool:
    if think is None or think is False:
        return False
    if think is True or think in THINK_LEVELS:
        return True
    raise InvalidRequest(f'field "think" must be a boolean or one of {", ".join(THINK_LEVELS)}')


_TYPE_NAMES = {str: "a string", bool: "a boolean", list: "an array", dict: "an object"}


def _optional(body: Body, name: str, kind: type, default: Any) -> Any:
    """``body[name]`` checked against ``kind``; ``default`` when absent or null."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise InvalidRequest(f'field "{name}" must be {_TYPE_NAMES[kind]}, not {_json_type(value)}')
    return value


def _json_type(value: object) -> str:
    names = {
        bool: "a boolean",
        str: "a string",
        int: "a number",
        float: "a number",
        list: "an array",
        dict: "an object",
    }
    return names.get(type(value), type(value).__name__)


# -- keep_alive: a number of seconds or a Go duration string ----------------------------

_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_SECONDS = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_DURATION = re.compile(r"([+-]?)((?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+")
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_keep_alive(value: object) -> float | None:
    """Seconds to keep the model loaded: None when absent, ``math.inf`` when
    negative (Ollama: forever). Accepts numbers (seconds) and duration strings
    ("5m", "1h30m", "-1s"; a bare number string counts as seconds)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidRequest('field "keep_alive" must be a number of seconds or a duration such as "5m"')
    seconds = float(value) if not isinstance(value, str) else parse_duration(value)
    if math.isnan(seconds):
        raise InvalidRequest('field "keep_alive" must be a number of seconds, not NaN')
    return math.inf if seconds < 0 else seconds


def parse_duration(text: str) -> float:
    """A Go duration string in seconds."""
    text = text.strip()
    if _SECONDS.fullmatch(text):
        return float(text)
    match = _DURATION.fullmatch(text)
    if match is None:
        raise InvalidRequest(f'invalid duration "{text}" for keep_alive; use e.g. "30s", "5m" or "1h"')
    seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(text))
    return -seconds if match.group(1) == "-" else seconds


# -- responses -------------------------------------------------------------------------


def rfc3339(timestamp: float) -> str:
    """``2024-05-04T22:57:36.389358Z``: RFC 3339 in UTC."""
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def metrics(usage: Usage) -> dict[str, int]:
    """Ollama's counts and durations (ns) from a final event's usage."""
    return {
        "total_duration": usage.total_ns,
        "load_duration": usage.load_ns,
        "prompt_eval_count": usage.prompt_tokens,
        "prompt_eval_duration": usage.prompt_eval_ns,
        "eval_count": usage.completion_tokens,
        "eval_duration": usage.eval_ns,
    }


TokenLogprobs = Callable[[Sequence[Any]], list]


@attrs.frozen
class Reply:
    """The objects of one ``/api/generate`` or ``/api/chat`` answer. ``logprobs``,
    when the request asked for them, renders a list of
    :class:`~.logprobs.TokenLogprob` in Ollama's shape."""

    model: str
    clock: Clock
    content: Callable[[str], dict[str, Any]]
    logprobs: TokenLogprobs | None = None

    def with_logprobs(self, render: TokenLogprobs) -> "Reply":
        return attrs.evolve(self, logprobs=render)

    def _logprobs(self, entries: Sequence[Any]) -> dict[str, Any]:
        return {} if self.logprobs is None else {"logprobs": self.logprobs(entries)}

    @classmethod
    def generate(cls, model: str, clock: Clock) -> "Reply":
        return cls(model, clock, lambda text: {"response": text})

    @classmethod
    def chat(cls, model: str, clock: Clock) -> "Reply":
        return cls(model, clock, lambda text: {"message": {"role": "assistant", "content": text}})

    def chunk(self, text: str, entries: Sequence[Any] = (), calls: tuple[ToolCall, ...] = ()) -> dict[str, Any]:
        return {**self._head(), **self._content(text, calls), **self._logprobs(entries), "done": False}

    def final(
        self,
        text: str,
        reason: FinishReason,
        usage: Usage,
        entries: Sequence[Any] = (),
        calls: tuple[ToolCall, ...] = (),
    ) -> dict[str, Any]:
        logprobs = self._logprobs(entries) if entries else {}
        return {
            **self._head(),
            **self._content(text, calls),
            **logprobs,
            "done": True,
            "done_reason": reason.value,
            **metrics(usage),
        }

    def _content(self, text: str, calls: tuple[ToolCall, ...]) -> dict[str, Any]:
        content = self.content(text)
        if calls and "message" in content:
            content["message"]["tool_calls"] = tool_wire.ollama_calls(calls)
        return content

    def done(self, reason: str) -> dict[str, Any]:
        """The answer to a load or unload request."""
        return {**self._head(), **self.content(""), "done": True, "done_reason": reason}

    def _head(self) -> dict[str, Any]:
        return {"model": self.model, "created_at": rfc3339(self.clock())}


def error(message: str) -> dict[str, str]:
    return {"error": message}
