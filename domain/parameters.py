"""Modelfile parameters, the names Ollama's ``options`` share, as sampling changes.

A model's own defaults are stored under these names (a Modelfile's ``PARAMETER``
lines, a GGUF's metadata, ``index.json``, saved chats), so the domain keeps this one
table: :func:`changes` reads them into :class:`~.sampling.SamplingPolicy` field
changes, :func:`parameters` writes a policy back.

>>> changes({"num_predict": 12, "seed": -1, "mirostat": 2})
{'seed': None, 'max_tokens': 12}
>>> parameters(SamplingPolicy(seed=3))["seed"]
3
"""

from __future__ import annotations

from typing import Any, Mapping

from .errors import InvalidRequest
from .sampling import SamplingPolicy, _stops

# parameter name -> (SamplingPolicy field, type)
FIELD_OF: dict[str, tuple[str, type]] = {
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


def changes(options: Mapping[str, Any] | None, *, what: str = "options") -> dict[str, Any]:
    """The field changes ``options`` ask for, typed; unknown names are ignored (as
    Ollama does). Ollama's sentinels: seed -1 is a random seed, num_predict -1
    (or -2) no limit; num_predict 0 is refused."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InvalidRequest(f"{what} must be an object")
    found: dict[str, Any] = {}
    for key, (field, kind) in FIELD_OF.items():
        if key in options and options[key] is not None:
            found[field] = typed(key, options[key], kind)
    if "seed" in found and found["seed"] < 0:
        found["seed"] = None
    if "max_tokens" in found and found["max_tokens"] < 0:
        found["max_tokens"] = None
    if found.get("max_tokens") == 0:
        raise InvalidRequest("num_predict must not be 0")
    return found


def policy(options: Mapping[str, Any] | None, base: SamplingPolicy | None = None) -> SamplingPolicy:
    """``base`` (modelport's defaults) with ``options`` applied, validated."""
    return (base or SamplingPolicy()).with_changes(changes(options))


def parameters(policy: SamplingPolicy) -> dict[str, Any]:
    """Every setting of ``policy`` under its parameter name (what :func:`changes` reads back)."""
    options: dict[str, Any] = {
        "temperature": policy.temperature,
        "top_k": policy.top_k,
        "top_p": policy.top_p,
        "min_p": policy.min_p,
        "repeat_penalty": policy.repeat_penalty,
        "repeat_last_n": policy.repeat_last_n,
        "num_ctx": policy.num_ctx,
        "num_predict": -1 if policy.max_tokens is None else policy.max_tokens,
        "seed": -1 if policy.seed is None else policy.seed,
    }
    if policy.stop:
        options["stop"] = list(policy.stop)
    return options


def typed(key: str, value: Any, kind: type) -> Any:
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
