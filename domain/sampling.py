"""How the next token is chosen: one validated policy, in its own field names.

Each wire format maps onto these fields at its edge (Ollama's options and Modelfile
parameters: ``domain/modelfile.py``'s one table, ``PARAMETER_FIELDS``; OpenAI's fields: ``entrypoints/http/openai_schemas.py``;
the CLI's flags: ``entrypoints/commands/generation.py``; the chat's ``/set``:
``entrypoints/repl.py``); :func:`layered` merges the layers.
"""

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
    num_ctx: int = attrs.field(
        default=DEFAULT_NUM_CTX, validator=_check(lambda v: v >= MIN_NUM_CTX, f">= {MIN_NUM_CTX}")
    )

    @classmethod
    def greedy(cls, max_tokens: int | None = None, **overrides: Any) -> "SamplingPolicy":
        return cls(temperature=0.0, top_k=1, top_p=1.0, max_tokens=max_tokens, **overrides)

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1

    def replace(self, **changes: Any) -> "SamplingPolicy":
        return attrs.evolve(self, **changes)

    def with_changes(self, changes: Mapping[str, Any] | None) -> "SamplingPolicy":
        """This policy with ``changes`` (field name -> value) applied, validated;
        a name that is not a field is refused."""
        if not changes:
            return self
        unknown = sorted(set(changes) - set(FIELDS))
        if unknown:
            raise InvalidRequest(f"unknown sampling setting {unknown[0]!r}; one of: {', '.join(FIELDS)}")
        return attrs.evolve(self, **changes)


FIELDS: tuple[str, ...] = tuple(field.name for field in attrs.fields(SamplingPolicy))


def layered(*changes: Mapping[str, Any] | None) -> SamplingPolicy:
    """modelport's defaults, then each mapping of changes in turn (a model's own
    defaults, then a request's): the one place sampling settings are merged.

    >>> layered({"temperature": 0.2, "top_k": 5}, {"temperature": 0.0}).temperature
    0.0
    >>> layered({"temperature": 0.2, "top_k": 5}, {"temperature": 0.0}).top_k
    5
    """
    policy = SamplingPolicy()
    for layer in changes:
        policy = policy.with_changes(layer)
    return policy


def typed(key: str, value: Any, kind: type) -> Any:
    """A wire value for a field of ``kind`` (int, float, or list: stop strings),
    refused by its wire name ``key`` when it has another type."""
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
