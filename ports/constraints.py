"""The grammar port: structured output and tool calls become token constraints.

A :class:`ConstraintCompiler` (llguidance, in ``adapters/llguidance``) turns a
request's :class:`~modelport.domain.OutputSpec` into a
:class:`~modelport.ports.slots.TokenConstraint` for one generation, against the
model's :class:`Vocabulary`. An engine that can be constrained hands its
vocabulary over with ``vocabulary()`` (the :class:`Constrainable` protocol), in
one of two forms:

- ``tokenizer_json``: the text of a Hugging Face ``tokenizer.json`` (what JAX and
  MLX folders have, and what ``adapters/ggufconvert`` builds from a GGUF's
  vocabulary), or
- ``tokens``: the bytes of every token id, with ``encode`` (text -> ids), for a
  tokenizer that is no Hugging Face one (the fake engine's characters).

Either way ``size`` is the width of the model's logits (at least the tokenizer's
vocabulary) and ``end_tokens`` the ids that end a generation: the grammar allows
them once the output is complete.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence, runtime_checkable

import attrs

from modelport.domain import InvalidRequest, OutputSpec

from .slots import TokenConstraint


@attrs.frozen(kw_only=True, eq=False)
class Vocabulary:
    size: int
    end_tokens: tuple[int, ...] = attrs.field(converter=tuple)
    tokenizer_json: str | None = None
    tokens: tuple[bytes, ...] | None = None
    special_tokens: tuple[int, ...] = attrs.field(default=(), converter=tuple)
    encode: Callable[[str], Sequence[int]] | None = None

    def __attrs_post_init__(self) -> None:
        if (self.tokenizer_json is None) == (self.tokens is None):
            raise ValueError("a vocabulary is a tokenizer.json or a list of token bytes, exactly one")
        if self.tokens is not None and self.encode is None:
            raise ValueError("a vocabulary given as token bytes needs its encode function")
        if not self.end_tokens:
            raise ValueError("a vocabulary needs at least one end token")


@runtime_checkable
class Constrainable(Protocol):
    """An engine whose sampling honours :attr:`Step.masks` and that describes its
    vocabulary for a grammar engine. ``renders_tools``: its chat template
    rendering passes a request's ``tools`` (and messages' ``tool_calls``) to the
    template, transformers' ``apply_chat_template(tools=...)`` convention."""

    def vocabulary(self) -> Vocabulary: ...


class ConstraintCompiler(Protocol):
    """Builds the token constraint of one generation."""

    def check(self, spec: OutputSpec) -> None:
        """Raise :class:`~modelport.domain.InvalidRequest` naming what of ``spec``
        (a schema keyword, a format) cannot be compiled, before any model loads."""
        ...

    def compile(self, spec: OutputSpec, vocabulary: Vocabulary) -> TokenConstraint:
        """A fresh constraint for one generation (a constraint is used once)."""
        ...


class NoConstraints:
    """The compiler when no grammar engine is installed: every constrained request
    gets a clear error."""

    def __init__(self, why: str = "install modelport[structured] (llguidance)") -> None:
        self._why = why

    def check(self, spec: OutputSpec) -> None:
        raise InvalidRequest(f"structured outputs and tools need a grammar engine: {self._why}")

    def compile(self, spec: OutputSpec, vocabulary: Vocabulary) -> TokenConstraint:
        self.check(spec)
        raise AssertionError("unreachable")
