"""How the next token is chosen: one validated policy, built from any wire format."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import attrs

from .errors import InvalidRequest

DEFAULT_NUM_CTX = 4096
# llama.cpp allocates at least 256 tokens of context (and rounds up to a multiple of
# 256), so a smaller window would not be what the engine runs: it is refused.
MIN_NUM_CTX = 256


def _check(condition: Callable[[Any], bool], requirement: str):
    def validate(_instance: object, attribute: attrs.Attribute, value: Any) -> None:
        if value is not None and not condition(value):
            raise InvalidRequest(f"{attribute.name} must be {requirement}, got {value!r}")

    return validate


def _stops(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) for s in value):
        raise InvalidRequest("stop must be a string or a list of strings")
    if any(s == "" for s in value):
        raise InvalidRequest("stop strings must not be empty")
    return tuple(dict.fromkeys(value))


@attrs.frozen(kw_only=True)
class SamplingPolicy:
    """Sampling settings, with Ollama's defaults.

    ``top_k=0`` and ``top_p=1`` switch those filters off, ``min_p=0`` likewise;
    ``temperature=0`` is greedy decoding. ``max_tokens=None`` generates until an
    end-of-sequence token, a stop string or the end of the context window.
    ``repeat_last_n=-1`` applies the repeat penalty over the whole context.
    """

    temperature: float = attrs.field(default=0.8, validator=_check(lambda v: v >= 0, ">= 0"))
    top_k: int = attrs.field(default=40, validator=_check(lambda v: v >= 0, ">= 0"))
    top_p: float = attrs.field(default=0.9, validator=_check(lambda v: 0 < v <= 1, "in (0, 1]"))
    min_p: float = attrs.field(default=0.0, validator=_check(lambda v: 0 <= v <= 1, "in [0, 1]"))
    repeat_penalty: float = attrs.field(default=1.0, validator=_check(lambda v: v > 0, "> 0"))
    repeat_last_n: int = attrs.field(default=64, validator=_check(lambda v: v >= -1, ">= -1"))
    seed: int | None = attrs.field(default=None, validator=_check(lambda v: v >= 0, ">= 0"))
    stop: tuple[str, ...] = attrs.field(default=(), converter=_stops)
    max_tokens: int | None = attrs.field(default=None, validator=_check(lambda v: v > 0, "> 0"))
    num_ctx: int = attrs.field(default=DEFAULT_NUM_CTX,
                               validator=_check(lambda v: v >= MIN_NUM_CTX, f">= {MIN_NUM_CTX}"))

    @classmethod
    def greedy(cls, max_tokens: int | None = None, **overrides: Any) -> "SamplingPolicy":
        return cls(temperature=0.0, top_k=1, top_p=1.0, max_tokens=max_tokens, **overrides)

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1

    def replace(self, **changes: Any) -> "SamplingPolicy":
        return attrs.evolve(self, **changes)

    # -- wire formats ---------------------------------------------------------------

    @classmethod
    def from_ollama_options(
        cls, options: Mapping[str, Any] | None, base: "SamplingPolicy | None" = None
    ) -> "SamplingPolicy":
        """Ollama's ``options`` object. Unknown keys are ignored, as Ollama does."""
        if options is None:
            return base or cls()
        if not isinstance(options, Mapping):
            raise InvalidRequest("options must be an object")
        changes: dict[str, Any] = {}
        for key, (field, kind) in _OLLAMA_KEYS.items():
            if key in options and options[key] is not None:
                changes[field] = _typed(key, options[key], kind)
        if "seed" in changes and changes["seed"] < 0:
            changes["seed"] = None  # Ollama: -1 means a random seed
        if "max_tokens" in changes and changes["max_tokens"] < 0:
            changes["max_tokens"] = None  # -1: no limit, -2: fill the context
        if changes.get("max_tokens") == 0:
            raise InvalidRequest("num_predict must not be 0")
        return attrs.evolve(base or cls(), **changes)

    @classmethod
    def from_openai(cls, body: Mapping[str, Any], base: "SamplingPolicy | None" = None) -> "SamplingPolicy":
        """OpenAI request fields, plus the common extensions top_k, min_p and repeat_penalty."""
        changes: dict[str, Any] = {}
        for key, (field, kind) in _OPENAI_KEYS.items():
            if body.get(key) is not None:
                changes[field] = _typed(key, body[key], kind)
        if "stop" in body:
            changes["stop"] = _stops(body["stop"])
        policy = base or cls(temperature=1.0, top_k=0, top_p=1.0)
        return attrs.evolve(policy, **changes)

    def to_options(self) -> dict[str, Any]:
        """The Ollama ``options`` object that :meth:`from_ollama_options` reads back."""
        options: dict[str, Any] = {
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "min_p": self.min_p,
            "repeat_penalty": self.repeat_penalty,
            "repeat_last_n": self.repeat_last_n,
            "num_ctx": self.num_ctx,
            "num_predict": -1 if self.max_tokens is None else self.max_tokens,
            "seed": -1 if self.seed is None else self.seed,
        }
        if self.stop:
            options["stop"] = list(self.stop)
        return options


_OLLAMA_KEYS: dict[str, tuple[str, type]] = {
    "temperature": ("temperature", float),
    "top_k": ("top_k", int),
    "top_p": ("top_p", float),
    "min_p": ("min_p", float),
    "repeat_penalty": ("repeat_penalty", float),
    "repeat_last_n": ("repeat_last_n", int),
    "seed": ("seed", int),
    "stop": ("stop", list),
    "num_predict": ("max_tokens", int),
    "num_ctx": ("num_ctx", int),
}

_OPENAI_KEYS: dict[str, tuple[str, type]] = {
    "temperature": ("temperature", float),
    "top_p": ("top_p", float),
    "top_k": ("top_k", int),
    "min_p": ("min_p", float),
    "repeat_penalty": ("repeat_penalty", float),
    "seed": ("seed", int),
    "max_tokens": ("max_tokens", int),
    "max_completion_tokens": ("max_tokens", int),
}


def _typed(key: str, value: Any, kind: type) -> Any:
    if kind is list:
        return _stops(value)
    if isinstance(value, bool):
        raise InvalidRequest(f'option "{key}" must be of type {_KIND_NAMES[kind]}')
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int):
            return value
    elif kind is float and isinstance(value, (int, float)):
        return float(value)
    raise InvalidRequest(f'option "{key}" must be of type {_KIND_NAMES[kind]}')


_KIND_NAMES = {int: "integer", float: "number"}
