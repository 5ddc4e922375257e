"""What the command line asks of modelport, wherever the models run.

:class:`~modelport.ports.Services` (this machine) and the remote adapter
(``adapters/remote``: a running server, ``--url``) both implement :class:`Backend`;
``entrypoints/bootstrap.py`` picks one, and the CLI's commands never know which.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

from modelport.domain import (
    ChatSession,
    EmbeddingRequest,
    Embeddings,
    GenerationRequest,
    ModelInfo,
    ModelRef,
    SamplingPolicy,
)

from .store import ProgressCallback
from .usecases import ChatTurn, GenerationStream


class Backend(Protocol):
    """Models and generation, local or remote."""

    def list_models(self) -> list[ModelInfo]: ...

    def show(self, name: str | ModelRef | ModelInfo) -> ModelInfo:
        """The model ``name`` names (one lookup; a ModelInfo is given back as it is)."""
        ...

    def sampling_for(
        self, model: str | ModelRef | ModelInfo, changes: Mapping[str, Any] | None = None
    ) -> SamplingPolicy:
        """``changes`` (SamplingPolicy field names) over the model's defaults over
        modelport's; given the ModelInfo :meth:`show` gave, no lookup is made."""
        ...

    def generate(self, request: GenerationRequest, *, model: ModelInfo | None = None) -> GenerationStream:
        """``model``: what ``request.model`` resolved to, when the caller holds it."""
        ...

    def chat(self, session: ChatSession, message: str, **output: Any) -> ChatTurn: ...

    def new_session(self, model: str, **fields: object) -> ChatSession: ...

    def embed(self, request: EmbeddingRequest) -> Embeddings: ...

    def pull(self, name: str | ModelRef, progress: ProgressCallback = ...) -> ModelInfo: ...

    def copy(self, source: str | ModelRef, destination: str | ModelRef) -> ModelInfo: ...

    def remove(self, name: str | ModelRef) -> None: ...
