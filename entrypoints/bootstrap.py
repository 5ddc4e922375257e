"""The composition root: the one place that knows the concrete adapters.

``bootstrap()`` builds :class:`~modelport.ports.Services` from settings; tests and
applications pass their own adapters through the same function. Nothing heavy is
imported here at module level: each engine's library is imported when the engine is
first built, so ``modelport --help`` stays fast and never imports jax.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path
from typing import Iterable

from modelport.domain import Capability, ModelFormat
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

from modelport.ports.templates import ChatTemplates
from modelport.ports.constraints import ConstraintCompiler, NoConstraints

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


def _mlx_engine():
    from modelport.adapters.mlx import MlxEngine

    return MlxEngine()


def _lazy(build):
    """A check built on first use (``modelport --help`` and ``list`` never build it)."""
    made = []
    lock = threading.Lock()

    def check():
        with lock:
            if not made:
                made.append(build())
        return made[0]()

    return check


def _apple_silicon() -> bool:
    import platform

    return platform.system() == "Darwin" and platform.machine() == "arm64"


def _llamacpp_check(home: str | None):
    """The gguf engine's self-check: a token from the installed llama.cpp build in a
    child process, remembered under ``<home>/checks`` per build."""
    from modelport.adapters.llamacpp import reinstall_command
    from modelport.adapters.selfcheck import LibraryCheck, installed_library

    def library():
        return installed_library("llama_cpp", "llama-cpp-python")

    found = library()
    return LibraryCheck(
        engine="gguf",
        library=library,
        argv=[
            sys.executable,
            "-c",
            "import sys; from modelport.adapters.llamacpp.selfcheck import main; sys.exit(main())",
        ],
        fix=reinstall_command(sys.executable, found.version if found else ""),
        folder=None if home is None else Path(home) / "checks",
    )


def default_engines(home: str | None = None) -> list[EngineSpec]:
    """Every engine modelport ships, in order of preference for ``auto``: llama.cpp
    for GGUF files, then the folder engines (MLX first on Apple silicon). The gguf
    engine's library is checked once per build (results under ``home``)."""
    specs = [
        EngineSpec(
            name="gguf",
            formats={ModelFormat.GGUF},
            factory=_llamacpp_engine,
            available=lambda: _installed("llama_cpp"),
            extra="gguf",
            check=_lazy(lambda: _llamacpp_check(home)),
        ),
        EngineSpec(
            name="jax",
            formats={ModelFormat.SAFETENSORS, ModelFormat.GGUF},
            factory=_jax_engine,
            available=lambda: _installed("jax") and _installed("flax"),
            extra="jax",
        ),
        EngineSpec(
            name="mlx",
            formats={ModelFormat.SAFETENSORS, ModelFormat.MLX},
            factory=_mlx_engine,
            available=lambda: _installed("mlx") and _installed("mlx_lm"),
            extra="mlx",
            capabilities={Capability.COMPLETION, Capability.CHAT},
        ),
    ]
    if _apple_silicon():
        specs.sort(key=lambda spec: spec.name != "mlx")
    return specs


def build_store(settings: Settings) -> ModelStore:
    from modelport.adapters.filesystem import FilesystemModelStore

    return FilesystemModelStore(
        settings.models_dir, converter=_gguf_converter(), conversions=_conversions(settings.home)
    )


def _conversions(home: str) -> str:
    """The home's one cache of GGUF conversions, shared by the store (MLX) and the
    JAX engine (``adapters/ggufconvert/cache.py``)."""
    from modelport.adapters.ggufconvert.cache import cache_root

    return cache_root(home)


def _gguf_converter():
    """GGUF -> Hugging Face folder, for engines that read folders only (mlx); None
    without the libraries it needs (the jax extra)."""
    if not (_installed("gguf") and _installed("tokenizers") and _installed("safetensors")):
        return None

    def convert(gguf_path: str, folder: str) -> None:
        from modelport.adapters.ggufconvert import materialize_hf_folder

        materialize_hf_folder(gguf_path, folder)

    return convert


