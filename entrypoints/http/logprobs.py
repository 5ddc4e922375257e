"""Log-probabilities on the wire: OpenAI's chat shape, its legacy completions
shape, the Responses API's and Ollama's, all from the same token events.

A token's text is the engine's ``detokenize`` of that one token id (a byte-level
piece that is not whole UTF-8 shows as U+FFFD; ``bytes`` carries its UTF-8 bytes).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Sequence

import attrs

from modelport.domain import Completion, TokenEvent

TokenText = Callable[[int], str]


@attrs.frozen
class TokenLogprob:
    """One generated token: its id, log-probability, and the most likely
    alternatives as (id, log-probability)."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


def of_event(event: TokenEvent) -> list[TokenLogprob]:
    """The event's token, if it carries one with a log-probability."""
    if event.token_id is None or event.logprob is None:
        return []
    return [TokenLogprob(event.token_id, event.logprob, tuple(event.top_logprobs))]


def of_completion(done: Completion) -> list[TokenLogprob]:
    tops: Sequence[tuple[tuple[int, float], ...]] = done.top_logprobs
    if len(tops) != len(done.logprobs):
        tops = [()] * len(done.logprobs)
    return [TokenLogprob(t, lp, tuple(top)) for t, lp, top in zip(done.token_ids, done.logprobs, tops)]


def _number(value: float) -> float:
    """JSON has no -inf: a token the filters ruled out gets -9999, as OpenAI does."""
    return value if math.isfinite(value) else -9999.0


def _entry(token: int, logprob: float, text: TokenText) -> dict[str, Any]:
    piece = text(token)
    return {"token": piece, "logprob": _number(logprob), "bytes": list(piece.encode("utf-8"))}


def openai_content(entries: Iterable[TokenLogprob], text: TokenText, top: int) -> list[dict[str, Any]]:
    """The ``content`` list of a chat choice's ``logprobs`` (also the Responses API's
    ``output_text.logprobs``)."""
    return [
        {**_entry(e.token, e.logprob, text), "top_logprobs": [_entry(t, lp, text) for t, lp in e.top[:top]]}
        for e in entries
    ]


def openai_chat(entries: Iterable[TokenLogprob], text: TokenText, top: int) -> dict[str, Any]:
    return {"content": openai_content(entries, text, top), "refusal": None}


def openai_legacy(entries: Sequence[TokenLogprob], text: TokenText, top: int, offset: int = 0) -> dict[str, Any]:
    """``/v1/completions``' ``logprobs``: parallel lists, ``text_offset`` counted from
    ``offset`` characters (the text before this chunk)."""
    tokens, offsets, position = [], [], offset
    for e in entries:
        piece = text(e.token)
        tokens.append(piece)
        offsets.append(position)
        position += len(piece)
    return {
        "tokens": tokens,
        "token_logprobs": [_number(e.logprob) for e in entries],
        "top_logprobs": [{text(t): _number(lp) for t, lp in e.top[:top]} for e in entries],
        "text_offset": offsets,
    }


def ollama(entries: Iterable[TokenLogprob], text: TokenText, top: int) -> list[dict[str, Any]]:
    """Ollama's ``logprobs`` list (token, logprob, bytes, top_logprobs)."""
    out = []
    for e in entries:
        entry = _entry(e.token, e.logprob, text)
        if top:
            entry["top_logprobs"] = [_entry(t, lp, text) for t, lp in e.top[:top]]
        out.append(entry)
    return out


class TokenTexts:
    """``detokenize`` of single token ids, each asked of the engine once."""

    def __init__(self, detokenize: Callable[[list[int]], str]) -> None:
        self._detokenize = detokenize
        self._known: dict[int, str] = {}

    def __call__(self, token: int) -> str:
        piece = self._known.get(token)
        if piece is None:
            piece = self._known[token] = self._detokenize([token])
        return piece
