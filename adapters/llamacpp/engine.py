"""The GGUF engine, on llama-cpp-python's low-level API.

The model file comes from modelport's store (never from llama-cpp-python's own hub
download). A generating model gets one llama.cpp context whose KV cache holds
``slots`` sequences, one per slot of the generation core (sequence id = slot), the
way llama-server runs its slots: each :meth:`LlamaCppEngine.step` is one
``llama_batch`` with the prompt chunks and the decode tokens of every active slot,
decoded in one ``llama_decode``, logits asked only where a token is drawn. Each
slot draws with its own llama.cpp sampler chain (penalties, top-k, top-p, min-p,
temperature, a seeded ``dist``), made afresh when the slot begins, so draw ``n`` of
a seeded request depends on nothing else in the batch. A slot's cache is kept after
its request ends; the next prompt keeps the common prefix and removes the rest of
that sequence (``llama_memory_seq_rm``).

The prompt is tokenized here and the chat template from the GGUF's metadata is
rendered here; the token loop is the core's (:mod:`modelport.ports.scheduler`).
Embedding models keep llama-cpp-python's high-level ``Llama`` (``Llama.embed``).
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import os
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from modelport.domain import (
    Capability,
    CapabilityMissing,
    ContextOverflow,
    EngineUnavailable,
    GenerationRequest,
    InvalidRequest,
    ModelFormat,
    ModelInfo,
    ModelLoadError,
    ModelportError,
    TokenEvent,
)
from modelport.ports import EngineOptions, Sample, Scheduler, SlotSampling, Step
from modelport.ports.scheduler import DEFAULT_CHUNK_TOKENS
from modelport.ports.slots import common_prefix

DEFAULT_SLOTS = 4
# llama.cpp's CPU flash attention splits a one-query step over the cache (and rounds
# otherwise) from 512 attended cells; a stream attends over its used cells padded
# to a multiple of 256, so a sequence of up to 256 cells never splits.
SPLIT_KV_CELLS = 256


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError as exc:
        raise EngineUnavailable("gguf", f"llama-cpp-python is not installed ({exc})", "gguf") from None
    # llama.cpp logs every load step on stderr; keep its errors only
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    return llama_cpp


class _Batch:
    """A ``llama_batch`` over numpy arrays that this object owns (never passed to
    ``llama_batch_free``): one sequence id per token, filled a column at a time."""

    def __init__(self, llama_cpp: Any, capacity: int) -> None:
        import numpy as np

        self.capacity = capacity
        self.token = np.zeros(capacity, dtype=np.int32)
        self.pos = np.zeros(capacity, dtype=np.int32)
        self.n_seq_id = np.ones(capacity, dtype=np.int32)
        self.seq = np.zeros(capacity, dtype=np.int32)
        self.logits = np.zeros(capacity, dtype=np.int8)
        seq_type = ctypes.POINTER(llama_cpp.llama_seq_id)
        base = self.seq.ctypes.data
        self._seq_ptrs = (seq_type * capacity)(*[ctypes.cast(base + 4 * i, seq_type) for i in range(capacity)])
        self.struct = llama_cpp.llama_batch(
            n_tokens=0,
            token=self.token.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token)),
            embd=None,
            pos=self.pos.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_pos)),
            n_seq_id=self.n_seq_id.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
            seq_id=self._seq_ptrs,
            logits=self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
        )


class _Slot:
    def __init__(self) -> None:
        self.tokens: list[int] = []  # what the slot's sequence holds, from position 0
        self.pending: int | None = None  # drawn, not yet written into the cache
        self.sampling: SlotSampling | None = None
        self.chain: Any = None  # the slot's llama_sampler chain


class _Pieces:
    """Token ids -> text, incrementally, never splitting a UTF-8 character."""

    def __init__(self, piece: Any) -> None:
        self._piece = piece
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> str:
        return self._decoder.decode(self._piece(token))

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


class LlamaCppEngine:
    name = "gguf"
    renders_tools = True  # the GGUF's Jinja template gets ``tools`` (transformers' convention)
    late_masks = True  # masks are read after llama_decode, which runs while the core computes them

    def __init__(self) -> None:
        self._lib: Any = None
        self._model_handle: Any = None  # llama_cpp._internals.LlamaModel (generation)
        self._ctx: Any = None
        self._llm: Any = None  # llama_cpp.Llama (embedding models only)
        self._model: ModelInfo | None = None
        self._formatter: Any = None
        self._lock = threading.Lock()  # embedding calls, one at a time
        self._kv_bytes = 0
        self._slots: list[_Slot] = []
        self._n_ctx_slot = 0
        self._n_vocab = 0
        self._batch: _Batch | None = None
        self._pieces: dict[int, bytes] = {}
        self._vocabulary: Any = None
        self.scheduler: Scheduler | None = None

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
        n_ctx = min(options.num_ctx, model.context_length or options.num_ctx)
        self._lib = llama_cpp
        if model.supports(Capability.EMBEDDING):
            self._load_embedder(llama_cpp, model, path, n_ctx, threads, gpu_layers, options)
            return
        slots = options.slots or DEFAULT_SLOTS
        from llama_cpp import _internals

        llama_cpp.llama_backend_init()
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = gpu_layers
        params.main_gpu = options.device_index
        try:
            handle = _internals.LlamaModel(path_model=str(path), params=params, verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"llama.cpp could not load '{model.name}' from {path}: {exc}") from None
        batch = DEFAULT_CHUNK_TOKENS + slots  # a step: one chunk budget of prompt, one token a slot
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = n_ctx * slots
        cparams.n_batch = cparams.n_ubatch = batch
        cparams.n_seq_max = slots
        cparams.n_threads = cparams.n_threads_batch = threads
        # a KV stream per slot: a sequence's cells stay in position order, so that
        # its attention sums in the same order whatever else is cached (a unified
        # cache interleaves sequences and their holes, and the numbers drift)
        cparams.kv_unified = False
        cparams.no_perf = True
        ctx = llama_cpp.llama_init_from_model(handle.model, cparams)
        if not ctx:
            handle.close()
            raise ModelLoadError(
                f"llama.cpp could not make a context of {n_ctx} tokens x {slots} slots "
                f"for '{model.name}' (out of memory?)"
            )
        self._model_handle, self._ctx, self._model = handle, ctx, model
        self._n_ctx_slot, self._n_vocab = n_ctx, handle.n_vocab()
        self._slots = [_Slot() for _ in range(slots)]
        self._batch = _Batch(llama_cpp, batch)
        self._pieces, self._vocabulary = {}, None
        self._formatter = self._chat_formatter(handle.metadata(), self._text_of)
        self._kv_bytes = _kv_cache_bytes(handle.metadata(), n_ctx * slots)
        self.scheduler = Scheduler(self, chunk_tokens=DEFAULT_CHUNK_TOKENS)

    def _load_embedder(
        self,
        llama_cpp: Any,
        model: ModelInfo,
        path: Path,
        n_ctx: int,
        threads: int,
        gpu_layers: int,
        options: EngineOptions,
    ) -> None:
        try:
            n_ctx = _padded(n_ctx)
            llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                # an encoder sees each input whole: its batch is its context
                n_batch=n_ctx,
                n_ubatch=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                n_gpu_layers=gpu_layers,
                main_gpu=options.device_index,
                embedding=True,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"llama.cpp could not load '{model.name}' from {path}: {exc}") from None
        self._llm, self._model = llm, model
        self._kv_bytes = _kv_cache_bytes(llm.metadata, llm.n_ctx())

    def unload(self) -> None:
        if self.scheduler is not None:
            self.scheduler.close()
            self.scheduler = None
        with self._lock:
            lib = self._lib
            for slot in self._slots:
                if slot.chain is not None:
                    lib.llama_sampler_free(slot.chain)
            self._slots = []
            if self._ctx is not None:
                lib.llama_free(self._ctx)
            if self._model_handle is not None:
                self._model_handle.close()
            if self._llm is not None:
                self._llm.close()
            self._ctx = self._model_handle = self._llm = None
            self._model, self._formatter, self._batch, self._vocabulary = None, None, None, None

    def memory_used(self) -> int:
        if self._model_handle is not None:
            return int(self._model_handle.size()) + self._kv_bytes
        if self._llm is not None:
            return int(self._llm._model.size()) + self._kv_bytes
        return 0

    # -- tokens ------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        if self._llm is not None:
            return list(self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=True))
        return list(self._handle().tokenize(text.encode("utf-8"), add_bos=True, special=True))

    def detokenize(self, token_ids: Sequence[int]) -> str:
        if self._llm is not None:
            return self._llm.detokenize(list(token_ids)).decode("utf-8", errors="replace")
        return b"".join(self._piece(t) for t in token_ids).decode("utf-8", errors="replace")

    def render(self, request: GenerationRequest) -> str:
        """The prompt text the model sees: the chat template applied to the messages,
        or the raw prompt."""
        if not request.is_chat:
            return request.prompt
        if self._formatter is None:
            raise CapabilityMissing(self._model.name if self._model else "model", "chat (no chat template)")
        messages = [message.to_dict() for message in request.messages]
        tools = [tool.to_dict() for tool in request.tools] or None
        return self._formatter(messages=messages, tools=tools).prompt

    def vocabulary(self) -> Any:
        """Every token's bytes, for the grammar engine (built once per load)."""
        if self._vocabulary is None:
            from .vocabulary import vocabulary_of

            self._vocabulary = vocabulary_of(self._handle())
        return self._vocabulary

    # -- generation: library use goes through the core ---------------------------------

    def stream(self, request: GenerationRequest) -> Iterator[TokenEvent]:
        if self._llm is not None:
            raise CapabilityMissing(
                self._model.name if self._model else "model", "generation (it is an embedding model)"
            )
        self._handle()
        assert self.scheduler is not None
        return self.scheduler.submit(request)

    # -- the step-level port -----------------------------------------------------------

    @property
    def slots(self) -> int:
        return len(self._slots)

    @property
    def context_length(self) -> int:
        return self._n_ctx_slot

    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        return self.tokenize(self.render(request))

    def is_end(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self._handle().vocab, token))

    def text_decoder(self) -> _Pieces:
        return _Pieces(self._piece)

    def held(self, slot: int) -> Sequence[int]:
        return self._slots[slot].tokens

    def begin(self, slot: int, prompt: Sequence[int], sampling: SlotSampling) -> int:
        lib, state = self._lib, self._slots[slot]
        keep = common_prefix(state.tokens, prompt[:-1])
        memory = lib.llama_get_memory(self._ctx)
        if keep < len(state.tokens) and not lib.llama_memory_seq_rm(memory, slot, keep, -1):
            lib.llama_memory_seq_rm(memory, slot, -1, -1)  # no partial removal (a recurrent model)
            keep = 0
        del state.tokens[keep:]
        if state.chain is not None:
            lib.llama_sampler_free(state.chain)
        state.chain, state.sampling, state.pending = self._chain(sampling, prompt), sampling, None
        return keep

    def step(self, step: Step) -> Mapping[int, Sample]:
        lib, batch = self._lib, self._batch
        assert batch is not None
        # (slot, tokens, first position, whether a token is drawn from the last one)
        parts: list[tuple[int, Sequence[int], int, bool]] = []
        for chunk in step.chunks:
            held = len(self._slots[chunk.slot].tokens)
            if chunk.start != held:
                raise RuntimeError(f"slot {chunk.slot}: a chunk at {chunk.start}, the cache holds {held}")
            parts.append((chunk.slot, chunk.tokens, chunk.start, chunk.last))
        for slot in step.decode:
            state = self._slots[slot]
            if state.pending is None:
                raise RuntimeError(f"slot {slot} decodes before its prompt was read")
            parts.append((slot, (state.pending,), len(state.tokens), True))
        pad = self._pad(parts)
        samples: dict[int, Sample] = {}
        try:
            for group in _fill(parts, batch.capacity):
                rows = self._write(batch, group)
                status = lib.llama_decode(self._ctx, batch.struct)
                if status != 0:
                    raise ModelportError(
                        f"llama_decode failed ({status}): " + ("the KV cache is full" if status == 1 else "see the log")
                    )
                for slot, tokens, _, _ in group:
                    if slot != pad:
                        self._slots[slot].tokens.extend(tokens)
                for slot, row in rows:
                    samples[slot] = self._draw(slot, row, step.mask(slot))
        except BaseException:
            # what this step wrote is not known for sure: those sequences start afresh
            memory = lib.llama_get_memory(self._ctx)
            for slot, _, _, _ in parts:
                lib.llama_memory_seq_rm(memory, slot, -1, -1)
                self._slots[slot].tokens.clear()
                self._slots[slot].pending = None
            raise
        if pad is not None:
            lib.llama_memory_seq_rm(lib.llama_get_memory(self._ctx), pad, len(self._slots[pad].tokens), -1)
        return samples

    def _pad(self, parts: list[tuple[int, Sequence[int], int, bool]]) -> int | None:
        """A step of one token goes through llama.cpp's CPU attention on another path
        (split over the cache, summed in another order) than a step of several, so
        that one sequence decoding alone would not draw what it draws beside others.
        Such a step gets a second token, without logits, at the end of an idle
        slot's sequence (removed right after; the slot's kept cache is untouched).
        Only a sequence longer than :data:`SPLIT_KV_CELLS` needs it: llama.cpp
        attends over a stream's cells padded to a multiple of 256 (at least 256)
        and splits from 512 on, so a shorter one takes the common path alone too
        (and the pad, a second token through every layer, costs a lone stream about
        a fifth of its speed). Returns that slot, or None."""
        if len(parts) != 1 or len(parts[0][1]) != 1:
            return None
        busy = parts[0][0]
        if len(self._slots[busy].tokens) + 1 <= SPLIT_KV_CELLS:
            return None
        idle = [
            s
            for s in range(len(self._slots))
            if s != busy and self._slots[s].pending is None and len(self._slots[s].tokens) < self._n_ctx_slot
        ]
        if not idle:
            return None
        slot = idle[0]
        parts.append((slot, (0,), len(self._slots[slot].tokens), False))
        return slot

    def end(self, slot: int) -> None:
        state = self._slots[slot]
        if state.chain is not None:
            self._lib.llama_sampler_free(state.chain)
        state.chain, state.sampling, state.pending = None, None, None

    # -- the step's parts ---------------------------------------------------------------

    @staticmethod
    def _write(batch: _Batch, group: list[tuple[int, Sequence[int], int, bool]]) -> list[tuple[int, int]]:
        """Write ``group`` into ``batch``; the rows whose logits are asked, by slot."""
        import numpy as np

        n, rows = 0, []
        batch.logits[: batch.capacity] = 0
        for slot, tokens, start, draws in group:
            k = len(tokens)
            batch.token[n : n + k] = tokens
            batch.pos[n : n + k] = np.arange(start, start + k, dtype=np.int32)
            batch.seq[n : n + k] = slot
            n += k
            if draws:
                batch.logits[n - 1] = 1
                rows.append((slot, n - 1))
        batch.struct.n_tokens = n
        return rows

    def _draw(self, slot: int, row: int, mask: Sequence[int] | None) -> Sample:
        """The slot's next token from ``row``'s logits: masked in place first when the
        slot has a mask, then drawn by the slot's sampler chain."""
        lib, state = self._lib, self._slots[slot]
        logits = None
        if mask is not None or (state.sampling is not None and state.sampling.logprobs is not None):
            import numpy as np

            logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(self._ctx, row), shape=(self._n_vocab,))
            if mask is not None:
                allowed = np.asarray(mask, dtype=np.int64)
                allowed = allowed[(allowed >= 0) & (allowed < self._n_vocab)]
                if allowed.size == 0:
                    raise InvalidRequest("the token mask allows no token of this model's vocabulary")
                kept = logits[allowed].copy()
                logits[:] = -np.inf
                logits[allowed] = kept
        token = int(lib.llama_sampler_sample(state.chain, self._ctx, row))
        state.pending = token
        if state.sampling is None or state.sampling.logprobs is None:
            return Sample(token=token)
        return _with_logprobs(token, logits, state.sampling)

    def _chain(self, sampling: SlotSampling, prompt: Sequence[int]) -> Any:
        """A fresh sampler chain for a slot, its penalty window fed with the prompt."""
        lib, policy = self._lib, sampling.policy
        params = lib.llama_sampler_chain_default_params()
        params.no_perf = True
        chain = lib.llama_sampler_chain_init(params)
        last_n = self._n_ctx_slot if policy.repeat_last_n == -1 else policy.repeat_last_n
        penalized = policy.repeat_penalty != 1.0 and last_n > 0
        if penalized:
            lib.llama_sampler_chain_add(
                chain, lib.llama_sampler_init_penalties(self._n_vocab, last_n, policy.repeat_penalty, 0.0, 0.0)
            )
        if policy.is_greedy:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        else:
            if policy.top_k > 0:
                lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(policy.top_k))
            if policy.top_p < 1.0:
                lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(policy.top_p, 1))
            if policy.min_p > 0.0:
                lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_min_p(policy.min_p, 1))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(policy.temperature))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(sampling.seed % 2**32))
        if penalized:
            for token in prompt[-last_n:]:
                lib.llama_sampler_accept(chain, token)
        return chain

    # -- helpers -----------------------------------------------------------------------

    def _handle(self) -> Any:
        if self._model_handle is None:
            raise ModelLoadError("no model is loaded in the gguf engine")
        return self._model_handle

    def _piece(self, token: int) -> bytes:
        """The bytes of one token (special tokens as empty), cached."""
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._token_bytes(token, special=False)
            self._pieces[token] = piece
        return piece

    def _token_bytes(self, token: int, *, special: bool) -> bytes:
        lib, vocab = self._lib, self._handle().vocab
        buffer = ctypes.create_string_buffer(64)
        n = lib.llama_token_to_piece(vocab, token, buffer, 64, 0, special)
        if n < 0:
            buffer = ctypes.create_string_buffer(-n)
            n = lib.llama_token_to_piece(vocab, token, buffer, -n, 0, special)
        return buffer.raw[: max(n, 0)]

    def _text_of(self, token: int) -> str:
        return self._token_bytes(token, special=True).decode("utf-8", errors="replace") if token >= 0 else ""

    def embed(self, texts: Sequence[str], *, truncate: bool = True) -> list[list[float]]:
        """Pooled (as the GGUF says), L2-normalized embeddings, one per text. A text
        longer than the context is cut to fit when ``truncate``, else refused."""
        llm = self._llm
        if llm is None or self._model is None or not self._model.supports(Capability.EMBEDDING):
            if self._model is None:
                raise ModelLoadError("no model is loaded in the gguf engine")
            raise CapabilityMissing(self._model.name, "embeddings")
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

    @staticmethod
    def _gpu_layers(llama_cpp: Any, device: str) -> int:
        offload = bool(llama_cpp.llama_supports_gpu_offload())
        if device == "gpu" and not offload:
            raise EngineUnavailable("gguf", "this llama-cpp-python build has no GPU support; use --device cpu")
        return -1 if offload and device in ("gpu", "auto") else 0

    def _chat_formatter(self, metadata: Mapping[str, str], text_of: Any) -> Any:
        template = metadata.get("tokenizer.chat_template")
        if not template:
            return None
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        vocab = self._handle().vocab
        return Jinja2ChatFormatter(
            template=template,
            eos_token=text_of(self._lib.llama_vocab_eos(vocab)),
            bos_token=text_of(self._lib.llama_vocab_bos(vocab)),
        )


