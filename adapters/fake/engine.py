"""A deterministic engine with a character-level vocabulary.

Token ids are Unicode code points. Greedy decoding replays ``reply`` one character
per token, then ends with an end-of-sequence; with a temperature it draws characters
of ``reply`` from a PRNG seeded by the request, so the same seed gives the same text.
Chat messages go through a small ChatML-like template, which makes "the template was
applied" visible in the prompt token count.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
import time
from typing import Iterator, Sequence

from modelport.domain import (
    Capability,
    CapabilityMissing,
    ContextOverflow,
    FinishReason,
    GenerationRequest,
    ModelInfo,
    StopMatcher,
    TokenEvent,
    Usage,
)
from modelport.ports import EngineOptions

DEFAULT_REPLY = "The capital of France is Paris."
EMBEDDING_SIZE = 16


class FakeEngine:
    name = "fake"

    def __init__(self, reply: str = DEFAULT_REPLY, *, token_delay: float = 0.0) -> None:
        self.reply = reply
        self.token_delay = token_delay
        self.model: ModelInfo | None = None
        self.options: EngineOptions | None = None
        self.prompts: list[str] = []  # every rendered prompt, for tests to inspect
        self.loads = 0
        self._lock = threading.Lock()

    def load(self, model: ModelInfo, options: EngineOptions) -> None:
        self.model, self.options = model, options
        self.loads += 1

    def unload(self) -> None:
        self.model = None

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
        self._loaded()
        prompt = self.render(request)
        prompt_tokens = len(self.tokenize(prompt))
        num_ctx = self.options.num_ctx if self.options else request.sampling.num_ctx
        if prompt_tokens >= num_ctx:
            raise ContextOverflow(prompt_tokens, num_ctx)
        self.prompts.append(prompt)
        return self._generate(request, prompt_tokens, num_ctx)

    def _generate(self, request: GenerationRequest, prompt_tokens: int, num_ctx: int) -> Iterator[TokenEvent]:
        policy = request.sampling
        rng = random.Random(policy.seed if policy.seed is not None else time.monotonic_ns())
        matcher = StopMatcher(policy.stop)
        limit = min(policy.max_tokens or num_ctx, num_ctx - prompt_tokens)
        started = time.monotonic_ns()
        produced = 0
        reason = FinishReason.STOP
        with self._lock:
            for position in range(len(self.reply)):
                if produced >= limit:
                    reason = FinishReason.LENGTH
                    break
                ch = self.reply[position] if policy.is_greedy else rng.choice(self.reply)
                produced += 1
                if self.token_delay:
                    time.sleep(self.token_delay)
                text = matcher.push(ch)
                yield TokenEvent(text=text, token_id=ord(ch), logprob=0.0)
                if matcher.stopped:
                    break
        elapsed = time.monotonic_ns() - started
        usage = Usage(
            prompt_tokens=prompt_tokens, completion_tokens=produced,
            prompt_eval_ns=1, eval_ns=max(elapsed, 1),
        )
        yield TokenEvent(text=matcher.flush(), finish_reason=reason, usage=usage)

    def embed(self, texts: Sequence[str], *, truncate: bool = True) -> list[list[float]]:
        model = self._loaded()
        if not model.supports(Capability.EMBEDDING):
            raise CapabilityMissing(model.name, "embeddings")
        return [_unit_vector(text) for text in texts]

    def _loaded(self) -> ModelInfo:
        if self.model is None:
            raise RuntimeError("FakeEngine: load() a model first")
        return self.model


def _unit_vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    values = [b - 127.5 for b in digest[:EMBEDDING_SIZE]]
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]
