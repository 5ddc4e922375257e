"""What every inference route shares: admission to the model, the keep_alive
default, metrics, and a stream that gives everything back when it is closed."""

from __future__ import annotations

import time
from typing import Callable, Iterator, TypeVar

from modelport.domain import EmbeddingRequest, Embeddings, GenerationRequest, ModelRef, TokenEvent
from modelport.ports import GenerationStream, Services

from .admission import Admission
from .metrics import Metrics
from .streaming import started as run_to_first_event

T = TypeVar("T")


class Runner:
    """Runs generations and embeddings for the HTTP routes.

    A request first gets its turn on the model (:class:`Admission`: FIFO, bounded),
    then the model (loaded on demand). Both are given back when the returned stream
    is closed, however the answer ends.
    """

    def __init__(self, services: Services, admission: Admission, metrics: Metrics,
                 *, keep_alive: float | None = None) -> None:
        self.services = services
        self.admission = admission
        self.metrics = metrics
        self.keep_alive = keep_alive  # the server's default (settings.model_ttl)

    def keep_alive_for(self, requested: float | None) -> float | None:
        return self.keep_alive if requested is None else requested

    def generate(self, request: GenerationRequest, *, keep_alive: float | None = None,
                 started: float | None = None) -> tuple[Iterator[TokenEvent], GenerationStream]:
        """(the events, first one already produced; the stream to close). What fails
        before the first event (an unknown model, a prompt too long) raises here."""
        started = time.monotonic() if started is None else started
        name = self.services.show(request.model).name
        ticket = self.admission.enter(name)
        try:
            inner = self.services.generate(request, keep_alive=self.keep_alive_for(keep_alive))
        except BaseException:
            self.admission.leave(ticket)
            raise

        def release() -> None:
            try:
                inner.close()
            finally:
                self.admission.leave(ticket)

        stream = GenerationStream(self.metrics.observe(inner, name, started), release)
        return run_to_first_event(stream), stream

    def embed(self, request: EmbeddingRequest, *, keep_alive: float | None = None) -> Embeddings:
        name = self.services.show(request.model).name
        result = self.exclusive(name, lambda: self.services.embed(
            request, keep_alive=self.keep_alive_for(keep_alive)))
        self.metrics.count_embedding(name, result.usage.prompt_tokens)
        return result

    def exclusive(self, model: str | ModelRef, work: Callable[[], T]) -> T:
        """Run ``work`` during a turn on ``model``."""
        ticket = self.admission.enter(self.services.show(model).name)
        try:
            return work()
        finally:
            self.admission.leave(ticket)
