"""The JAX engine: modelport's own Flax NNX models, on the CPU or a GPU.

It runs Hugging Face folders (config.json + safetensors) and GGUF files (converted
once into a Hugging Face folder under ``<home>/cache/hf-from-gguf``). Decoder
families generate; encoder families (BERT) embed. JAX and Flax are imported on
:meth:`JaxEngine.load`, never when this module is imported.

Streaming runs one jitted decode step per token, dispatching the next step before
the current token is read back, so that the host's work (detokenizing, stop
strings) overlaps the device's. :meth:`JaxEngine.complete` runs the whole token
loop inside one jitted ``lax.while_loop``.
"""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Any, Iterator, Sequence

from modelport.domain import (
    CapabilityMissing,
    Completion,
    ContextOverflow,
    EngineUnavailable,
    FinishReason,
    GenerationRequest,
    InvalidRequest,
    ModelFormat,
    ModelInfo,
    ModelLoadError,
    SamplingPolicy,
    StopMatcher,
    TokenEvent,
    Usage,
)
from modelport.ports import EngineOptions

FORMATS = (ModelFormat.SAFETENSORS, ModelFormat.GGUF)


def default_home() -> str:
    """``MODELPORT_HOME``, else the user cache folder (as modelport's settings do)."""
    home = os.environ.get("MODELPORT_HOME")
    if home:
        return home
    import platformdirs

    return platformdirs.user_cache_dir("modelport", appauthor=False)


class _Clock:
    """When a generation started, produced its first token and ended (ns)."""

    def __init__(self) -> None:
        self.started = time.monotonic_ns()
        self.first: int | None = None

    def first_token(self) -> None:
        if self.first is None:
            self.first = time.monotonic_ns()

    def usage(self, prompt_tokens: int, completion_tokens: int) -> Usage:
        first = self.first or time.monotonic_ns()
        return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                     prompt_eval_ns=max(1, first - self.started), eval_ns=max(1, time.monotonic_ns() - first))


