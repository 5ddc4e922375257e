"""What every inference route shares: the keep_alive default, metrics, and a
stream that gives everything back when it is closed. Admission (a bounded FIFO
line per model, 503 when full) belongs to the generation core's scheduler."""

from __future__ import annotations

import time
from typing import Iterator

from modelport.domain import EmbeddingRequest, Embeddings, GenerationRequest, ModelInfo, TokenEvent
from modelport.ports import GenerationStream, Services

from .logprobs import TokenTexts
from .metrics import Metrics
from .streaming import started as run_to_first_event


class Runner:
    """Runs generations and embeddings for the HTTP routes.

    The model is loaded on demand and its scheduler queues the request for a slot;
    both are given back when the returned stream is closed, however the answer ends.
    """

    def __init__(self, services: Services, metrics: Metrics, *, keep_alive: float | None = None) -> None:
        self.services = services
        self.metrics = metrics
        self.keep_alive = keep_alive  # the server's default (settings.model_ttl)

    def keep_alive_for(self, requested: float | None) -> float | None:
        return self.keep_alive if requested is None else requested

    def generate(
        self,
        request: GenerationRequest,
        *,
        model: ModelInfo | None = None,
        keep_alive: float | None = None,
        started: float | None = None,
    ) -> tuple[Iterator[TokenEvent], GenerationStream]:
        """(the events, first one already produced; the stream to close). What fails
        before the first event (an unknown model, a prompt too long) raises here.
        ``model``: what the route looked ``request.model`` up as (its one lookup)."""
        started = time.monotonic() if started is None else started
        inner = self.services.generate(request, keep_alive=self.keep_alive_for(keep_alive), model=model)
        name = inner.model or str(request.model)  # the store's name, from the one lookup
        stream = GenerationStream(self.metrics.observe(inner, name, started), inner.close)
        return run_to_first_event(stream), stream

    def generate_many(
        self,
        request: GenerationRequest,
        n: int,
        *,
        model: ModelInfo | None = None,
        keep_alive: float | None = None,
        started: float | None = None,
    ) -> list[tuple[Iterator[TokenEvent], GenerationStream]]:
        """:meth:`generate` for ``n`` choices submitted together (OpenAI's ``n``)."""
        if n == 1:
            return [self.generate(request, model=model, keep_alive=keep_alive, started=started)]
        started = time.monotonic() if started is None else started
        inners = self.services.generate_many(request, n, keep_alive=self.keep_alive_for(keep_alive), model=model)
        name = inners[0].model or str(request.model)
        streams = [GenerationStream(self.metrics.observe(inner, name, started), inner.close) for inner in inners]
        out = []
        try:
            for stream in streams:
                out.append((run_to_first_event(stream), stream))
        except BaseException:
            for stream in streams:
                stream.close()
            raise
        return out

    def token_texts(self, model: ModelInfo) -> TokenTexts:
        """Token id -> text, by the model's engine (for log-probabilities)."""
        return TokenTexts(lambda ids: self.services.detokenize(model, ids))

    def embed(
        self, request: EmbeddingRequest, *, model: ModelInfo | None = None, keep_alive: float | None = None
    ) -> Embeddings:
        result = self.services.embed(request, keep_alive=self.keep_alive_for(keep_alive), model=model)
        self.metrics.count_embedding(result.model, result.usage.prompt_tokens)
        return result
