"""The inference engine port: one loaded model that streams tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Protocol, Sequence, runtime_checkable

import attrs

from modelport.domain import GenerationRequest, InvalidRequest, ModelInfo, TokenEvent

if TYPE_CHECKING:
    from .scheduler import Scheduler

DEVICES = ("auto", "cpu", "gpu")
DTYPES = ("auto", "float32", "bfloat16", "float16")
QUANTIZE = ("auto", "none", "int8", "int4")


def _device(value: str) -> str:
    value = value.lower()
    value = "gpu" if value == "cuda" else value
    if value not in DEVICES:
        raise InvalidRequest(f"device must be one of {', '.join(DEVICES)} (or cuda), got {value!r}")
    return value


def _quantize(value: str) -> str:
    value = value.lower()
    if value not in QUANTIZE:
        raise InvalidRequest(f"quantize must be one of {', '.join(QUANTIZE)}, got {value!r}")
    return value


def _dtype(value: str) -> str:
    value = value.lower()
    if value not in DTYPES:
        raise InvalidRequest(f"dtype must be one of {', '.join(DTYPES)}, got {value!r}")
    return value


@attrs.frozen(kw_only=True)
class EngineOptions:
    """How to load a model; chosen once, at load time.

    ``home`` is modelport's home folder, where engines keep caches (converted
    models, compiled programs); None lets an engine use ``MODELPORT_HOME`` or the
    user cache folder. ``dtype`` is the weights' type for engines that choose it
    (jax); ``auto`` is the engine's default. ``slots`` is how many sequences a
    generating engine decodes together (the generation core's slots); None: the
    engine's default. ``quantize`` is how engines that choose it (jax) keep the
    weights: ``none`` (float), ``int8`` or ``int4``; ``auto`` is the engine's
    default for the device. ``tensor_parallel`` is how many devices an engine that
    can (jax, the Llama family) splits one model over (1: one device). ``warm``:
    an engine that compiles programs (jax) compiles all of them at load, so that
    no request waits for one (a server); False compiles each when a request first
    needs it, which reaches a one-shot command's first token sooner.
    """

    num_ctx: int = 4096
    device: str = attrs.field(default="auto", converter=_device)
    device_index: int = 0
    threads: int | None = None
    home: str | None = None
    dtype: str = attrs.field(default="auto", converter=_dtype)
    slots: int | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.ge(1)))
    quantize: str = attrs.field(default="auto", converter=_quantize)
    tensor_parallel: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    warm: bool = True


@runtime_checkable
class InferenceEngine(Protocol):
    """One model, loaded by one engine.

    An engine that generates also implements the step-level port
    (:class:`~modelport.ports.slots.SlotEngine`) and keeps, once loaded, the one
    :class:`~modelport.ports.scheduler.Scheduler` that runs its token loop as
    ``scheduler`` (None for an embedding model). ``stream`` is a thin call into it:
    it yields :class:`TokenEvent` s, the last with a finish reason and usage;
    closing the iterator early (``.close()``) cancels the generation.
    """

    name: str
    scheduler: "Scheduler | None"

    def load(self, model: ModelInfo, options: EngineOptions) -> None: ...

    def stream(self, request: GenerationRequest) -> Iterator[TokenEvent]: ...

    def embed(self, texts: Sequence[str], *, truncate: bool = True) -> list[list[float]]: ...

    def tokenize(self, text: str) -> list[int]: ...

    def detokenize(self, token_ids: Sequence[int]) -> str: ...

    def unload(self) -> None: ...

    def memory_used(self) -> int:
        """Bytes held by the loaded model (weights and caches); 0 once unloaded."""
        ...
