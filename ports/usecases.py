"""The use cases: what the CLI, the HTTP server and library users can ask for.

Each method speaks domain types only; the ports it needs are handed to
:class:`Services` by the composition root (``modelport.entrypoints.bootstrap``).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Callable, Iterator, Mapping

import attrs

from modelport.domain import (
    Capability,
    CapabilityMissing,
    ChatSession,
    Completion,
    DiskUsage,
    EmbeddingRequest,
    Embeddings,
    GenerationRequest,
    InvalidRequest,
    ModelInfo,
    ModelNotFound,
    ModelportError,
    ModelRef,
    PullProgress,
    SamplingPolicy,
    SearchHit,
    TokenEvent,
    Usage,
    VerifyReport,
)
from modelport.ports.engine import EngineOptions
from modelport.ports.engines import EngineRegistry, Resident, ResidentModels
from modelport.ports.scheduler import SlotStats
from modelport.ports.sessions import SessionRepository
from modelport.ports.store import ModelSource, ModelStore, ProgressCallback


def _ref(name: str | ModelRef) -> ModelRef:
    return name if isinstance(name, ModelRef) else ModelRef.parse(name)


class GenerationStream(Iterator[TokenEvent]):
    """The events of one generation. The model stays in use until the stream is
    exhausted or closed; closing it early cancels the generation."""

    def __init__(self, events: Iterator[TokenEvent], release: Callable[[], None]) -> None:
        self._events = events
        self._release = release
        self._open = True

    def __iter__(self) -> "GenerationStream":
        return self

    def __next__(self) -> TokenEvent:
        try:
            return next(self._events)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._open:
            self._open = False
            try:
                close = getattr(self._events, "close", None)
                if close is not None:
                    close()
            finally:
                self._release()

    def __del__(self) -> None:
        self.close()


class ChatTurn:
    """One reply in a chat session: iterate it for the events, then read ``session``,
    which holds the user's message and, once the reply is complete, the reply."""

    def __init__(self, session: ChatSession, events: GenerationStream) -> None:
        self.session = session
        self.final: TokenEvent | None = None
        self._events = events

    def __iter__(self) -> Iterator[TokenEvent]:
        parts: list[str] = []
        for event in self._events:
            parts.append(event.text)
            yield event
            if event.done:
                self.final = event
                self.session = self.session.with_reply("".join(parts))

    def close(self) -> None:
        self._events.close()


