"""The MLX engine, on mlx-lm (Metal on Apple silicon, ``mlx[cpu]`` on Linux).

It loads a local Hugging Face or MLX folder handed over by modelport's store, through
``mlx_lm.utils.load_model`` and ``load_tokenizer`` on a path (never mlx-lm's own
downloads), and implements the generation core's step-level port
(:class:`~modelport.ports.SlotEngine`). The installed mlx-lm has no batch
generation, so each slot is a prompt cache of its own (mlx-lm's
``make_prompt_cache``) and a step runs its slots one after another: streams
interleave fairly, but do not decode faster together. Sampling follows llama.cpp's
order (repeat penalty, top-k, top-p, min-p, temperature) with mlx-lm's filters;
draw ``n`` of a slot uses a key made from its seed and ``n``.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from modelport.domain import (
    CapabilityMissing,
    EngineUnavailable,
    GenerationRequest,
    ModelFormat,
    ModelInfo,
    ModelLoadError,
    TokenEvent,
)
from modelport.ports import EngineOptions, Sample, Scheduler, SlotSampling, Step
from modelport.ports.slots import common_prefix
from modelport.ports.constraints import Vocabulary

FORMATS = (ModelFormat.SAFETENSORS, ModelFormat.MLX)
DEFAULT_SLOTS = 2


def _mlx():
    try:
        import mlx.core as mx
        import mlx_lm  # noqa: F401
    except ImportError as exc:
        raise EngineUnavailable("mlx", f"mlx-lm is not installed ({exc})", "mlx") from None
    return mx


class _Slot:
    def __init__(self, cache: list) -> None:
        self.cache = cache  # mlx-lm's per-layer caches
        self.tokens: list[int] = []  # what the cache holds
        self.pending: int | None = None
        self.sampling: SlotSampling | None = None
        self.drawn = 0
        self.logits: Any = None  # of the last position read, for the next draw


class MlxEngine:
    name = "mlx"
    renders_tools = True  # apply_chat_template(tools=...): transformers' convention
    late_masks = True  # a mask is waited for after the forward pass is launched (mx.async_eval)

    def __init__(self) -> None:
        self._model: Any = None
        self._tokenizer: Any = None
        self._info: ModelInfo | None = None
        self._num_ctx = 0
        self._weights_bytes = 0
        self._slots: list[_Slot] = []
        self._lock = threading.Lock()
        self.scheduler: Scheduler | None = None
        self._vocabulary: Vocabulary | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def load(self, model: ModelInfo, options: EngineOptions) -> None:
        if model.format not in FORMATS:
            raise EngineUnavailable(
                self.name, f"it runs Hugging Face and MLX folders, and '{model.name}' is {model.format.value}"
            )
        mx = _mlx()
        if options.device == "gpu" and not mx.metal.is_available():
            raise EngineUnavailable(self.name, "no Metal GPU here; use --device cpu")
        mx.set_default_device(mx.gpu if options.device != "cpu" and mx.metal.is_available() else mx.cpu)
        from mlx.utils import tree_flatten
        from mlx_lm.models.cache import make_prompt_cache
        from mlx_lm.utils import load_model, load_tokenizer

        folder = Path(model.location)
        try:
            loaded, config = load_model(folder)
            tokenizer = load_tokenizer(folder, eos_token_ids=_eos_ids(config))
        except (ValueError, FileNotFoundError, KeyError, OSError) as exc:
            raise ModelLoadError(f"mlx-lm could not load '{model.name}' from {folder}: {exc}") from None
        self._model, self._tokenizer, self._info = loaded, tokenizer, model
        self._num_ctx = min(options.num_ctx, model.context_length or options.num_ctx)
        self._weights_bytes = sum(v.nbytes for _, v in tree_flatten(loaded.parameters()))
        self._slots = [_Slot(make_prompt_cache(loaded)) for _ in range(options.slots or DEFAULT_SLOTS)]
        self.scheduler = Scheduler(self)

    def unload(self) -> None:
        if self.scheduler is not None:
            self.scheduler.close()
        with self._lock:
            self._model = self._tokenizer = self._info = self.scheduler = None
            self._vocabulary = None
            self._slots = []
            self._weights_bytes = 0
            mx = _mlx()
            mx.clear_cache()

    def memory_used(self) -> int:
        return self._weights_bytes if self._model is not None else 0

    # -- tokens ------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        return list(self._loaded_tokenizer().encode(text, add_special_tokens=True))

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return self._loaded_tokenizer().decode(list(token_ids))

    def render(self, request: GenerationRequest) -> str:
        if not request.is_chat:
            return request.prompt
        tokenizer = self._loaded_tokenizer()
        if not tokenizer.has_chat_template:
            raise CapabilityMissing(self._info.name if self._info else "model", "chat (no chat template)")
        messages = [message.to_dict() for message in request.messages]
        tools = [tool.to_dict() for tool in request.tools] or None
        return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)

    def stream(self, request: GenerationRequest) -> Iterator[TokenEvent]:
        """One request through the generation core (library use)."""
        self._loaded_tokenizer()
        assert self.scheduler is not None
        return self.scheduler.submit(request)

    # -- the step-level port -----------------------------------------------------------

    @property
    def slots(self) -> int:
        return len(self._slots)

    @property
    def context_length(self) -> int:
        return self._num_ctx

    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        tokenizer = self._loaded_tokenizer()
        text = self.render(request)
        # A rendered chat already holds its special tokens (BOS included).
        return list(tokenizer.encode(text, add_special_tokens=not request.is_chat))

    def is_end(self, token: int) -> bool:
        return token in self._tokenizer.eos_token_ids

    def text_decoder(self) -> "IncrementalDecoder":
        return IncrementalDecoder(self._loaded_tokenizer())

    def held(self, slot: int) -> Sequence[int]:
        return tuple(self._slots[slot].tokens)

    def begin(self, slot: int, prompt: Sequence[int], sampling: SlotSampling) -> int:
        from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache

        state = self._slots[slot]
        keep = common_prefix(state.tokens, prompt[:-1])  # never the whole prompt: its last token is drawn from
        drop = len(state.tokens) - keep
        if drop and can_trim_prompt_cache(state.cache):
            trim_prompt_cache(state.cache, drop)
        elif drop:
            state.cache, keep = make_prompt_cache(self._model), 0
        del state.tokens[keep:]
        state.pending, state.sampling, state.drawn, state.logits = None, sampling, 0, None
        return keep

    def step(self, step: Step) -> Mapping[int, Sample]:
        mx = _mlx()
        out = {}
        for chunk in step.chunks:
            state = self._slots[chunk.slot]
            logits = self._model(mx.array(list(chunk.tokens))[None], cache=state.cache)
            state.tokens.extend(chunk.tokens)
            if chunk.last:
                out[chunk.slot] = self._draw(state, logits[0, -1], self._mask(step, chunk.slot, logits))
            else:
                mx.eval([c.state for c in state.cache])
        for slot in step.decode:
            state = self._slots[slot]
            logits = self._model(mx.array([state.pending])[None], cache=state.cache)
            state.tokens.append(state.pending)
            out[slot] = self._draw(state, logits[0, -1], self._mask(step, slot, logits))
        return out

    def end(self, slot: int) -> None:
        state = self._slots[slot]
        state.pending, state.sampling = None, None

    @staticmethod
    def _mask(step: Step, slot: int, logits: Any) -> Sequence[int] | None:
        """The slot's mask, waited for while the forward pass computes."""
        if slot in step.pending:
            _mlx().async_eval(logits)
        return step.mask(slot)

    def _draw(self, state: _Slot, logits: Any, mask: Sequence[int] | None) -> Sample:
        import numpy as np
        from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p

        mx = _mlx()
        assert state.sampling is not None
        policy = state.sampling.policy
        logits = logits.astype(mx.float32)
        if policy.repeat_penalty != 1.0 and policy.repeat_last_n != 0:
            recent = state.tokens if policy.repeat_last_n < 0 else state.tokens[-policy.repeat_last_n :]
            if recent:
                ids = mx.array(sorted(set(recent)))
                seen = logits[ids]
                logits[ids] = mx.where(seen > 0, seen / policy.repeat_penalty, seen * policy.repeat_penalty)
        if mask is not None:
            allowed = np.full(logits.shape[-1], -np.inf, np.float32)
            allowed[np.asarray(mask, np.int64)] = 0.0
            logits = logits + mx.array(allowed)
        if policy.is_greedy:
            token = int(mx.argmax(logits).item())
            scaled = logits
        else:
            scaled = logits / policy.temperature
            logprobs = scaled - mx.logsumexp(scaled)
            if policy.top_k > 0:
                logprobs = apply_top_k(logprobs[None], policy.top_k)[0]
            if policy.top_p < 1.0:
                logprobs = apply_top_p(logprobs[None], policy.top_p)[0]
            if policy.min_p > 0.0:
                logprobs = apply_min_p(logprobs[None], policy.min_p)[0]
            key = mx.random.key((state.sampling.seed * 1_000_003 + state.drawn) % (2**63))
            token = int(mx.random.categorical(logprobs, key=key).item())
        state.drawn += 1
        state.pending = token
        return self._sample(token, scaled, state.sampling.logprobs)

    @staticmethod
    def _sample(token: int, scaled: Any, wanted: int | None) -> Sample:
        """The draw with its log-probability under the distribution after
        temperature (greedy: temperature 1) and the ``wanted`` best alternatives."""
        import numpy as np

        mx = _mlx()
        logprobs = scaled - mx.logsumexp(scaled)
        value = float(logprobs[token].item())
        if not wanted:
            return Sample(token=token, logprob=value if math.isfinite(value) else -math.inf)
        values = np.asarray(logprobs)
        best = np.argsort(-values)[:wanted]
        return Sample(token=token, logprob=value, top=tuple((int(i), float(values[i])) for i in best))

    def vocabulary(self) -> Vocabulary:
        """The folder's tokenizer.json, the logits' width and the end tokens."""
        if self._vocabulary is None:
            tokenizer = self._loaded_tokenizer()
            assert self._info is not None
            path = Path(self._info.location) / "tokenizer.json"
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise CapabilityMissing(
                    self._info.name, f"structured outputs (no readable tokenizer.json: {exc})"
                ) from None
            size = int(self._model.args.vocab_size) if hasattr(self._model, "args") else len(tokenizer.vocab)
            self._vocabulary = Vocabulary(
                size=size, end_tokens=tuple(sorted(tokenizer.eos_token_ids)), tokenizer_json=text
            )
        return self._vocabulary

    def embed(self, texts: Sequence[str], *, truncate: bool = True) -> list[list[float]]:
        raise CapabilityMissing(self._info.name if self._info else "model", "embeddings with the mlx engine")

    def _loaded_tokenizer(self) -> Any:
        if self._tokenizer is None:
            raise ModelLoadError("no model is loaded in the mlx engine")
        return self._tokenizer


