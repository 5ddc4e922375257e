"""Choosing an engine for a model, and keeping loaded models resident."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from typing import Callable, Iterable

import attrs

from modelport.domain import (
    Capability,
    Completion,
    EngineUnavailable,
    GenerationRequest,
    ModelFormat,
    ModelInfo,
    ModelportError,
    ModelRef,
    SamplingPolicy,
)
from modelport.ports.engine import EngineOptions, InferenceEngine
from modelport.ports.scheduler import Scheduler, SlotStats

WARMUP_PROMPT = "Hello"

# A model in the key's format can be converted by the store into the value's format,
# so that engines which cannot read the first can still run it.
CONVERSIONS: dict[ModelFormat, ModelFormat] = {ModelFormat.GGUF: ModelFormat.SAFETENSORS}
Convert = Callable[[ModelInfo, ModelFormat], ModelInfo]
log = logging.getLogger("modelport.engines")


@attrs.frozen(kw_only=True)
class EngineCheck:
    """What running an engine's installed library once here showed: ``usable`` False
    means it cannot run on this machine (its build crashed), ``summary`` says what
    happened in one line and ``fix`` what to do about it."""

    usable: bool
    summary: str
    fix: str | None = None


@attrs.frozen(kw_only=True)
class EngineSpec:
    """An engine the composition root knows how to build.

    ``available`` answers cheaply (without importing the engine's library) whether
    it can run here; ``factory`` builds an unloaded engine. ``check`` runs the
    installed library once (in a child process, remembered per build; None when there
    is nothing to check) and is asked only of an engine about to be chosen.
    """

    name: str
    formats: frozenset[ModelFormat] = attrs.field(converter=frozenset)
    factory: Callable[[], InferenceEngine]
    available: Callable[[], bool] = lambda: True
    extra: str | None = None
    capabilities: frozenset[Capability] = attrs.field(converter=frozenset, default=frozenset(Capability))
    check: Callable[[], EngineCheck | None] = lambda: None

    def problem(self) -> EngineUnavailable | None:
        """Why the installed library cannot run here (its check failed), or None."""
        result = self.check()
        if result is None or result.usable:
            return None
        return EngineUnavailable(self.name, result.summary, fix=result.fix)

    def serves(self, model: ModelInfo) -> bool:
        """Whether the engine offers something the model can do (an embedder needs an
        engine that embeds)."""
        return bool(self.capabilities & model.capabilities)


class EngineRegistry:
    """The engines in order of preference for ``auto``."""

    def __init__(self, specs: Iterable[EngineSpec], conversions: dict[ModelFormat, ModelFormat] | None = None) -> None:
        self._specs = {spec.name: spec for spec in specs}
        self._conversions = CONVERSIONS if conversions is None else conversions
        self._warned: set[str] = set()

    def format_for(self, spec: EngineSpec, model_format: ModelFormat) -> ModelFormat | None:
        """The format ``spec`` loads a ``model_format`` model in: its own, or the one it
        is converted to; None when the engine cannot run it at all."""
        if model_format in spec.formats:
            return model_format
        converted = self._conversions.get(model_format)
        return converted if converted in spec.formats else None

    @property
    def names(self) -> list[str]:
        return list(self._specs)

    def spec(self, name: str) -> EngineSpec:
        try:
            return self._specs[name]
        except KeyError:
            known = ", ".join(["auto", *self._specs])
            raise EngineUnavailable(name, f"unknown engine; choose one of: {known}") from None

    def select(self, model: ModelInfo, requested: str | None = None) -> EngineSpec:
        """The engine to run ``model``: the one requested, or the first that fits."""
        if requested and requested != "auto":
            spec = self.spec(requested)
            if not spec.serves(model):
                wanted = ", ".join(sorted(c.value for c in model.capabilities))
                raise EngineUnavailable(spec.name, f"it cannot run '{model.name}' ({wanted})")
            if self.format_for(spec, model.format) is None:
                formats = ", ".join(sorted(f.value for f in spec.formats))
                raise EngineUnavailable(
                    spec.name, f"it runs {formats} models and '{model.name}' is {model.format.value}"
                )
            if not spec.available():
                raise EngineUnavailable(spec.name, "its library is not installed", spec.extra)
            problem = spec.problem()
            if problem is not None:
                raise problem
            return spec
        serving = [s for s in self._specs.values() if s.serves(model)]
        native = [s for s in serving if model.format in s.formats]
        converted = [s for s in serving if s not in native and self.format_for(s, model.format)]
        fitting = native + converted
        broken: list[EngineUnavailable] = []
        for spec in fitting:
            if spec.available():
                problem = spec.problem()
                if problem is None:
                    self._warn_fallback(broken, spec)
                    return spec
                broken.append(problem)
        if broken:
            raise broken[0]
        if fitting:
            first = fitting[0]
            raise EngineUnavailable(first.name, f"needed for {model.format.value} models", first.extra)
        wanted = ", ".join(sorted(c.value for c in model.capabilities))
        raise EngineUnavailable("auto", f"no engine in this build runs '{model.name}' ({model.format.value}; {wanted})")

    def _warn_fallback(self, broken: list[EngineUnavailable], chosen: EngineSpec) -> None:
        """One line per skipped engine (once per registry): a crashing build is never silent."""
        for problem in broken:
            if problem.engine not in self._warned:
                self._warned.add(problem.engine)
                log.warning("%s; using engine '%s' instead", problem, chosen.name)

    def status(self) -> dict[str, bool]:
        return {name: spec.available() for name, spec in self._specs.items()}


@attrs.define
class Resident:
    """A loaded model, as :class:`ResidentModels` tracks it.

    ``keep_alive`` is how long the model stays loaded once idle (seconds; None,
    ``math.inf`` or negative: until evicted). ``expires_at`` is set when the last request using it
    ends; a model in use never expires.
    """

    model: ModelInfo
    engine: InferenceEngine
    options: EngineOptions
    loaded_at: float
    load_ns: int
    last_used: float
    in_use: int = 0
    expires_at: float | None = None
    keep_alive: float | None = None

    def stats(self) -> SlotStats | None:
        """The model's slots, queue and decode rate (None for an embedding model)."""
        scheduler = getattr(self.engine, "scheduler", None)
        return scheduler.stats() if scheduler is not None else None

    def expiry(self, now: float) -> float | None:
        """When the model will be unloaded if no request comes (None: never).
        For a model in use, counted from ``now`` as if its requests ended now."""
        if self.in_use:
            return _deadline(now, self.keep_alive)
        return self.expires_at


def _deadline(now: float, keep_alive: float | None) -> float | None:
    """``now + keep_alive``; None (never) for None, infinite or negative values."""
    if keep_alive is None or keep_alive < 0 or math.isinf(keep_alive):
        return None
    return now + keep_alive


class ResidentModels:
    """Loads models on demand and keeps up to ``max_resident`` of them (LRU).

    Requests for a model that is loading wait for that one load. A model in use is
    never evicted. Each model stays loaded for its ``keep_alive`` once idle (the
    last request's value, else ``keep_alive`` given here; None: until evicted);
    0 unloads it as soon as its last request ends. Expired models are unloaded by
    :meth:`expire`, which every :meth:`acquire` calls first (lazy expiry) and which
    a background thread may call too. Thread safe.
    """

    def __init__(
        self,
        registry: EngineRegistry,
        *,
        max_resident: int = 3,
        clock: Callable[[], float] = time.time,
        convert: Convert | None = None,
        keep_alive: float | None = None,
        max_queue: int = 512,
        warmup_tokens: int = 0,
    ) -> None:
        if max_resident < 1:
            raise ValueError("max_resident must be at least 1")
        self._registry = registry
        self._max = max_resident
        self._clock = clock
        self._convert = convert
        self.keep_alive = keep_alive
        self.max_queue = max_queue  # requests that may wait for each model's slots
        self.warmup_tokens = warmup_tokens  # decoded at load (0: none)
        self._lock = threading.Lock()
        self._loaded: OrderedDict[str, Resident] = OrderedDict()
        self._loading: dict[str, threading.Lock] = {}

    def acquire(
        self,
        model: ModelInfo,
        engine: str | None,
        options: EngineOptions,
        keep_alive: float | None = None,
    ) -> tuple[Resident, bool]:
        """The resident model, loading it if needed; returns (resident, loaded_now).

        ``keep_alive`` (seconds, None: keep the model's current value) applies once
        the model is idle again. Pair each call with :meth:`release`; :meth:`use`
        does both.
        """
        spec = self._registry.select(model, engine)
        self.expire()
        key = model.name
        with self._lock:
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                resident = self._loaded.get(key)
                if resident and resident.options == options and resident.engine.name == spec.name:
                    resident.in_use += 1
                    resident.last_used = self._clock()
                    resident.expires_at = None
                    if keep_alive is not None:
                        resident.keep_alive = keep_alive
                    self._loaded.move_to_end(key)
                    return resident, False
            if resident is not None:
                self._drop(key, wait=True)
            started = time.monotonic_ns()
            instance = spec.factory()
            instance.load(self._in_format(model, spec), options)
            scheduler = getattr(instance, "scheduler", None)
            if scheduler is not None:
                scheduler.max_queue = self.max_queue
                self._warm_up(scheduler, model)
            load_ns = time.monotonic_ns() - started
            now = self._clock()
            resident = Resident(
                model=model,
                engine=instance,
                options=options,
                loaded_at=now,
                load_ns=load_ns,
                last_used=now,
                in_use=1,
                keep_alive=self.keep_alive if keep_alive is None else keep_alive,
            )
            with self._lock:
                self._loaded[key] = resident
                self._loaded.move_to_end(key)
                self._evict_over_limit()
            return resident, True

    def _warm_up(self, scheduler: Scheduler, model: ModelInfo) -> None:
        """Decode a few tokens right after the load: the first steps of an engine are
        slower (programs compiled or fetched from the cache, buffers allocated),
        and a request should not wait for them. A model that cannot decode even
        this raises here; a refusal (a context too small for the prompt) is ignored."""
        if self.warmup_tokens <= 0:
            return
        request = GenerationRequest(
            model=ModelRef.parse("warm-up"),
            prompt=WARMUP_PROMPT,
            sampling=SamplingPolicy.greedy(max_tokens=self.warmup_tokens),
        )
        try:
            Completion.fold(scheduler.submit(request))
        except ModelportError:
            pass

    def _in_format(self, model: ModelInfo, spec: EngineSpec) -> ModelInfo:
        """``model`` as ``spec`` loads it: converted by the store when needed."""
        target = self._registry.format_for(spec, model.format)
        if target is None or target == model.format:
            return model
        if self._convert is None:
            raise EngineUnavailable(spec.name, f"nothing here converts {model.format.value} models to {target.value}")
        return self._convert(model, target)

    def release(self, resident: Resident) -> None:
        """End one use; the last use starts the model's keep_alive (0: unload now)."""
        with self._lock:
            resident.in_use = max(0, resident.in_use - 1)
            resident.last_used = now = self._clock()
            if resident.in_use == 0:
                resident.expires_at = _deadline(now, resident.keep_alive)
            due = resident.in_use == 0 and resident.keep_alive == 0
        if due:
            self.expire()

    def use(
        self,
        model: ModelInfo,
        engine: str | None,
        options: EngineOptions,
        keep_alive: float | None = None,
    ) -> "_Lease":
        return _Lease(self, model, engine, options, keep_alive)

    def expire(self, now: float | None = None) -> list[str]:
        """Unload every idle model whose keep_alive has run out; returns their names."""
        with self._lock:
            now = self._clock() if now is None else now
            due = [
                key
                for key, r in self._loaded.items()
                if r.in_use == 0 and r.expires_at is not None and r.expires_at <= now
            ]
            gone = [self._loaded.pop(key) for key in due]
        for resident in gone:
            resident.engine.unload()
        return [resident.model.name for resident in gone]

    def loaded(self) -> list[Resident]:
        with self._lock:
            return list(self._loaded.values())

    def unload(self, name: str) -> bool:
        """Unload ``name`` now (waiting for requests in flight); False if not loaded."""
        return self._drop(name, wait=True)

    def unload_all(self) -> None:
        for resident in self.loaded():
            self._drop(resident.model.name, wait=True)

    def _drop(self, key: str, *, wait: bool) -> bool:
        with self._lock:
            resident = self._loaded.pop(key, None)
        if resident is None:
            return False
        while wait and resident.in_use > 0:
            time.sleep(0.01)
        resident.engine.unload()
        return True

    def _evict_over_limit(self) -> None:
        # Called with the lock held: only idle models go.
        idle = [k for k, r in self._loaded.items() if r.in_use == 0]
        while len(self._loaded) > self._max and idle:
            self._loaded.pop(idle.pop(0)).engine.unload()


class _Lease:
    def __init__(
        self,
        owner: ResidentModels,
        model: ModelInfo,
        engine: str | None,
        options: EngineOptions,
        keep_alive: float | None = None,
    ):
        self._owner, self._args = owner, (model, engine, options, keep_alive)
        self.resident: Resident | None = None
        self.loaded_now = False

    def __enter__(self) -> "_Lease":
        self.resident, self.loaded_now = self._owner.acquire(*self._args)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.resident is not None:
            self._owner.release(self.resident)
