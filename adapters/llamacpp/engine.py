"""The GGUF engine, on llama-cpp-python.

The model file comes from modelport's store (never from llama-cpp-python's own hub
download). Prompts are tokenized here, the chat template from the GGUF's metadata is
rendered here, and the token loop runs on ``Llama.generate`` so that stop strings,
limits, timings and UTF-8 boundaries are handled the same way as in every engine.
"""

from __future__ import annotations

import codecs
import os
import random
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from modelport.domain import (
    Capability,
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


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError as exc:
        raise EngineUnavailable("gguf", f"llama-cpp-python is not installed ({exc})", "gguf") from None
    return llama_cpp


class LlamaCppEngine:
    name = "gguf"

    def __init__(self) -> None:
        self._llm: Any = None
        self._model: ModelInfo | None = None
        self._formatter: Any = None
        self._lock = threading.Lock()  # one generation at a time per loaded model
        self._kv_bytes = 0

    # -- lifecycle ---------------------------------------------------------------------

    def load(self, model: ModelInfo, options: EngineOptions) -> None:
        if model.format is not ModelFormat.GGUF:
            raise EngineUnavailable(self.name, f"it runs GGUF files and '{model.name}' is {model.format.value}")
        llama_cpp = _llama_cpp()
        path = Path(model.location) / model.primary_file
        if not path.is_file():
            raise ModelLoadError(f"'{model.name}': {path} is missing")
        gpu_layers = self._gpu_layers(llama_cpp, options.device)
        threads = options.threads or os.cpu_count() or 1
        embeds = model.supports(Capability.EMBEDDING)
        n_ctx = _padded(min(options.num_ctx, model.context_length or options.num_ctx))
        try:
            llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                # an encoder sees each input whole: its batch is its context
                n_batch=n_ctx if embeds else 512,
                n_ubatch=n_ctx if embeds else 512,
                n_threads=threads,
                n_threads_batch=threads,
                n_gpu_layers=gpu_layers,
                main_gpu=options.device_index,
                embedding=embeds,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"llama.cpp could not load '{model.name}' from {path}: {exc}") from None
        self._llm, self._model = llm, model
        self._formatter = self._chat_formatter(llama_cpp, llm)
        self._kv_bytes = _kv_cache_bytes(llm.metadata, llm.n_ctx())

    def unload(self) -> None:
        with self._lock:
            if self._llm is not None:
                self._llm.close()
            self._llm, self._model, self._formatter = None, None, None

    def memory_used(self) -> int:
        if self._llm is None:
            return 0
        return int(self._llm._model.size()) + self._kv_bytes

    # -- tokens ------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        return list(self._loaded().tokenize(text.encode("utf-8"), add_bos=True, special=True))

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return self._loaded().detokenize(list(token_ids)).decode("utf-8", errors="replace")

    def render(self, request: GenerationRequest) -> str:
        """The prompt text the model sees: the chat template applied to the messages,
        or the raw prompt."""
        if not request.is_chat:
            return request.prompt
        if self._formatter is None:
            raise CapabilityMissing(self._model.name if self._model else "model", "chat (no chat template)")
        messages = [message.to_dict() for message in request.messages]
        return self._formatter(messages=messages).prompt

    # -- generation --------------------------------------------------------------------

    def stream(self, request: GenerationRequest) -> Iterator[TokenEvent]:
        llm = self._loaded()
        prompt = self.tokenize(self.render(request))
        n_ctx = llm.n_ctx()
        if len(prompt) >= n_ctx:
            raise ContextOverflow(len(prompt), n_ctx)
        if not prompt:
            raise InvalidRequest("the prompt is empty")
        return self._generate(llm, prompt, request.sampling, n_ctx)

    def _generate(self, llm: Any, prompt: list[int], policy: SamplingPolicy, n_ctx: int) -> Iterator[TokenEvent]:
        limit = min(policy.max_tokens or n_ctx, n_ctx - len(prompt))
        matcher = StopMatcher(policy.stop)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        is_end = self._end_of_generation(llm)
        with self._lock:
            if policy.seed is not None:
                # llama.cpp's logits depend slightly on how the prompt was batched, so a
                # reused KV prefix could change a seeded sample: evaluate afresh.
                llm.reset()
            llm.set_seed(policy.seed if policy.seed is not None else random.randrange(2**31))
            llm.last_n_tokens_size = n_ctx if policy.repeat_last_n == -1 else policy.repeat_last_n
            started = time.monotonic_ns()
            first_token_at = started
            produced = 0
            reason = FinishReason.LENGTH
            tokens = llm.generate(
                prompt,
                temp=0.0 if policy.is_greedy else policy.temperature,
                top_k=policy.top_k,
                top_p=policy.top_p,
                min_p=policy.min_p,
                repeat_penalty=policy.repeat_penalty,
            )
            try:
                for token in tokens:
                    if produced == 0:
                        first_token_at = time.monotonic_ns()
                    if is_end(token):
                        reason = FinishReason.STOP
                        break
                    produced += 1
                    text = matcher.push(decoder.decode(llm.detokenize([token])))
                    yield TokenEvent(text=text, token_id=int(token))
                    if matcher.stopped:
                        reason = FinishReason.STOP
                        break
                    if produced >= limit:
                        break
            finally:
                tokens.close()
            finished = time.monotonic_ns()
        tail = "" if matcher.stopped else matcher.push(decoder.decode(b"", final=True)) + matcher.flush()
        usage = Usage(
            prompt_tokens=len(prompt),
            completion_tokens=produced,
            prompt_eval_ns=first_token_at - started,
            eval_ns=finished - first_token_at,
        )
        yield TokenEvent(text=tail, finish_reason=reason, usage=usage)

    def embed(self, texts: Sequence[str], *, truncate: bool = True) -> list[list[float]]:
        """Pooled (as the GGUF says), L2-normalized embeddings, one per text. A text
        longer than the context is cut to fit when ``truncate``, else refused."""
        llm = self._loaded()
        if self._model is None or not self._model.supports(Capability.EMBEDDING):
            raise CapabilityMissing(self._model.name if self._model else "model", "embeddings")
        n_ctx = llm.n_ctx()
        if not truncate:
            for text in texts:
                length = len(self.tokenize(text))
                if length > n_ctx:
                    raise ContextOverflow(length, n_ctx)
        if not texts:
            return []
        with self._lock:
            vectors = llm.embed(list(texts), normalize=True, truncate=True)
        return [[float(x) for x in vector] for vector in vectors]

    # -- helpers -----------------------------------------------------------------------

    def _loaded(self) -> Any:
        if self._llm is None:
            raise ModelLoadError("no model is loaded in the gguf engine")
        return self._llm

    @staticmethod
    def _gpu_layers(llama_cpp: Any, device: str) -> int:
        offload = bool(llama_cpp.llama_supports_gpu_offload())
        if device == "gpu" and not offload:
            raise EngineUnavailable("gguf", "this llama-cpp-python build has no GPU support; use --device cpu")
        return -1 if offload and device in ("gpu", "auto") else 0

    @staticmethod
    def _chat_formatter(llama_cpp: Any, llm: Any) -> Any:
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            return None
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        def text_of(token: int) -> str:
            return llm.detokenize([token], special=True).decode("utf-8", errors="replace") if token >= 0 else ""

        return Jinja2ChatFormatter(
            template=template, eos_token=text_of(llm.token_eos()), bos_token=text_of(llm.token_bos())
        )

    @staticmethod
    def _end_of_generation(llm: Any):
        import llama_cpp

        vocab = llm._model.vocab
        return lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token))


# llama.cpp rounds its context up to a multiple of this; llama-cpp-python sizes its
# token buffer by the number asked for. Asking for a multiple keeps the two equal
# (else a prompt between them overflows the buffer: a ValueError, not ContextOverflow).
CONTEXT_PADDING = 256


def _padded(n_ctx: int) -> int:
    return -(-n_ctx // CONTEXT_PADDING) * CONTEXT_PADDING


def _kv_cache_bytes(metadata: dict[str, str], n_ctx: int) -> int:
    """An estimate of the f16 KV cache from the GGUF metadata (0 when unknown)."""
    arch = metadata.get("general.architecture", "")
    try:
        layers = int(metadata[f"{arch}.block_count"])
        width = int(metadata[f"{arch}.embedding_length"])
        heads = int(metadata[f"{arch}.attention.head_count"])
        kv_heads = int(metadata.get(f"{arch}.attention.head_count_kv", heads))
    except (KeyError, ValueError):
        return 0
    return 2 * layers * n_ctx * kv_heads * (width // heads) * 2
