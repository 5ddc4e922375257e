"""A deterministic engine with a character-level vocabulary and real slots.

Token ids are Unicode code points. Greedy decoding replays ``reply`` one character
per token, then ends with an end-of-sequence (token 0); with a temperature, draw
``n`` of a request is a character of ``reply`` picked by a PRNG seeded with the
request's seed and ``n``, so the same seed gives the same text whatever runs beside
it. Chat messages go through a small ChatML-like template, which makes "the template
was applied" visible in the prompt token count.

It implements the step-level port (:class:`~modelport.ports.SlotEngine`) for the
generation core: each slot keeps the tokens "in its cache", prompt chunks and
decode steps are recorded in :attr:`FakeEngine.steps`, and masks are honoured, so
that the scheduler's own tests run on it without JAX or llama.cpp.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
import time
from typing import Iterator, Mapping, Sequence

from modelport.domain import (
    Capability,
    CapabilityMissing,
    GenerationRequest,
    ModelInfo,
    ModelLoadError,
    TokenEvent,
)
from modelport.ports import EngineOptions, Sample, Scheduler, SlotSampling, Step
from modelport.ports.slots import common_prefix
from modelport.ports.constraints import Vocabulary

DEFAULT_REPLY = "The capital of France is Paris."
EMBEDDING_SIZE = 16
END = 0  # the end-of-sequence token
VOCABULARY_SIZE = 128  # what a grammar sees: END and the ASCII characters
# A masked draw that the reply does not satisfy takes the first of these that is
# allowed (so that constrained output closes), else the largest allowed id.
CLOSING = (END, ord('"'), ord("}"), ord("]"), ord(","))


class _Slot:
    def __init__(self) -> None:
        self.tokens: list[int] = []  # what the slot's "cache" holds
        self.pending: int | None = None  # drawn, not yet fed back
        self.sampling: SlotSampling | None = None
        self.drawn = 0


class _Chars:
    """The fake's text decoder: one character per token."""

    def push(self, token: int) -> str:
        return chr(token)

    def flush(self) -> str:
        return ""