def _fill(parts: list[tuple[int, Sequence[int], int, bool]], capacity: int) -> Iterator[list]:
    """The step's parts in batches of at most ``capacity`` tokens (one, unless the
    core asks for more than a batch holds); a long part is cut, drawing from its
    last piece only."""
    group: list = []
    room = capacity
    for slot, tokens, start, draws in parts:
        while tokens:
            take = tokens[:room]
            rest = tokens[room:]
            group.append((slot, take, start, draws and not rest))
            room -= len(take)
            start += len(take)
            tokens = rest
            if room == 0:
                yield group
                group, room = [], capacity
    if group:
        yield group


def _with_logprobs(token: int, logits: Any, sampling: SlotSampling) -> Sample:
    """The drawn token's log-probability under the distribution after temperature
    (raw logits for greedy), and the ``sampling.logprobs`` most likely tokens."""
    import numpy as np

    policy = sampling.policy
    scaled = logits.astype(np.float64) / (1.0 if policy.is_greedy or policy.temperature <= 0 else policy.temperature)
    peak = scaled.max()
    log_z = peak + np.log(np.exp(scaled - peak).sum())
    logprobs = scaled - log_z
    k = sampling.logprobs or 0
    top: tuple[tuple[int, float], ...] = ()
    if k > 0:
        k = min(k, logprobs.size)
        best = np.argpartition(-logprobs, k - 1)[:k]
        best = best[np.argsort(-logprobs[best], kind="stable")]
        top = tuple((int(i), float(logprobs[i])) for i in best)
    return Sample(token=token, logprob=float(logprobs[token]), top=top)


# llama.cpp rounds its context up to a multiple of this; llama-cpp-python sizes its
# token buffer by the number asked for. Asking for a multiple keeps the two equal
# (else a prompt between them overflows the buffer: a ValueError, not ContextOverflow).
CONTEXT_PADDING = 256


def _padded(n_ctx: int) -> int:
    return -(-n_ctx // CONTEXT_PADDING) * CONTEXT_PADDING


def _kv_cache_bytes(metadata: Mapping[str, str], n_ctx: int) -> int:
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