class JaxEngine:
    name = "jax"

    def __init__(self, home: str | None = None) -> None:
        self._home = home
        self._rt: Any = None  # a runtime.Runtime once loaded
        self._model: ModelInfo | None = None
        self._lock = threading.Lock()  # one generation at a time: the cache is shared

    # -- lifecycle ---------------------------------------------------------------------

    def load(self, model: ModelInfo, options: EngineOptions) -> None:
        if model.format not in FORMATS:
            raise EngineUnavailable(self.name, f"it runs safetensors and GGUF models and '{model.name}' "
                                               f"is {model.format.value}")
        try:
            from . import runtime
        except ImportError as exc:
            raise EngineUnavailable(self.name, f"JAX or Flax is not installed ({exc})", "jax") from None
        home = options.home or self._home or default_home()
        self._rt = runtime.load(model, options, home)
        self._model = model

    def unload(self) -> None:
        with self._lock:
            if self._rt is not None:
                self._rt.release()
            self._rt, self._model = None, None

    def memory_used(self) -> int:
        return self._rt.memory_used if self._rt is not None else 0

    # -- tokens ------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        return self._loaded().tokenizer.encode(text)

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return self._loaded().tokenizer.decode(token_ids)

    def render(self, request: GenerationRequest) -> str:
        """The prompt text the model sees: the chat template applied to the
        messages, or the raw prompt."""
        if not request.is_chat:
            return request.prompt
        tokenizer = self._loaded().tokenizer
        if tokenizer.chat_template is None:
            raise CapabilityMissing(self._name, "chat (no chat template)")
        return tokenizer.render(message.to_dict() for message in request.messages)

    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        """A raw prompt is encoded with the tokenizer's special tokens (BOS); a
        rendered chat already holds them."""
        tokenizer = self._loaded().tokenizer
        return tokenizer.encode(self.render(request), add_special_tokens=not request.is_chat)

    # -- generation --------------------------------------------------------------------

    def stream(self, request: GenerationRequest) -> Iterator[TokenEvent]:
        rt = self._generator()
        prompt = self._checked_prompt(rt, request)
        return self._stream(rt, prompt, request.sampling)

    def complete(self, request: GenerationRequest) -> Completion:
        """The whole generation in one jitted loop (stop strings are applied to its
        output, so tokens past a stop string are computed and dropped)."""
        rt = self._generator()
        prompt = self._checked_prompt(rt, request)
        policy = request.sampling
        spec, params, limit = self._sampler(rt, prompt, policy)
        with self._lock:
            clock = _Clock()
            rows = rt.decoder.prefill([prompt], params, spec)
            rows.token.block_until_ready()
            clock.first_token()
            out, _ = rt.decoder.generate(rows, params, spec, limit, rt.end_ids, reach=len(prompt) + limit)
        return Completion.fold(self._events(rt, iter(out[0].tolist()), policy, len(prompt), limit, clock))

    def _stream(self, rt: Any, prompt: list[int], policy: SamplingPolicy) -> Iterator[TokenEvent]:
        spec, params, limit = self._sampler(rt, prompt, policy)
        with self._lock:
            clock = _Clock()
            tokens = self._stepped(rt, prompt, spec, params, limit, clock)
            try:
                yield from self._events(rt, tokens, policy, len(prompt), limit, clock)
            finally:
                tokens.close()

    @staticmethod
    def _stepped(rt: Any, prompt: list[int], spec: Any, params: Any, limit: int, clock: _Clock) -> Iterator[int]:
        """Tokens one by one; step n + 1 is dispatched before token n is read."""
        decoder = rt.decoder
        current = decoder.prefill([prompt], params, spec)
        for n in range(1, limit + 1):
            following = decoder.step(current, params, spec, n, len(prompt) + n) if n < limit else None
            token = int(current.token[0])
            clock.first_token()
            yield token
            current = following

    def _events(self, rt: Any, tokens: Iterator[int], policy: SamplingPolicy, prompt_tokens: int, limit: int,
                clock: _Clock) -> Iterator[TokenEvent]:
        """Token ids -> text events: end tokens, stop strings, the limit, usage."""
        matcher, text = StopMatcher(policy.stop), rt.tokenizer.stream()
        produced, reason = 0, FinishReason.LENGTH
        for token in tokens:
            if token in rt.end_ids:
                reason = FinishReason.STOP
                break
            produced += 1
            yield TokenEvent(text=matcher.push(text.push(token)), token_id=token)
            if matcher.stopped:
                reason = FinishReason.STOP
                break
            if produced >= limit:
                break
        tail = "" if matcher.stopped else matcher.push(text.flush()) + matcher.flush()
        yield TokenEvent(text=tail, finish_reason=reason, usage=clock.usage(prompt_tokens, produced))

    def _sampler(self, rt: Any, prompt: list[int], policy: SamplingPolicy) -> tuple[Any, Any, int]:
        from .sampling import SamplerParams, SamplerSpec

        seed = policy.seed if policy.seed is not None else random.randrange(2**31)
        limit = rt.decoder.length - len(prompt)
        if policy.max_tokens is not None:
            limit = min(limit, policy.max_tokens)
        vocab = rt.decoder.vocab_size
        return SamplerSpec.of([policy], vocab), SamplerParams.of([policy], [seed], device=rt.device), limit

    def _checked_prompt(self, rt: Any, request: GenerationRequest) -> list[int]:
        prompt = self.prompt_tokens(request)
        if not prompt:
            raise InvalidRequest("the prompt is empty")
        if len(prompt) >= rt.decoder.length:
            raise ContextOverflow(len(prompt), rt.decoder.length)
        return prompt

    # -- embeddings --------------------------------------------------------------------

    def embed(self, texts: Sequence[str], *, truncate: bool = True) -> list[list[float]]:
        rt = self._loaded()
        if rt.encoder is None:
            raise CapabilityMissing(self._name, "embeddings (it generates text; use an embedding model)")
        if not texts:
            return []
        limit = rt.encoder.max_length
        batch = rt.tokenizer.encode_batch(texts)
        if any(len(ids) > limit for ids in batch):
            if not truncate:
                raise ContextOverflow(max(len(ids) for ids in batch), limit)
            batch = rt.tokenizer.encode_batch(texts, max_length=limit)
        with self._lock:
            vectors = rt.encoder.embed(batch)
        return [[float(x) for x in row] for row in vectors]

    # -- helpers -----------------------------------------------------------------------

    @property
    def _name(self) -> str:
        return self._model.name if self._model else "model"

    def _loaded(self) -> Any:
        if self._rt is None:
            raise ModelLoadError("no model is loaded in the jax engine")
        return self._rt

    def _generator(self) -> Any:
        rt = self._loaded()
        if rt.decoder is None:
            raise CapabilityMissing(self._name, "generation (it is an embedding model)")
        return rt
