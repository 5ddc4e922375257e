"""Jinja chat templates, rendered as Hugging Face's tokenizers render them: a
sandboxed environment with ``trim_blocks`` and ``lstrip_blocks``, the
``raise_exception`` and ``strftime_now`` helpers and a ``tojson`` filter.
``bos_token`` and ``eos_token`` are empty: the engine's tokenizer adds a BOS token
where the model wants one."""

from __future__ import annotations

import functools
import json
import threading
from datetime import datetime
from typing import Any, Mapping, Sequence

from modelport.domain import EngineUnavailable, InvalidRequest


class JinjaChatTemplates:
    def __init__(self) -> None:
        self._lock = threading.Lock()

    def check(self, template: str) -> None:
        self._compiled(template)

    def render(self, template: str, messages: Sequence[Mapping[str, str]]) -> str:
        from jinja2 import TemplateError

        compiled = self._compiled(template)
        try:
            return compiled.render(
                messages=[dict(m) for m in messages], add_generation_prompt=True, bos_token="", eos_token="", tools=None
            )
        except TemplateError as exc:
            raise InvalidRequest(f"the model's chat template failed: {exc}") from None

    def _compiled(self, template: str) -> Any:
        with self._lock:
            return _compile(template)


@functools.lru_cache(maxsize=32)
def _compile(source: str) -> Any:
    try:
        from jinja2 import TemplateError
    except ImportError:
        raise EngineUnavailable("jinja2", "a model's own chat template needs jinja2", "server") from None
    try:
        return sandboxed(source)
    except TemplateError as exc:
        raise InvalidRequest(f"the chat template does not compile: {exc}") from None


def sandboxed(source: str) -> Any:
    """``source`` compiled in a sandboxed environment with the helpers Hugging Face
    templates use; a template that does not parse raises jinja2's TemplateError."""
    from jinja2 import TemplateError, ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    def tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False, sort_keys: bool = False) -> str:
        return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)
