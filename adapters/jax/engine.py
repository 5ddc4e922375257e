"""The JAX engine: modelport's own Flax NNX models, on the CPU or a GPU.

It runs Hugging Face folders (config.json + safetensors) and GGUF files (converted
once into a Hugging Face folder under ``<home>/cache/hf-from-gguf``). Decoder
families generate; encoder families (BERT) embed. JAX and Flax are imported on
:meth:`JaxEngine.load`, never when this module is imported.

A decoder model implements the step-level port
(:class:`~modelport.ports.SlotEngine`): its slots are the rows of one preallocated
KV cache, and the generation core's :class:`~modelport.ports.Scheduler` (created
on load) runs the one token loop over them. :meth:`JaxEngine.stream` hands a
request to that scheduler. A slot keeps its tokens after its sequence ends, so a
later prompt that starts the same way computes only the rest.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Iterator, Mapping, Sequence

from modelport.domain import (
    CapabilityMissing,
    ContextOverflow,
    EngineUnavailable,
    GenerationRequest,
    InvalidRequest,
    ModelFormat,
    ModelInfo,
    ModelLoadError,
    TokenEvent,
)
from modelport.ports import EngineOptions, Sample, Scheduler, SlotSampling, Step
from modelport.ports.slots import common_prefix

FORMATS = (ModelFormat.SAFETENSORS, ModelFormat.GGUF)
DEFAULT_SLOTS = 4


def default_home() -> str:
    """``MODELPORT_HOME``, else the user cache folder (as modelport's settings do)."""
    home = os.environ.get("MODELPORT_HOME")
    if home:
        return home
    import platformdirs

    return platformdirs.user_cache_dir("modelport", appauthor=False)


class _Row:
    """What the engine knows of one slot (one row of the cache)."""

    def __init__(self) -> None:
        self.tokens: list[int] = []  # the ids whose keys and values the row holds, from position 0
        self.pending: int | None = None  # drawn last, fed by the next decode step
        self.sampling: SlotSampling | None = None
        self.draws = 0


class JaxEngine:
    name = "jax"
    renders_tools = True  # the chat template gets ``tools`` (transformers' convention)
    late_masks = True  # masks are read after the forward pass is dispatched (JAX runs it asynchronously)

    def __init__(self, home: str | None = None) -> None:
        self._home = home
        self._rt: Any = None  # a runtime.Runtime once loaded
        self._model: ModelInfo | None = None
        self._lock = threading.Lock()  # embeddings and unloading
        self.scheduler: Scheduler | None = None
        self._rows: list[_Row] = []
        self._params: Any = None  # the rows' packed sampling parameters (numpy), see _begin_params

    # -- lifecycle ---------------------------------------------------------------------

    def load(self, model: ModelInfo, options: EngineOptions) -> None:
        if model.format not in FORMATS:
            raise EngineUnavailable(
                self.name, f"it runs safetensors and GGUF models and '{model.name}' is {model.format.value}"
            )
        try:
            from . import runtime
        except ImportError as exc:
            raise EngineUnavailable(self.name, f"JAX or Flax is not installed ({exc})", "jax") from None
        home = options.home or self._home or default_home()
        rt = runtime.load(model, options, home, slots=options.slots or DEFAULT_SLOTS)
        self._rt, self._model = rt, model
        if rt.decoder is None:
            self.scheduler = None
            return
        import numpy as np

        from .sampling import pack

        decoder = rt.decoder
        self._rows = [_Row() for _ in range(decoder.batch)]
        floats, ints = pack(_idle_policy())
        self._params = (
            np.tile(np.asarray(floats, np.float32), (decoder.batch, 1)),
            np.tile(np.asarray(ints, np.int32), (decoder.batch, 1)),
            np.tile(decoder.key_data(0), (decoder.batch, 1)),
        )
        self.scheduler = Scheduler(self)
        self._widest = max(decoder.chunk_buckets(self.scheduler.chunk_tokens))
        if options.warm:
            decoder.warm(self.scheduler.chunk_tokens)

    def unload(self) -> None:
        if self.scheduler is not None:
            self.scheduler.close()
        with self._lock:
            if self._rt is not None:
                self._rt.release()
            self._rt, self._model, self.scheduler = None, None, None
            self._rows = []

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
        tools = [tool.to_dict() for tool in request.tools] or None
        return tokenizer.render((message.to_dict() for message in request.messages), tools=tools)

    def vocabulary(self) -> Any:
        """The folder's tokenizer.json, the logits' width and the end tokens, for the
        grammar engine (built once per load)."""
        rt = self._generator()
        if getattr(rt, "vocabulary", None) is None:
            import os

            from modelport.ports.constraints import Vocabulary

            path = os.path.join(rt.folder, "tokenizer.json")
            try:
                with open(path, encoding="utf-8") as handle:
                    text = handle.read()
            except OSError as exc:
                raise CapabilityMissing(self._name, f"structured outputs (no readable tokenizer.json: {exc})") from None
            rt.vocabulary = Vocabulary(size=rt.decoder.vocab_size, end_tokens=tuple(rt.end_ids), tokenizer_json=text)
        return rt.vocabulary

    # -- generation: the step-level port -------------------------------------------------

    def stream(self, request: GenerationRequest) -> Iterator[TokenEvent]:
        """One request through the generation core; close the iterator to cancel."""
        self._generator()
        assert self.scheduler is not None
        return self.scheduler.submit(request)

    @property
    def slots(self) -> int:
        return self._generator().decoder.batch

    @property
    def context_length(self) -> int:
        return self._generator().decoder.length

    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        """A raw prompt is encoded with the tokenizer's special tokens (BOS); a
        rendered chat already holds them."""
        tokenizer = self._generator().tokenizer
        return tokenizer.encode(self.render(request), add_special_tokens=not request.is_chat)

    def is_end(self, token: int) -> bool:
        return token in self._rt.end_ids

    def text_decoder(self) -> Any:
        return self._loaded().tokenizer.stream()

    def held(self, slot: int) -> Sequence[int]:
        return tuple(self._rows[slot].tokens)

    def begin(self, slot: int, prompt: Sequence[int], sampling: SlotSampling) -> int:
        from .sampling import pack

        decoder = self._generator().decoder
        row = self._rows[slot]
        keep = common_prefix(row.tokens, prompt[:-1])
        del row.tokens[keep:]
        row.pending, row.sampling, row.draws = None, sampling, 0
        floats, ints, keys = self._params
        floats[slot], ints[slot] = pack(sampling.policy)
        keys[slot] = decoder.key_data(sampling.seed)
        return keep

    def end(self, slot: int) -> None:
        row = self._rows[slot]
        row.pending, row.sampling = None, None

    def step(self, step: Step) -> Mapping[int, Sample]:
        decoder = self._generator().decoder
        touched = {c.slot for c in step.chunks} | set(step.decode)
        try:
            self._feed(decoder, step)
            return self._draw(decoder, step)
        except BaseException:
            for slot in touched:  # what the cache holds there is unknown now
                self._rows[slot].tokens.clear()
                self._rows[slot].pending = None
            raise

    def _feed(self, decoder: Any, step: Step) -> None:
        """Write the step's tokens into the cache: one token of every decoding row
        (the others sit out), then the prompt chunks."""
        import numpy as np

        if step.decode:
            tokens = np.zeros((decoder.batch,), np.int32)
            positions = np.full((decoder.batch,), decoder.length, np.int32)  # past the cache: nothing written
            for slot in step.decode:
                row = self._rows[slot]
                if row.pending is None:
                    raise InvalidRequest(f"slot {slot} decodes before its prompt was read")
                if len(row.tokens) >= decoder.length:
                    raise ContextOverflow(len(row.tokens) + 1, decoder.length)
                tokens[slot], positions[slot] = row.pending, len(row.tokens)
            decoder.decode(tokens, positions, int(positions[list(step.decode)].max()) + 1)
            for slot in step.decode:
                row = self._rows[slot]
                row.tokens.append(row.pending)
                row.pending = None
        for chunk in step.chunks:
            row = self._rows[chunk.slot]
            if chunk.start != len(row.tokens):
                raise InvalidRequest(f"slot {chunk.slot}: a chunk at {chunk.start}, the cache holds {len(row.tokens)}")
            if chunk.start + len(chunk.tokens) > decoder.length:
                raise ContextOverflow(chunk.start + len(chunk.tokens), decoder.length)
            if chunk.tokens:
                decoder.prefill(chunk.slot, chunk.tokens, chunk.start, self._widest)
                row.tokens.extend(chunk.tokens)

    def _draw(self, decoder: Any, step: Step) -> dict[int, Sample]:
        """Sample the next token of every row that gets one in this step."""
        import numpy as np

        from .sampling import DRAW, mask_rows, mode_of

        drawing = step.sampling
        if not drawing:
            return {}
        rows = self._rows
        for slot in drawing:
            if rows[slot].sampling is None:
                raise InvalidRequest(f"slot {slot} draws without a sequence")
        masks = {slot: mask for slot in drawing if (mask := step.mask(slot)) is not None}
        try:
            mask = mask_rows(decoder.batch, decoder.vocab_size, masks) if masks else None
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        asks = {slot: rows[slot].sampling.logprobs for slot in drawing}
        mode = mode_of([rows[slot].sampling.policy for slot in drawing], decoder.vocab_size)
        floats, ints, keys = self._params
        ints = ints.copy()
        ints[:, DRAW] = [row.draws for row in rows]
        lengths = np.asarray([len(row.tokens) for row in rows], np.int32)
        out = decoder.sample(
            lengths, floats, ints, keys, mask, mode, logprobs=any(k is not None for k in asks.values())
        )
        samples = {}
        for slot in drawing:
            row, token = rows[slot], int(out[0][slot])
            row.pending = token
            row.draws += 1
            k = asks[slot]
            if k is None:
                samples[slot] = Sample(token=token)
            else:
                top = tuple(zip(out[2][slot][:k].tolist(), out[3][slot][:k].tolist()))
                samples[slot] = Sample(token=token, logprob=float(out[1][slot]), top=top)
        return samples

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


def _idle_policy() -> Any:
    from modelport.domain import SamplingPolicy

    return SamplingPolicy.greedy()
