"""The use cases: what the CLI, the HTTP server and library users can ask for.

Each method speaks domain types only; the ports it needs are handed to
:class:`Services` by the composition root (``modelport.entrypoints.bootstrap``).

One store lookup per request: a method that takes a model also takes the
:class:`~modelport.domain.ModelInfo` an earlier :meth:`Services.show` gave, and uses
it as it is. An entrypoint looks the model up once at its edge (it needs the
model's own sampling defaults to build the request) and passes that value on.
"""

from __future__ import annotations

import copy
import os
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
    EngineUnavailable,
    GenerationRequest,
    InvalidRequest,
    ModelDefaults,
    Modelfile,
    ModelInfo,
    ModelNotFound,
    ModelportError,
    ModelRef,
    PullProgress,
    RunningModel,
    SamplingPolicy,
    SearchHit,
    SlotStats,
    TokenEvent,
    Tool,
    ToolCallSplitter,
    Usage,
    VerifyReport,
    chat_template,
    template_renders_tools,
)
from modelport.domain.modelfile import PARAMETERS
from modelport.domain.sampling import layered
from modelport.domain.messages import without_native_tools
from modelport.ports.constraints import ConstraintCompiler, NoConstraints
from modelport.ports.engine import EngineOptions
from modelport.ports.engines import EngineRegistry, Resident, ResidentModels
from modelport.ports.sessions import SessionRepository
from modelport.ports.store import ModelSource, ModelStore, ProgressCallback
from modelport.ports.templates import ChatTemplates


MAX_CHOICES = 16  # OpenAI's n: choices per request


def _ref(name: str | ModelRef) -> ModelRef:
    return name if isinstance(name, ModelRef) else ModelRef.parse(name)


