"""Where models live (the store) and where they come from (a source)."""

from __future__ import annotations

from typing import Callable, ContextManager, Iterable, Protocol

from modelport.domain import (
    DiskUsage,
    ModelDefaults,
    ModelFile,
    ModelFormat,
    ModelInfo,
    ModelRef,
    PullProgress,
    SearchHit,
    VerifyReport,
)

ProgressCallback = Callable[[PullProgress], None]


class ModelStore(Protocol):
    def list(self) -> list[ModelInfo]: ...

    def resolve(self, ref: ModelRef) -> ModelInfo:
        """The installed model ``ref`` names; raises ModelNotFound."""
        ...

    def copy(
        self, source: ModelRef, destination: ModelRef, defaults: ModelDefaults | None = None, *, replace: bool = False
    ) -> ModelInfo:
        """``source``'s files under ``destination`` with ``defaults`` (None: the
        source's); a taken name raises InvalidRequest unless ``replace`` (a bundled
        model's name always does)."""
        ...

    def remove(self, ref: ModelRef) -> None: ...

    def verify(self, ref: ModelRef) -> VerifyReport: ...

    def import_path(
        self, name: ModelRef, path: str, defaults: ModelDefaults | None = None, *, replace: bool = False
    ) -> ModelInfo:
        """Add a local GGUF file or Hugging Face folder under ``name``; ``replace`` as
        for :meth:`copy`."""
        ...

    def materialize(self, model: ModelInfo, format: ModelFormat) -> ModelInfo:
        """``model`` converted to ``format`` (a GGUF as a Hugging Face folder), made once
        in the store's cache and reused; raises EngineUnavailable when it cannot."""
        ...

    def staging(self, ref: ModelRef) -> ContextManager[str]:
        """A private folder to download ``ref`` into. Only :meth:`commit`, called inside
        the block, installs what it holds, so an error (or a crash) never lists a
        half-fetched model. A store may keep what an interrupted pull left there for the
        next pull of ``ref`` to resume, and may offer the installed copy's files under
        ``.installed/`` in the folder; a second pull of ``ref`` may wait for the first."""
        ...

    def disk_usage(self) -> DiskUsage:
        """Bytes used by the installed models and by interrupted pulls; free space."""
        ...

    def commit(self, ref: ModelRef, folder: str, files: Iterable[ModelFile]) -> ModelInfo:
        """Record a fully fetched folder as the model ``ref`` (called inside ``staging``)."""
        ...


class ModelSource(Protocol):
    """A remote catalogue of models, such as the Hugging Face Hub."""

    def fetch(self, ref: ModelRef, folder: str, progress: ProgressCallback) -> list[ModelFile]:
        """Download what ``ref`` needs into ``folder``; returns the files with sha256.

        ``folder`` may already hold files from an interrupted pull: keep those that still
        match the source, and replace a file (write a new one, rename it over) rather than
        writing into it, since it may be a hard link to an installed model's file."""
        ...

    def search(
        self,
        query: str,
        *,
        author: str | None = None,
        filter: str | None = None,
        sort: str = "downloads",
        limit: int = 20,
    ) -> list[SearchHit]: ...