class IncrementalDecoder:
    """Streamed text whose concatenation equals ``tokenizer.decode`` of all tokens.

    Each step decodes only the last few tokens (from ``prefix`` on) and emits what
    they add; text ending in a replacement character (an incomplete UTF-8 sequence
    or byte-level piece) is held back until the next token completes it.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._decode = tokenizer.decode
        self._ids: list[int] = []
        self._prefix = 0  # decoding starts here, so spaces between tokens come out right
        self._read = 0  # tokens up to here have been emitted

    def push(self, token: int) -> str:
        self._ids.append(token)
        text = self._decode(self._ids[self._prefix :])
        if text.endswith("\ufffd"):
            return ""
        emitted = self._decode(self._ids[self._prefix : self._read])
        self._prefix, self._read = self._read, len(self._ids)
        return text[len(emitted) :]

    def flush(self) -> str:
        if self._read == len(self._ids):
            return ""
        text = self._decode(self._ids[self._prefix :])
        emitted = self._decode(self._ids[self._prefix : self._read])
        self._read = len(self._ids)
        return text[len(emitted) :]


def _eos_ids(config: dict) -> list[int] | None:
    eos = config.get("eos_token_id")
    if eos is None:
        return None
    return list(eos) if isinstance(eos, (list, tuple)) else [int(eos)]