class FakeEngine:
    name = "fake"
    renders_tools = False  # its template knows nothing of tools: the fallback prompt is used
    late_masks = True  # masks are read at sampling time, after the "forward pass" (token_delay)

    def __init__(self, reply: str = DEFAULT_REPLY, *, token_delay: float = 0.0, slots: int = 4) -> None:
        self.reply = reply
        self.token_delay = token_delay
        self.model: ModelInfo | None = None
        self.options: EngineOptions | None = None
        self.prompts: list[str] = []  # every rendered prompt, for tests to inspect
        self.steps: list[Step] = []  # every step the core ran
        self.begun: list[tuple[int, tuple[int, ...]]] = []  # (slot, prompt) of every sequence started
        self.started_steps = 0  # steps whose "forward pass" has begun (masks are read after it)
        self.fail_on: int | None = None  # a token that makes the next step it is fed to raise
        self.loads = 0
        self.scheduler: Scheduler | None = None
        self._slot_count = slots
        self._slots = [_Slot() for _ in range(slots)]
        self._lock = threading.Lock()
        self._vocabulary: Vocabulary | None = None

    def load(self, model: ModelInfo, options: EngineOptions) -> None:
        self.model, self.options = model, options
        self._slot_count = options.slots or self._slot_count
        self._slots = [_Slot() for _ in range(self._slot_count)]
        self.loads += 1
        self.scheduler = Scheduler(self)

    def unload(self) -> None:
        if self.scheduler is not None:
            self.scheduler.close()
        self.model = None
        self.scheduler = None

    def memory_used(self) -> int:
        return 0 if self.model is None else 1024 + 4 * len(self.reply)

    def tokenize(self, text: str) -> list[int]:
        return [ord(ch) for ch in text]

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return "".join(chr(t) for t in token_ids)

    def render(self, request: GenerationRequest) -> str:
        if not request.is_chat:
            return request.prompt
        turns = "".join(f"<|{m.role.value}|>{m.content}\n" for m in request.messages)
        return turns + "<|assistant|>"

    def stream(self, request: GenerationRequest) -> Iterator[TokenEvent]:
        """One request through the generation core (library use)."""
        self._loaded()
        assert self.scheduler is not None
        return self.scheduler.submit(request)

    # -- the step-level port ---------------------------------------------------------------

    @property
    def slots(self) -> int:
        return self._slot_count

    @property
    def context_length(self) -> int:
        return self.options.num_ctx if self.options else 4096

    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        self._loaded()
        prompt = self.render(request)
        with self._lock:
            self.prompts.append(prompt)
        return self.tokenize(prompt)

    def is_end(self, token: int) -> bool:
        return token == END

    def text_decoder(self) -> _Chars:
        return _Chars()

    def held(self, slot: int) -> Sequence[int]:
        return tuple(self._slots[slot].tokens)

    def begin(self, slot: int, prompt: Sequence[int], sampling: SlotSampling) -> int:
        state = self._slots[slot]
        keep = common_prefix(state.tokens, prompt[:-1])  # never the whole prompt: its last token is drawn from
        del state.tokens[keep:]
        state.pending, state.sampling, state.drawn = None, sampling, 0
        self.begun.append((slot, tuple(prompt)))
        return keep

    def step(self, step: Step) -> Mapping[int, Sample]:
        self.steps.append(step)
        self.started_steps += 1
        if self.token_delay:
            time.sleep(self.token_delay)
        out = {}
        for chunk in step.chunks:
            state = self._slots[chunk.slot]
            if chunk.start != len(state.tokens):
                raise AssertionError(f"slot {chunk.slot}: chunk at {chunk.start}, cache holds {len(state.tokens)}")
            state.tokens.extend(chunk.tokens)
            if chunk.last:
                out[chunk.slot] = self._draw(state, step.mask(chunk.slot))
        for slot in step.decode:
            state = self._slots[slot]
            if state.pending is None:
                raise AssertionError(f"slot {slot} decodes before its prompt was read")
            if self.fail_on is not None and state.pending == self.fail_on:
                raise RuntimeError("the fake engine failed a step, as asked")
            state.tokens.append(state.pending)
            out[slot] = self._draw(state, step.mask(slot))
        return out

    def end(self, slot: int) -> None:
        state = self._slots[slot]
        state.pending, state.sampling = None, None

    def _draw(self, state: _Slot, mask: Sequence[int] | None) -> Sample:
        assert state.sampling is not None
        n = state.drawn
        state.drawn += 1
        if n >= len(self.reply):
            token = END
        elif state.sampling.policy.is_greedy:
            token = ord(self.reply[n])
        else:
            token = ord(random.Random(f"{state.sampling.seed}:{n}").choice(self.reply))
        if mask is not None and token not in mask:
            allowed = set(int(t) for t in mask)
            token = next((t for t in CLOSING if t in allowed), None) or max(allowed)
        state.pending = token
        return self._logprobs(token, n, state.sampling)

    def distribution(self, n: int, temperature: float = 1.0) -> dict[int, float]:
        """The fake's distribution for draw ``n`` (log-probabilities by token, after
        ``temperature``; 0 counts as 1): every distinct character of the reply, the
        reply's own ``n``-th character twice as likely as each of the others, and the
        end token once the reply is over."""
        chars = sorted({ord(c) for c in self.reply}) or [END]
        favourite = ord(self.reply[n]) if n < len(self.reply) else END
        weights = {c: 1.0 for c in chars}
        weights[favourite] = 2.0
        scale = 1.0 / temperature if temperature > 0 else 1.0
        logits = {c: math.log(w) * scale for c, w in weights.items()}
        top = max(logits.values())
        total = top + math.log(sum(math.exp(v - top) for v in logits.values()))
        return {c: v - total for c, v in logits.items()}

    def _logprobs(self, token: int, n: int, sampling: SlotSampling) -> Sample:
        if sampling.logprobs is None:
            return Sample(token=token)
        dist = self.distribution(n, sampling.policy.temperature)
        value = dist.get(token, -math.inf)
        best = sorted(dist.items(), key=lambda item: (-item[1], item[0]))[: sampling.logprobs]
        return Sample(token=token, logprob=value, top=tuple(best))

    def vocabulary(self) -> Vocabulary:
        """END and the ASCII characters, one token each (a grammar masks the rest)."""
        if self._vocabulary is None:
            tokens = (b"<|end|>",) + tuple(bytes([i]) for i in range(1, VOCABULARY_SIZE))
            self._vocabulary = Vocabulary(
                size=VOCABULARY_SIZE, end_tokens=(END,), tokens=tokens, special_tokens=(END,), encode=self.tokenize
            )
        return self._vocabulary

    def embed(self, texts: Sequence[str], *, truncate: bool = True) -> list[list[float]]:
        model = self._loaded()
        if not model.supports(Capability.EMBEDDING):
            raise CapabilityMissing(model.name, "embeddings")
        return [_unit_vector(text) for text in texts]

    def _loaded(self) -> ModelInfo:
        if self.model is None:
            raise ModelLoadError("FakeEngine: load() a model first")
        return self.model


def _unit_vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    values = [b - 127.5 for b in digest[:EMBEDDING_SIZE]]
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]