class GenerationStream(Iterator[TokenEvent]):
    """The events of one generation. The model stays in use until the stream is
    exhausted or closed; closing it early cancels the generation."""

    def __init__(self, events: Iterator[TokenEvent], release: Callable[[], None], *, model: str | None = None) -> None:
        self._events = events
        self._release = release
        self._open = True
        self.model = model  # the name the store files the model under, when known

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
        calls: list = []
        for event in self._events:
            parts.append(event.text)
            calls.extend(event.tool_calls)
            yield event
            if event.done:
                self.final = event
                self.session = self.session.with_reply("".join(parts), tuple(calls))

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
        templates: ChatTemplates | None = None,
        constraints: ConstraintCompiler | None = None,
    ) -> None:
        self.store = store
        self.engines = engines
        self.resident = resident or ResidentModels(engines, convert=store.materialize)
        self.source = source
        self.sessions = sessions
        self.default_engine = engine
        self.engine_options = engine_options or EngineOptions()
        self.templates = templates
        self.constraints: ConstraintCompiler = constraints or NoConstraints()

    def using(self, engine: str | None) -> "Services":
        """These services with ``engine`` run every model (None: as configured); the
        store, the loaded models and the rest are shared."""
        if engine is None or engine == self.default_engine:
            return self
        chosen = copy.copy(self)
        chosen.default_engine = engine
        return chosen

    # -- models ---------------------------------------------------------------------

    def list_models(self) -> list[ModelInfo]:
        return sorted(self.store.list(), key=lambda m: m.name)

    def show(self, name: str | ModelRef | ModelInfo) -> ModelInfo:
        """The installed model ``name`` names (one store lookup; ModelNotFound when it
        names nothing). Its ``name`` is the one the store files it under
        (``smollm2`` -> ``smollm2:135m``), which every error about the model uses."""
        if isinstance(name, ModelInfo):
            return name
        return self.store.resolve(_ref(name))

    def sampling_for(
        self, model: str | ModelRef | ModelInfo, changes: Mapping[str, Any] | None = None
    ) -> SamplingPolicy:
        """The policy for a request to ``model``: the request's ``changes`` (SamplingPolicy
        field names; each wire format maps its own at its edge) over the model's own
        defaults over modelport's. Given the ModelInfo, no lookup is made."""
        return layered(self.show(model).sampling_defaults, changes)

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

    def import_model(
        self, name: str | ModelRef, path: str, defaults: ModelDefaults | None = None, *, replace: bool = False
    ) -> ModelInfo:
        """A local GGUF file or model folder installed as ``name``; ``replace`` as
        for :meth:`create`."""
        if defaults is not None and defaults.template is not None:
            self._require_templates().check(chat_template(defaults.template))
        model = self.store.import_path(_ref(name), path, defaults, replace=replace)
        self.resident.unload(model.name)  # a replaced model's old weights go with it
        return model

    def create(self, name: str | ModelRef, base: str, defaults: ModelDefaults | None = None) -> ModelInfo:
        """A model ``name`` from ``base`` (an installed model, a GGUF file or a model
        folder) with ``defaults`` (a Modelfile's) on top of the base model's own: the
        files are shared with the base, nothing is copied. As ``ollama create`` does,
        an installed model of that name is replaced (a bundled one's name is refused),
        so a Modelfile can be edited and created again."""
        defaults = defaults or ModelDefaults()
        ref = _ref(base)
        if ref.is_path:
            return self.import_model(name, ref.path or base, defaults, replace=True)
        if defaults.template is not None:
            self._require_templates().check(chat_template(defaults.template))
        model = self.store.resolve(ref)
        inherited = attrs.evolve(model.defaults, parameters={k: v for k, v in model.default_options if k in PARAMETERS})
        created = self.store.copy(ref, _ref(name), defaults.over(inherited), replace=True)
        self.resident.unload(created.name)
        return created

    def modelfile(self, name: str | ModelRef) -> Modelfile:
        """What ``modelport create`` would need to make the model again."""
        model = self.show(name)
        parameters = {k: v for k, v in model.default_options if k in PARAMETERS}
        base = model.name if model.read_only else os.path.join(model.location, model.primary_file)
        return Modelfile(base=base, defaults=attrs.evolve(model.defaults, parameters=parameters))

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
        self,
        request: GenerationRequest,
        *,
        engine: str | None = None,
        keep_alive: float | None = None,
        model: ModelInfo | None = None,
    ) -> GenerationStream:
        """Stream a generation. The model is resolved and loaded before this returns,
        so errors come out here rather than mid-stream. ``keep_alive``: seconds the
        model stays loaded once idle (0: unload after this request; negative or
        ``math.inf``: until evicted; None: as before). ``model``: what
        ``request.model`` resolved to, when the caller looked it up already
        (:meth:`show`, for :meth:`sampling_for`): the store is not asked again."""
        return self.generate_many(request, 1, engine=engine, keep_alive=keep_alive, model=model)[0]

    def generate_many(
        self,
        request: GenerationRequest,
        n: int,
        *,
        engine: str | None = None,
        keep_alive: float | None = None,
        model: ModelInfo | None = None,
    ) -> list[GenerationStream]:
        """``n`` independent generations of one request (OpenAI's ``n`` choices),
        submitted together so that the model's slots decode them side by side. A
        seeded request gives choice ``i`` the seed ``seed + i``: each choice is
        reproducible on its own, and choice 0 equals the same request with ``n=1``.
        Errors before the first token (an unknown model, a full queue) raise here,
        and nothing is left running."""
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_CHOICES:
            raise InvalidRequest(f"n must be an integer from 1 to {MAX_CHOICES}")
        model = self.show(request.model if model is None else model)
        if request.is_chat and not model.supports(Capability.CHAT):
            raise CapabilityMissing(model.name, "chat")
        if not (model.supports(Capability.COMPLETION) or model.supports(Capability.CHAT)):
            raise CapabilityMissing(model.name, "generate")
        request = self._as_the_model_sees_it(model, request)
        spec = request.output_spec
        if spec.constrained:
            self.constraints.check(spec)  # an uncompilable schema fails before any load
        request.check_fits(model.context_length or 0)  # by its size, before anything tokenizes it
        options = attrs.evolve(self.engine_options, num_ctx=request.sampling.num_ctx)
        streams: list[GenerationStream] = []
        try:
            for index in range(n):
                streams.append(self._submit(model, _choice(request, index), engine, options, keep_alive))
        except BaseException:
            for stream in streams:
                stream.close()
            raise
        return streams

    def _as_the_model_sees_it(self, model: ModelInfo, request: GenerationRequest) -> GenerationRequest:
        """A chat with the model's own defaults applied: its messages first, its
        system prompt when the chat has none, and its own template (rendered here,
        the engine gets the prompt). A raw prompt is sent as it is."""
        defaults = model.defaults
        if not request.is_chat or (not defaults.system and not defaults.messages and defaults.template is None):
            return request
        messages = defaults.prepend_to(request.messages)
        if defaults.template is None:
            return attrs.evolve(request, messages=messages)
        prompt = self._require_templates().render(chat_template(defaults.template), [m.to_dict() for m in messages])
        return attrs.evolve(request, prompt=prompt, messages=())

    def _require_templates(self) -> ChatTemplates:
        if self.templates is None:
            raise EngineUnavailable("templates", "no chat template renderer is configured (jinja2)", "server")
        return self.templates

    def _submit(
        self,
        model: ModelInfo,
        request: GenerationRequest,
        engine: str | None,
        options: EngineOptions,
        keep_alive: float | None,
    ) -> GenerationStream:
        spec = request.output_spec
        resident, loaded_now = self.resident.acquire(model, engine or self.default_engine, options, keep_alive)
        try:
            loaded = resident.engine
            scheduler = loaded.scheduler
            if scheduler is None:
                raise CapabilityMissing(model.name, "generation (it is an embedding model)")
            constraint = None
            if spec.constrained:
                vocabulary = getattr(loaded, "vocabulary", None)
                if vocabulary is None:
                    raise CapabilityMissing(model.name, f"structured outputs and tools with the {loaded.name} engine")
                constraint = self.constraints.compile(spec, vocabulary())
            events: Iterator[TokenEvent] = scheduler.submit(prompted(request, model, loaded), constraint=constraint)
        except BaseException:
            self.resident.release(resident)
            raise
        if request.calls_tools:
            events = _with_tool_calls(events, spec.tools)
        load_ns = resident.load_ns if loaded_now else 0
        return GenerationStream(
            _with_totals(events, load_ns), lambda: self.resident.release(resident), model=model.name
        )

    def complete(self, request: GenerationRequest, *, engine: str | None = None) -> Completion:
        return Completion.fold(self.generate(request, engine=engine))

    def chat(self, session: ChatSession, message: str, *, engine: str | None = None, **output: Any) -> ChatTurn:
        """Send ``message`` in ``session``; the model sees the kept turns only.
        ``output``: the request's ``format``, ``tools`` and ``tool_choice``."""
        session = session.with_user(message)
        request = GenerationRequest(
            model=ModelRef.parse(session.model), messages=session.context, sampling=session.sampling, **output
        )
        return ChatTurn(session, self.generate(request, engine=engine))

    def new_session(self, model: str, **fields: object) -> ChatSession:
        self.show(model)
        return ChatSession(id=uuid.uuid4().hex[:12], model=model, **fields)  # type: ignore[arg-type]

    def embed(
        self,
        request: EmbeddingRequest,
        *,
        engine: str | None = None,
        keep_alive: float | None = None,
        model: ModelInfo | None = None,
    ) -> Embeddings:
        """``model``: as for :meth:`generate`."""
        model = self.show(request.model if model is None else model)
        if not model.supports(Capability.EMBEDDING):
            raise CapabilityMissing(model.name, "embeddings")
        started = time.monotonic_ns()
        with self.resident.use(model, engine or self.default_engine, self.engine_options, keep_alive) as lease:
            assert lease.resident is not None
            vectors = lease.resident.engine.embed(list(request.inputs), truncate=request.truncate)
            prompt_tokens = sum(len(lease.resident.engine.tokenize(t)) for t in request.inputs)
            load_ns = lease.resident.load_ns if lease.loaded_now else 0
        usage = Usage(
            prompt_tokens=prompt_tokens,
            load_ns=load_ns,
            total_ns=time.monotonic_ns() - started,
        )
        return Embeddings(model=model.name, vectors=tuple(tuple(v) for v in vectors), usage=usage)

    def load(
        self, name: str | ModelRef | ModelInfo, *, engine: str | None = None, keep_alive: float | None = None
    ) -> RunningModel:
        """Load ``name`` (Ollama's empty generate request) and say how it runs."""
        return self._running(self._load(name, engine, keep_alive), time.time())

    def _load(
        self, name: str | ModelRef | ModelInfo, engine: str | None = None, keep_alive: float | None = None
    ) -> Resident:
        model = self.show(name)
        with self.resident.use(model, engine or self.default_engine, self.engine_options, keep_alive) as lease:
            assert lease.resident is not None
            return lease.resident

    def unload(self, name: str | ModelRef | ModelInfo) -> bool:
        return self.resident.unload(self.show(name).name)

    def loaded(self, now: float | None = None) -> list[RunningModel]:
        """The loaded models, as values (``now``: the moment their expiry is counted from)."""
        now = time.time() if now is None else now
        return [self._running(resident, now) for resident in self.resident.loaded()]

    def expire(self) -> list[str]:
        """Unload the models whose keep_alive has run out; returns their names."""
        return self.resident.expire()

    @property
    def max_queue(self) -> int:
        """Requests that may wait for each model's slots."""
        return self.resident.max_queue

    def clean_leftovers(self) -> int:
        """Delete what killed work left in the store's staging folder; bytes freed
        (0 for a store that keeps no such folder)."""
        clean = getattr(self.store, "clean_staging", None)
        return int(clean()) if callable(clean) else 0

    @staticmethod
    def _running(resident: Resident, now: float) -> RunningModel:
        size = resident.engine.memory_used() or resident.model.size
        return RunningModel(
            model=resident.model,
            size=size,
            size_vram=size if resident.options.device == "gpu" else 0,
            num_ctx=resident.options.num_ctx,
            device=resident.options.device,
            in_use=resident.in_use,
            expires_at=resident.expiry(now),
            slots=resident.stats(),
        )

    def activity(self) -> dict[str, SlotStats]:
        """Each loaded generating model's slots, queue and decode rate, by name."""
        out = {}
        for resident in self.resident.loaded():
            stats = resident.stats()
            if stats is not None:
                out[resident.model.name] = stats
        return out

    def tokenize(self, name: str | ModelRef | ModelInfo, text: str) -> list[int]:
        return self._load(name).engine.tokenize(text)

    def detokenize(self, name: str | ModelRef | ModelInfo, token_ids: list[int]) -> str:
        """The engine's text for ``token_ids`` (the text of a log-probability's token)."""
        return self._load(name).engine.detokenize(list(token_ids))

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


