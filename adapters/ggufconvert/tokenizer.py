"""A ``tokenizers`` tokenizer rebuilt from a GGUF's vocabulary and merges.

Byte-level BPE vocabularies (``tokenizer.ggml.model = gpt2``) are supported, with the
pre-tokenizers llama.cpp names in ``tokenizer.ggml.pre`` listed in
:data:`PRE_TOKENIZERS`. Control tokens become special added tokens, so that chat
markers such as ``<|im_start|>`` in a rendered template encode as one token.
"""

from __future__ import annotations

from typing import Any, Callable

from modelport.domain import ModelLoadError

_CONTROL, _USER_DEFINED = 3, 4

# The split patterns of the models' own tokenizer.json files.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _byte_level() -> Any:
    from tokenizers import pre_tokenizers

    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _digits_then_byte_level() -> Any:
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), _byte_level()])


def _split_then_bytes(pattern: str) -> Callable[[], Any]:
    def build() -> Any:
        from tokenizers import Regex, pre_tokenizers

        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )

    return build


PRE_TOKENIZERS: dict[str, Callable[[], Any]] = {
    "default": _byte_level,
    "gpt2": _byte_level,
    "smollm": _digits_then_byte_level,
    "llama-bpe": _split_then_bytes(_LLAMA3_SPLIT),
    "llama3": _split_then_bytes(_LLAMA3_SPLIT),
    "qwen2": _split_then_bytes(_QWEN2_SPLIT),
}


def build_tokenizer(get: Callable[[str], Any]) -> tuple[Any, dict[str, Any]]:
    """(tokenizer, special tokens) from GGUF metadata read through ``get(key)``.

    The special-token dict holds ``bos_token``/``bos_token_id`` and the same for
    eos, eot, eom, unk and pad, where the GGUF names them.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors

    kind = get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ModelLoadError(f"GGUF tokenizers of type '{kind}' cannot be converted yet (only byte-level BPE, 'gpt2')")
    pre = get("tokenizer.ggml.pre") or "default"
    if pre not in PRE_TOKENIZERS:
        raise ModelLoadError(f"the GGUF pre-tokenizer '{pre}' is not known; known: {', '.join(sorted(PRE_TOKENIZERS))}")
    tokens: list[str] = get("tokenizer.ggml.tokens") or []
    kinds: list[int] = get("tokenizer.ggml.token_type") or [1] * len(tokens)
    merges = [tuple(merge.split(" ", 1)) for merge in get("tokenizer.ggml.merges") or []]
    vocab = {token: index for index, token in enumerate(tokens)}
    try:
        tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    except Exception as exc:  # tokenizers raises plain Exceptions
        raise ModelLoadError(f"the GGUF's vocabulary and merges do not make a tokenizer: {exc}") from None
    tokenizer.pre_tokenizer = PRE_TOKENIZERS[pre]()
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(
        [AddedToken(tokens[i], special=True, normalized=False) for i, k in enumerate(kinds) if k == _CONTROL]
    )
    tokenizer.add_tokens(
        [AddedToken(tokens[i], special=False, normalized=False) for i, k in enumerate(kinds) if k == _USER_DEFINED]
    )
    special = _special_tokens(get, tokens)
    tokenizer.post_processor = _post_processor(processors, get, special)
    return tokenizer, special


def _special_tokens(get: Callable[[str], Any], tokens: list[str]) -> dict[str, Any]:
    special: dict[str, Any] = {}
    for name, key in (
        ("bos", "bos"),
        ("eos", "eos"),
        ("eot", "eot"),
        ("eom", "eom"),
        ("unk", "unknown"),
        ("pad", "padding"),
    ):
        index = get(f"tokenizer.ggml.{key}_token_id")
        if index is not None and 0 <= int(index) < len(tokens):
            special[f"{name}_token_id"] = int(index)
            special[f"{name}_token"] = tokens[int(index)]
    return special


def _post_processor(processors: Any, get: Callable[[str], Any], special: dict[str, Any]) -> Any:
    """Adds BOS/EOS where the GGUF asks for them; otherwise byte-level offsets only."""
    first = [special["bos_token"]] if get("tokenizer.ggml.add_bos_token") and "bos_token" in special else []
    last = [special["eos_token"]] if get("tokenizer.ggml.add_eos_token") and "eos_token" in special else []
    if not first and not last:
        return processors.ByteLevel(trim_offsets=False)
    ids = {special[f"{n}_token"]: special[f"{n}_token_id"] for n in ("bos", "eos") if f"{n}_token" in special}
    single = " ".join([*first, "$A", *last])
    pair = " ".join([*first, "$A", *last, "$B", *last])
    return processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[(t, ids[t]) for t in dict.fromkeys(first + last)]
    )
