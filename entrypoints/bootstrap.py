"""The composition root: the one place that knows the concrete adapters.

``bootstrap()`` builds :class:`~modelport.ports.Services` from settings; tests and
applications pass their own adapters through the same function. Nothing heavy is
imported here at module level: each engine's library is imported when the engine is
first built, so ``modelport --help`` stays fast and never imports jax.
"""

from __future__ import annotations

import importlib.util
from typing import Iterable

from modelport.domain import ModelFormat
from modelport.ports import (
    EngineOptions,
    EngineRegistry,
    EngineSpec,
    ModelSource,
    ModelStore,
    ResidentModels,
    Services,
    SessionRepository,
)

from .config import Settings


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _llamacpp_engine():
    from modelport.adapters.llamacpp import LlamaCppEngine

    return LlamaCppEngine()


def _jax_engine():
    from modelport.adapters.jax import JaxEngine

    return JaxEngine()


def default_engines() -> list[EngineSpec]:
    """Every engine modelport ships, in order of preference for ``auto``."""
    return [
        EngineSpec(
            name="gguf",
            formats={ModelFormat.GGUF},
            factory=_llamacpp_engine,
            available=lambda: _installed("llama_cpp"),
            extra="gguf",
        ),
        EngineSpec(
            name="jax",
            formats={ModelFormat.SAFETENSORS, ModelFormat.GGUF},
            factory=_jax_engine,
            available=lambda: _installed("jax") and _installed("flax"),
            extra="jax",
        ),
    ]


def build_store(settings: Settings) -> ModelStore:
    from modelport.adapters.filesystem import FilesystemModelStore

    return FilesystemModelStore(settings.models_dir)


def build_sessions(settings: Settings) -> SessionRepository:
    from modelport.adapters.filesystem import FileSessionRepository

    return FileSessionRepository(settings.sessions_dir)


def bootstrap(
    settings: Settings | None = None,
    *,
    store: ModelStore | None = None,
    engines: Iterable[EngineSpec] | None = None,
    source: ModelSource | None = None,
    sessions: SessionRepository | None = None,
) -> Services:
    """Wire the services. Every argument left out gets the production adapter."""
    settings = settings or Settings.load()
    registry = EngineRegistry(default_engines() if engines is None else engines)
    return Services(
        store=store if store is not None else build_store(settings),
        engines=registry,
        resident=ResidentModels(registry, max_resident=settings.max_resident_models),
        source=source,
        sessions=sessions if sessions is not None else build_sessions(settings),
        engine=None if settings.engine == "auto" else settings.engine,
        engine_options=EngineOptions(device=settings.device, device_index=settings.device_index,
                                     home=settings.home),
    )
