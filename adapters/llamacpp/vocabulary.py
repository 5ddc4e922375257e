"""A loaded ``llama_cpp.Llama``'s vocabulary as the grammar port's
:class:`~modelport.ports.constraints.Vocabulary`: the bytes of every token as
llama.cpp itself writes them (``llama_token_to_piece``), control tokens marked
special, and ``Llama.tokenize`` as the encoder, so that the grammar engine sees
exactly the tokens the model samples (what ``llguidance.llamacpp`` does, without
handing a C pointer across the port).

The GGUF engine's ``vocabulary()`` is ``vocabulary_of(self._llama)``, built once per
load and kept (llguidance keeps its tokenizer per Vocabulary object).
"""

from __future__ import annotations

import ctypes
from typing import Any, Iterable

from modelport.ports.constraints import Vocabulary


def vocabulary_of(llm: Any, end_tokens: Iterable[int] | None = None) -> Vocabulary:
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    count = llama_cpp.llama_vocab_n_tokens(vocab)
    buffer = ctypes.create_string_buffer(16 * 1024 + 1)
    control = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
    user_defined = llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
    get_attr = getattr(llama_cpp, "llama_vocab_get_attr", None) or llama_cpp.llama_token_get_attr
    tokens: list[bytes] = []
    special: list[int] = []
    for token in range(count):
        n = llama_cpp.llama_token_to_piece(vocab, token, buffer, 16 * 1024, 0, True)
        piece = bytes(buffer[: max(n, 0)])
        attr = get_attr(vocab, token)
        if attr & control or (attr & user_defined and piece.startswith(b"<") and piece.endswith(b">")):
            special.append(token)
        tokens.append(piece)
    ends = tuple(end_tokens) if end_tokens is not None else (llm.token_eos(),)
    for token in (llama_cpp.llama_vocab_eot(vocab),):
        if 0 <= token < count and token not in ends:
            ends += (token,)

    def encode(text: str) -> list[int]:
        return list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    return Vocabulary(
        size=max(count, llm.n_vocab()),
        end_tokens=ends,
        tokens=tuple(tokens),
        special_tokens=tuple(special),
        encode=encode,
    )
