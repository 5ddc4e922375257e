"""The :class:`~modelport.ports.ConstraintCompiler` on llguidance.

A request's :class:`~modelport.domain.OutputSpec` becomes one llguidance grammar
(:func:`grammar_for`): a JSON schema alone, or a Lark grammar whose calls are
``<tool_call>`` blocks holding ``{"name": ..., "arguments": ...}`` objects, each
an inline JSON schema (the tool's name as a constant, its parameters as the
arguments' schema):

- ``auto``: free text, in which ``<tool_call>`` starts a call that must then be
  complete and valid (llguidance's lazy lexeme: the text ends at the marker);
  with a format, either the formatted answer or calls;
- ``required`` / a named function: exactly one call and nothing else (a forced
  call is one call: a small model asked for "one or more" repeats its call
  until the token limit).

JSON is written without free whitespace (``", "`` between items, ``": "`` after
keys), so that a small model cannot run away in newlines. The tokenizer
(``LLTokenizer``, about a second to build) is kept per vocabulary.
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from typing import Any, Sequence

from modelport.domain import InvalidRequest, OutputFormat, OutputSpec, Tool, canonical_json_text
from modelport.ports.constraints import Vocabulary

JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def _llguidance():
    try:
        import llguidance
    except ImportError as exc:
        raise InvalidRequest(f"structured outputs need llguidance: install modelport[structured] ({exc})") from None
    return llguidance


def _options(fmt: OutputFormat | None) -> dict[str, Any]:
    lenient = fmt is not None and not fmt.strict
    return {**JSON_OPTIONS, "lenient": lenient}


def _call_schema(tool: Tool) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": tool.parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _inline(schema: dict[str, Any], options: dict[str, Any]) -> str:
    return "%json " + canonical_json_text({**schema, "x-guidance": options})


@functools.lru_cache(maxsize=256)
def grammar_for(spec: OutputSpec) -> str:
    """The llguidance grammar (its JSON form) that enforces ``spec`` (kept for the
    last few hundred specs: agents send the same tools and schemas again and again)."""
    ll = _llguidance()
    fmt = spec.format
    if not spec.tools:
        schema = (fmt or OutputFormat.json_mode()).schema
        return ll.LLMatcher.grammar_from_json_schema(schema, defaults=_options(fmt))
    call_options = {**JSON_OPTIONS, "lenient": False}
    calls = [_inline(_call_schema(t), call_options) for t in spec.tools]
    lines = [
        "%llguidance {}",
        'call_body: "\\n" fn "\\n</tool_call>"',
        "fn: " + " | ".join(f"fn_{i}" for i in range(len(calls))),
        *(f"fn_{i}: {c}" for i, c in enumerate(calls)),
        'calls: "<tool_call>" call_body ("\\n" "<tool_call>" call_body)*',
        'one_call: "<tool_call>" call_body',
    ]
    if spec.calls_only:
        lines.insert(1, "start: one_call")
    elif fmt is not None:
        lines.insert(1, "start: answer | calls")
        lines.append("answer: " + _inline(fmt.schema, _options(fmt)))
    else:
        lines.insert(1, "start: text_call* TEXT")
        lines += ["text_call: call_head call_body", 'call_head[lazy]: TEXT "<tool_call>"', r"TEXT: /(.|\n)*/"]
    return ll.LLMatcher.grammar_from_lark("\n".join(lines))


class GrammarConstraint:
    """One generation's constraint: llguidance's matcher, its mask as the sorted
    allowed ids (a numpy array; None when every token is allowed).
    ``mask_ns``/``masks`` add up the time spent computing masks."""

    def __init__(self, matcher: Any, size: int) -> None:
        self._matcher = matcher
        self._size = size
        self.mask_ns = 0
        self.masks = 0

    @property
    def finished(self) -> bool:
        return self._matcher.is_stopped()

    def allowed(self) -> Sequence[int] | None:
        import numpy as np

        started = time.perf_counter_ns()
        bits = self._matcher.compute_bitmask()
        self._raise_on_error()
        ids = np.flatnonzero(np.unpackbits(np.frombuffer(bits, np.uint8), bitorder="little")[: self._size])
        self.mask_ns += time.perf_counter_ns() - started
        self.masks += 1
        return None if len(ids) == self._size else ids

    def advance(self, token: int) -> None:
        if not self._matcher.consume_token(int(token)):
            self._raise_on_error()
            raise InvalidRequest(f"the output constraint refused token {token}")

    def _raise_on_error(self) -> None:
        if self._matcher.is_error():
            raise InvalidRequest(f"the output constraint failed: {self._matcher.get_error()}")


class _Wrapped:
    """A vocabulary of token bytes as llguidance's TokenizerWrapper reads it."""

    def __init__(self, vocabulary: Vocabulary) -> None:
        assert vocabulary.tokens is not None and vocabulary.encode is not None
        special = set(vocabulary.special_tokens) | set(vocabulary.end_tokens)
        self.tokens = [b"\xff" + t if i in special else t for i, t in enumerate(vocabulary.tokens)]
        self.eos_token_id = vocabulary.end_tokens[0]
        self.bos_token_id = None
        self.special_token_ids = sorted(special)
        self._encode = vocabulary.encode

    def __call__(self, text: str | bytes) -> list[int]:
        return list(self._encode(text.decode("utf-8", "replace") if isinstance(text, bytes) else text))


class LLGuidanceCompiler:
    """Compiles :class:`OutputSpec` s with llguidance. Thread safe."""

    def __init__(self) -> None:
        self._tokenizers: "weakref.WeakKeyDictionary[Vocabulary, Any]" = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def check(self, spec: OutputSpec) -> None:
        ll = _llguidance()
        try:
            grammar = grammar_for(spec)
        except ValueError as exc:
            raise InvalidRequest(f"the schema cannot be compiled: {exc}") from None
        error = ll.LLMatcher.validate_grammar(grammar)
        if error and not error.startswith("WARNING"):
            raise InvalidRequest(f"the schema cannot be compiled: {_short(error)}")

    def compile(self, spec: OutputSpec, vocabulary: Vocabulary) -> GrammarConstraint:
        ll = _llguidance()
        matcher = ll.LLMatcher(self.tokenizer(vocabulary), grammar_for(spec), log_level=0)
        if matcher.is_error():
            raise InvalidRequest(f"the schema cannot be compiled: {_short(matcher.get_error())}")
        return GrammarConstraint(matcher, vocabulary.size)

    def tokenizer(self, vocabulary: Vocabulary) -> Any:
        with self._lock:
            found = self._tokenizers.get(vocabulary)
            if found is None:
                found = self._tokenizers[vocabulary] = _build_tokenizer(vocabulary)
            return found


def _build_tokenizer(vocabulary: Vocabulary) -> Any:
    ll = _llguidance()
    end = list(vocabulary.end_tokens)
    if vocabulary.tokenizer_json is not None:
        source: Any = vocabulary.tokenizer_json
    else:
        source = ll.TokenizerWrapper(_Wrapped(vocabulary))
    try:
        return ll.LLTokenizer(source, n_vocab=vocabulary.size, eos_token=end)
    except (ValueError, RuntimeError) as exc:
        raise InvalidRequest(f"llguidance cannot read this model's tokenizer: {exc}") from None


def _short(error: str) -> str:
    """llguidance's message without its trailing dump of the grammar."""
    return error.strip().splitlines()[0][:500] if error.strip() else error