class Services:
    """modelport's application layer."""

    def __init__(
        self,
        *,
        store: ModelStore,
        engines: EngineRegistry,
        resident: ResidentModels | None = None,
        source: ModelSource | None = None,
        sessions: SessionRepository | None = None,
        engine: str | None = None,
        engine_options: EngineOptions | None = None,
    ) -> None:
        self.store = store
        self.engines = engines
        self.resident = resident or ResidentModels(engines, convert=store.materialize)
        self.source = source
        self.sessions = sessions
        self.default_engine = engine
        self.engine_options = engine_options or EngineOptions()

    # -- models ---------------------------------------------------------------------

    def list_models(self) -> list[ModelInfo]:
        return sorted(self.store.list(), key=lambda m: m.name)

    def show(self, name: str | ModelRef) -> ModelInfo:
        return self.store.resolve(_ref(name))

    def sampling_for(self, name: str | ModelRef, options: Mapping[str, Any] | None = None) -> SamplingPolicy:
        """The policy for a request to ``name``: the request's Ollama ``options`` over
        the model's own defaults over modelport's."""
        model = self.store.resolve(_ref(name))
        base = SamplingPolicy.from_ollama_options(dict(model.default_options))
        return SamplingPolicy.from_ollama_options(options, base=base)

    def sampling_for_openai(self, name: str | ModelRef, body: Mapping[str, Any]) -> SamplingPolicy:
        """The policy for an OpenAI-style request to ``name``: the request's fields
        (temperature, top_p, max_tokens, stop, seed ...) over the model's own
        defaults over modelport's."""
        model = self.store.resolve(_ref(name))
        base = SamplingPolicy.from_ollama_options(dict(model.default_options))
        return SamplingPolicy.from_openai(body, base=base)

    def copy(self, source: str | ModelRef, destination: str | ModelRef) -> ModelInfo:
        return self.store.copy(_ref(source), _ref(destination))

    def remove(self, name: str | ModelRef) -> None:
        ref = _ref(name)
        try:
            self.resident.unload(self.store.resolve(ref).name)
        except ModelNotFound:
            pass  # files gone, or not installed: the store still cleans up or says so
        self.store.remove(ref)

    def verify(self, name: str | ModelRef) -> VerifyReport:
        return self.store.verify(_ref(name))

    def disk_usage(self) -> DiskUsage:
        return self.store.disk_usage()

    def import_model(self, name: str | ModelRef, path: str) -> ModelInfo:
        return self.store.import_path(_ref(name), path)

    def pull(self, name: str | ModelRef, progress: ProgressCallback = lambda _: None) -> ModelInfo:
        ref = _ref(name)
        if ref.is_path:
            raise InvalidRequest(f"'{ref}' is a local path; use create to import it")
        bundled = self._bundled(ref)
        if bundled is not None:
            progress(PullProgress(status="success"))  # it comes with modelport: nothing to fetch
            return bundled
        source = self._require_source()
        progress(PullProgress(status="pulling manifest"))
        with self.store.staging(ref) as folder:
            files = source.fetch(ref, folder, progress)
            progress(PullProgress(status="writing manifest"))
            info = self.store.commit(ref, folder, files)
        progress(PullProgress(status="success"))
        return info

    def search(self, query: str, **filters: object) -> list[SearchHit]:
        return self._require_source().search(query, **filters)  # type: ignore[arg-type]

    # -- inference ------------------------------------------------------------------

    def generate(
        self, request: GenerationRequest, *, engine: str | None = None, keep_alive: float | None = None
    ) -> GenerationStream:
        """Stream a generation. The model is resolved and loaded before this returns,
        so errors come out here rather than mid-stream. ``keep_alive``: seconds the
        model stays loaded once idle (0: unload after this request; negative or
        ``math.inf``: until evicted; None: as before)."""
        model = self.store.resolve(request.model)
        if request.is_chat and not model.supports(Capability.CHAT):
            raise CapabilityMissing(model.name, "chat")
        if not (model.supports(Capability.COMPLETION) or model.supports(Capability.CHAT)):
            raise CapabilityMissing(model.name, "generate")
        request.check_fits(model.context_length or 0)  # by its size, before anything tokenizes it
        options = attrs.evolve(self.engine_options, num_ctx=request.sampling.num_ctx)
        resident, loaded_now = self.resident.acquire(model, engine or self.default_engine, options, keep_alive)
        try:
            scheduler = resident.engine.scheduler
            if scheduler is None:
                raise CapabilityMissing(model.name, "generation (it is an embedding model)")
            events = scheduler.submit(request)
        except BaseException:
            self.resident.release(resident)
            raise
        load_ns = resident.load_ns if loaded_now else 0
        return GenerationStream(
            _with_totals(events, load_ns), lambda: self.resident.release(resident)
        )

    def complete(self, request: GenerationRequest, *, engine: str | None = None) -> Completion:
        return Completion.fold(self.generate(request, engine=engine))

    def chat(self, session: ChatSession, message: str, *, engine: str | None = None) -> ChatTurn:
        """Send ``message`` in ``session``; the model sees the kept turns only."""
        session = session.with_user(message)
        request = GenerationRequest(
            model=ModelRef.parse(session.model), messages=session.context, sampling=session.sampling
        )
        return ChatTurn(session, self.generate(request, engine=engine))

    def new_session(self, model: str, **fields: object) -> ChatSession:
        self.show(model)
        return ChatSession(id=uuid.uuid4().hex[:12], model=model, **fields)  # type: ignore[arg-type]

    def embed(
        self, request: EmbeddingRequest, *, engine: str | None = None, keep_alive: float | None = None
    ) -> Embeddings:
        model = self.store.resolve(request.model)
        if not model.supports(Capability.EMBEDDING):
            raise CapabilityMissing(model.name, "embeddings")
        started = time.monotonic_ns()
        with self.resident.use(model, engine or self.default_engine, self.engine_options, keep_alive) as lease:
            assert lease.resident is not None
            vectors = lease.resident.engine.embed(list(request.inputs), truncate=request.truncate)
            prompt_tokens = sum(len(lease.resident.engine.tokenize(t)) for t in request.inputs)
            load_ns = lease.resident.load_ns if lease.loaded_now else 0
        usage = Usage(
            prompt_tokens=prompt_tokens, load_ns=load_ns,
            total_ns=time.monotonic_ns() - started,
        )
        return Embeddings(model=model.name, vectors=tuple(tuple(v) for v in vectors), usage=usage)

    def load(
        self, name: str | ModelRef, *, engine: str | None = None, keep_alive: float | None = None
    ) -> Resident:
        model = self.store.resolve(_ref(name))
        with self.resident.use(model, engine or self.default_engine, self.engine_options, keep_alive) as lease:
            assert lease.resident is not None
            return lease.resident

    def unload(self, name: str | ModelRef) -> bool:
        return self.resident.unload(self.store.resolve(_ref(name)).name)

    def loaded(self) -> list[Resident]:
        return self.resident.loaded()

    def activity(self) -> dict[str, SlotStats]:
        """Each loaded generating model's slots, queue and decode rate, by name."""
        out = {}
        for resident in self.resident.loaded():
            stats = resident.stats()
            if stats is not None:
                out[resident.model.name] = stats
        return out

    def tokenize(self, name: str | ModelRef, text: str) -> list[int]:
        return self.load(name).engine.tokenize(text)

    def close(self) -> None:
        self.resident.unload_all()

    def _bundled(self, ref: ModelRef) -> ModelInfo | None:
        """The read-only (bundled) model a short name like ``smollm2`` means, if any."""
        if ref.org is not None:
            return None
        try:
            model = self.store.resolve(ref)
        except ModelNotFound:
            return None
        return model if model.read_only else None

    def _require_source(self) -> ModelSource:
        if self.source is None:
            raise ModelportError("no model source is configured (install 'modelport[hub]')")
        return self.source



def _with_totals(events: Iterator[TokenEvent], load_ns: int) -> Iterator[TokenEvent]:
    """Add the load time and the total time to the final event's usage."""
    started = time.monotonic_ns()
    for event in events:
        if event.done:
            usage = event.usage or Usage()
            total = time.monotonic_ns() - started + load_ns
            event = attrs.evolve(event, usage=attrs.evolve(usage, load_ns=load_ns, total_ns=total))
        yield event
