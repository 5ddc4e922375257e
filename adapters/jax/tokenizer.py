"""Tokenizers from a Hugging Face folder's tokenizer.json, chat templates rendered
with Jinja, and a streaming detokenizer that never splits a character.

``tokenizers`` and ``jinja2`` are imported when a tokenizer is built.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping, Sequence

from modelport.domain import InvalidRequest, ModelLoadError


class TextTokenizer:
    """Encodes and decodes text for one model folder."""

    def __init__(self, folder: str) -> None:
        from tokenizers import Tokenizer

        path = os.path.join(folder, "tokenizer.json")
        if not os.path.isfile(path):
            raise ModelLoadError(f"{folder} has no tokenizer.json (the jax engine needs one)")
        self._tokenizer = Tokenizer.from_file(path)
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        config = _json(os.path.join(folder, "tokenizer_config.json"))
        self.bos_token = _token_text(config.get("bos_token"))
        self.eos_token = _token_text(config.get("eos_token"))
        self.chat_template = _chat_template(folder, config)
        self._template: Any = None
        self._truncating_copies: dict[int, Any] = {}

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """Token ids; special-token text (``<|im_start|>``) becomes its token."""
        return self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: Sequence[str], *, max_length: int | None = None) -> list[list[int]]:
        """Token ids of each text, special tokens included; ``max_length`` truncates
        (keeping the special tokens, as the tokenizer's own truncation does)."""
        tokenizer = self._tokenizer if max_length is None else self._truncating(max_length)
        return [e.ids for e in tokenizer.encode_batch(list(texts), add_special_tokens=True)]

    def _truncating(self, max_length: int) -> Any:
        if max_length not in self._truncating_copies:
            from tokenizers import Tokenizer

            copy = Tokenizer.from_str(self._tokenizer.to_str())
            copy.enable_truncation(max_length)
            self._truncating_copies[max_length] = copy
        return self._truncating_copies[max_length]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=True)

    def token_id(self, text: str | None) -> int | None:
        return self._tokenizer.token_to_id(text) if text else None

    def render(
        self,
        messages: Iterable[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: list[Mapping[str, Any]] | None = None,
    ) -> str:
        """The chat template applied to ``messages`` (and ``tools``, for templates
        that render them)."""
        if self.chat_template is None:
            raise InvalidRequest("the model has no chat template")
        if self._template is None:
            self._template = _compile_template(self.chat_template)
        from jinja2 import TemplateError

        try:
            return self._template.render(
                messages=list(messages),
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token or "",
                eos_token=self.eos_token or "",
                tools=tools,
            )
        except TemplateError as exc:
            raise InvalidRequest(f"the chat template failed: {exc}") from None

    def stream(self) -> "StreamDecoder":
        return StreamDecoder(self)


class StreamDecoder:
    """Text deltas for tokens pushed one at a time.

    The text of the tokens since the last emitted boundary is decoded afresh, and
    emitted only once it no longer ends in U+FFFD (an incomplete UTF-8 sequence),
    so a multi-byte character split over tokens comes out whole. Decoding from
    one token before the new ones keeps tokenizers that strip a leading space
    (SentencePiece) right.
    """

    def __init__(self, tokenizer: TextTokenizer) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # start of the window decoded each time
        self._read = 0  # tokens already emitted

    def push(self, token: int) -> str:
        self._ids.append(token)
        before = self._tokenizer.decode(self._ids[self._prefix : self._read])
        text = self._tokenizer.decode(self._ids[self._prefix :])
        if len(text) > len(before) and not text.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return text[len(before) :]
        return ""

    def flush(self) -> str:
        """What is held back at the end (an incomplete character decodes as U+FFFD)."""
        before = self._tokenizer.decode(self._ids[self._prefix : self._read])
        text = self._tokenizer.decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return text[len(before) :]


def _compile_template(source: str) -> Any:
    """The model's chat template, compiled as the jinja adapter compiles every one."""
    from jinja2 import TemplateError

    from modelport.adapters.jinja import sandboxed

    try:
        return sandboxed(source)
    except TemplateError as exc:
        raise ModelLoadError(f"the chat template does not parse: {exc}") from None


def _chat_template(folder: str, config: Mapping[str, Any]) -> str | None:
    jinja = os.path.join(folder, "chat_template.jinja")
    if os.path.isfile(jinja):
        with open(jinja, encoding="utf-8") as handle:
            return handle.read()
    template = config.get("chat_template") or _json(os.path.join(folder, "chat_template.json")).get("chat_template")
    if isinstance(template, list):  # named templates: prefer "default"
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    return template if isinstance(template, str) and template else None


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from None
    return value if isinstance(value, dict) else {}
