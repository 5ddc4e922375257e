"""The MLX engine, on mlx-lm (Metal on Apple silicon, ``mlx[cpu]`` on Linux).

It loads a local Hugging Face or MLX folder handed over by modelport's store, through
``mlx_lm.utils.load_model`` and ``load_tokenizer`` on a path (never mlx-lm's own
downloads). The token loop is mlx-lm's ``generate_step`` with a sampler and logits
processors built from the SamplingPolicy; text goes through the tokenizer's streaming
detokenizer, stop strings through the domain's StopMatcher.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from modelport.domain import (
    CapabilityMissing,
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

FORMATS = (ModelFormat.SAFETENSORS, ModelFormat.MLX)


def _mlx():
    try:
        import mlx.core as mx
        import mlx_lm  # noqa: F401
    except ImportError as exc:
        raise EngineUnavailable("mlx", f"mlx-lm is not installed ({exc})", "mlx") from None
    return mx


class MlxEngine:
    name = "mlx"

    def __init__(self) -> None:
        self._model: Any = None
        self._tokenizer: Any = None
        self._info: ModelInfo | None = None
        self._num_ctx = 0
        self._weights_bytes = 0
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------

    def load(self, model: ModelInfo, options: EngineOptions) -> None:
        if model.format not in FORMATS:
            raise EngineUnavailable(self.name, f"it runs Hugging Face and MLX folders, and "
                                               f"'{model.name}' is {model.format.value}")
        mx = _mlx()
        if options.device == "gpu" and not mx.metal.is_available():
            raise EngineUnavailable(self.name, "no Metal GPU here; use --device cpu")
        mx.set_default_device(mx.gpu if options.device != "cpu" and mx.metal.is_available() else mx.cpu)
        from mlx.utils import tree_flatten
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

    def unload(self) -> None:
        with self._lock:
            self._model = self._tokenizer = self._info = None
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
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _prompt_tokens(self, request: GenerationRequest) -> list[int]:
        tokenizer = self._loaded_tokenizer()
        text = self.render(request)
        # A rendered chat already holds its special tokens (BOS included).
        return list(tokenizer.encode(text, add_special_tokens=not request.is_chat))

    # -- generation --------------------------------------------------------------------

    def stream(self, request: GenerationRequest) -> Iterator[TokenEvent]:
        self._loaded_tokenizer()
        prompt = self._prompt_tokens(request)
        if not prompt:
            raise InvalidRequest("the prompt is empty")
        if len(prompt) >= self._num_ctx:
            raise ContextOverflow(len(prompt), self._num_ctx)
        return self._generate(prompt, request.sampling)

    def _generate(self, prompt: list[int], policy: SamplingPolicy) -> Iterator[TokenEvent]:
        mx = _mlx()
        from mlx_lm.generate import generate_step
        from mlx_lm.sample_utils import make_logits_processors, make_sampler

        limit = min(policy.max_tokens or self._num_ctx, self._num_ctx - len(prompt))
        tokenizer = self._tokenizer
        detokenizer = IncrementalDecoder(tokenizer)
        matcher = StopMatcher(policy.stop)
        with self._lock:
            mx.random.seed(policy.seed if policy.seed is not None else time.monotonic_ns() % 2**32)
            sampler = make_sampler(
                temp=0.0 if policy.is_greedy else policy.temperature,
                top_p=policy.top_p if policy.top_p < 1 else 0.0,
                min_p=policy.min_p,
                top_k=policy.top_k,
            )
            processors = []
            if policy.repeat_penalty != 1.0 and policy.repeat_last_n != 0:
                context = self._num_ctx if policy.repeat_last_n == -1 else policy.repeat_last_n
                processors = make_logits_processors(repetition_penalty=policy.repeat_penalty,
                                                    repetition_context_size=context)
            started = time.monotonic_ns()
            first_token_at = started
            produced = 0
            reason = FinishReason.LENGTH
            steps = generate_step(mx.array(prompt), self._model, max_tokens=limit, sampler=sampler,
                                  logits_processors=processors)
            try:
                for token, logprobs in steps:
                    token = int(token)
                    if produced == 0:
                        first_token_at = time.monotonic_ns()
                    if token in tokenizer.eos_token_ids:
                        reason = FinishReason.STOP
                        break
                    produced += 1
                    text = matcher.push(detokenizer.add(token))
                    yield TokenEvent(text=text, token_id=token, logprob=float(logprobs[token]))
                    if matcher.stopped:
                        reason = FinishReason.STOP
                        break
                    if produced >= limit:
                        break
            finally:
                steps.close()
            finished = time.monotonic_ns()
        tail = ""
        if not matcher.stopped:
            tail = matcher.push(detokenizer.finish()) + matcher.flush()
        usage = Usage(prompt_tokens=len(prompt), completion_tokens=produced,
                      prompt_eval_ns=first_token_at - started, eval_ns=finished - first_token_at)
        yield TokenEvent(text=tail, finish_reason=reason, usage=usage)

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

    def add(self, token: int) -> str:
        self._ids.append(token)
        text = self._decode(self._ids[self._prefix:])
        if text.endswith("\ufffd"):
            return ""
        emitted = self._decode(self._ids[self._prefix:self._read])
        self._prefix, self._read = self._read, len(self._ids)
        return text[len(emitted):]

    def finish(self) -> str:
        if self._read == len(self._ids):
            return ""
        text = self._decode(self._ids[self._prefix:])
        emitted = self._decode(self._ids[self._prefix:self._read])
        self._read = len(self._ids)
        return text[len(emitted):]


def _eos_ids(config: dict) -> list[int] | None:
    eos = config.get("eos_token_id")
    if eos is None:
        return None
    return list(eos) if isinstance(eos, (list, tuple)) else [int(eos)]