def build_source(settings: Settings) -> ModelSource | None:
    """The Hugging Face Hub at ``settings.mirror`` (the official Hub when empty), or None
    without huggingface_hub. Nothing of huggingface_hub is imported until a pull or search."""
    if not _installed("huggingface_hub"):
        return None
    from modelport.adapters.hub import HubModelSource

    return HubModelSource(settings.mirror or None)


def build_sessions(settings: Settings) -> SessionRepository:
    from modelport.adapters.filesystem import FileSessionRepository

    return FileSessionRepository(settings.sessions_dir)


def build_constraints() -> ConstraintCompiler:
    """llguidance for structured outputs and tools; without it, a compiler that
    refuses them with the extra to install."""
    if not (_installed("llguidance") and _installed("numpy")):
        return NoConstraints()
    from modelport.adapters.llguidance import LLGuidanceCompiler

    return LLGuidanceCompiler()


def bootstrap(
    settings: Settings | None = None,
    *,
    store: ModelStore | None = None,
    engines: Iterable[EngineSpec] | None = None,
    source: ModelSource | None = None,
    sessions: SessionRepository | None = None,
    constraints: ConstraintCompiler | None = None,
    warm: bool = True,
) -> Services:
    """Wire the services. Every argument left out gets the production adapter.
    ``warm``: engines compile everything at load (a server), else as needed (the CLI)."""
    settings = settings or Settings.load()
    registry = EngineRegistry(default_engines(settings.home) if engines is None else engines)
    store = store if store is not None else build_store(settings)
    return Services(
        store=store,
        engines=registry,
        resident=ResidentModels(
            registry,
            max_resident=settings.max_resident_models,
            convert=store.materialize,
            max_queue=settings.max_queue,
            warmup_tokens=settings.warmup_tokens,
        ),
        source=source if source is not None else build_source(settings),
        sessions=sessions if sessions is not None else build_sessions(settings),
        engine="jax" if settings.num_processes > 1 else None if settings.engine == "auto" else settings.engine,
        engine_options=EngineOptions(
            device=settings.device,
            device_index=settings.device_index,
            home=settings.home,
            slots=settings.num_parallel,
            threads=settings.num_thread,
            quantize=settings.quantize,
            tensor_parallel=settings.tensor_parallel,
            warm=warm,
        ),
        templates=build_templates(),
        constraints=constraints if constraints is not None else build_constraints(),
    )


def start_distributed(settings: Settings) -> None:
    """Join the group of ``settings.num_processes`` processes that serve one model
    (jax.distributed); nothing with one process. Call it in the process that will
    run the engine (a gunicorn worker), before anything uses JAX."""
    if settings.num_processes > 1:
        from modelport.adapters.jax.distributed import initialize

        initialize(settings.coordinator, settings.num_processes, settings.process_id)


def follow(settings: Settings) -> int:
    """A process other than 0 of a group: join it, then make process 0's calls
    until it is gone (no HTTP); the process ends there, with the exit status."""
    from modelport.adapters.jax.distributed import follow as follow_leader
    from modelport.adapters.jax.distributed import leave

    start_distributed(settings)
    leave(follow_leader(settings.home))
    return 1  # not reached


def build_templates() -> ChatTemplates:
    from modelport.adapters.jinja import JinjaChatTemplates

    return JinjaChatTemplates()


def build_remote(url: str):
    """A running server at ``url`` as the backend (``--url``): the remote adapter
    implements :class:`~modelport.ports.Backend` as :class:`Services` does, and also
    offers the server's own calls (``ps``, ``health``, ``load``, ``unload``, ``is_up``)."""
    from modelport.adapters.remote import OllamaClient, RemoteServices

    return RemoteServices(OllamaClient(url))