def _choice(request: GenerationRequest, index: int) -> GenerationRequest:
    """Choice ``index`` of a request: seed + index when the request is seeded."""
    seed = request.sampling.seed
    if index == 0 or seed is None:
        return request
    return attrs.evolve(request, sampling=request.sampling.replace(seed=seed + index))


def prompted(request: GenerationRequest, model: ModelInfo, engine: object) -> GenerationRequest:
    """The request as the engine renders it. Tools go through the model's own chat
    template when the engine passes them to it (``renders_tools``) and the
    template teaches ``<tool_call>`` blocks; otherwise the conversation is
    rewritten for a template without tools (:func:`without_native_tools`).
    With ``tool_choice`` none the tools are not shown at all."""
    if not request.is_chat or not (
        request.tools or any(m.tool_calls or m.role.value == "tool" for m in request.messages)
    ):
        return request
    native = bool(getattr(engine, "renders_tools", False)) and template_renders_tools(model.chat_template)
    if native:
        return request if request.calls_tools else attrs.evolve(request, tools=())
    tools = request.output_spec.tools if request.calls_tools else ()
    return attrs.evolve(
        request,
        messages=without_native_tools(request.messages, tools),
        tools=(),
        tool_choice=attrs.evolve(request.tool_choice, mode="auto", name=None),
    )


class _with_tool_calls(Iterator[TokenEvent]):
    """Take the ``<tool_call>`` blocks out of the text into events' ``tool_calls``;
    closing it closes the events."""

    def __init__(self, events: Iterator[TokenEvent], tools: tuple[Tool, ...]) -> None:
        self._events = events
        self._splitter = ToolCallSplitter(tools)

    def __iter__(self) -> "_with_tool_calls":
        return self

    def __next__(self) -> TokenEvent:
        event = next(self._events)
        text, calls = self._splitter.push(event.text)
        if event.done:
            text += self._splitter.flush()
        if text != event.text or calls:
            event = attrs.evolve(event, text=text, tool_calls=calls)
        return event

    def close(self) -> None:
        close = getattr(self._events, "close", None)
        if close is not None:
            close()


def _with_totals(events: Iterator[TokenEvent], load_ns: int) -> Iterator[TokenEvent]:
    """Add the load time and the total time to the final event's usage."""
    started = time.monotonic_ns()
    for event in events:
        if event.done:
            usage = event.usage or Usage()
            total = time.monotonic_ns() - started + load_ns
            event = attrs.evolve(event, usage=attrs.evolve(usage, load_ns=load_ns, total_ns=total))
        yield event
