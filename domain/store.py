"""Values exchanged with model stores and sources: progress, verification, search."""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class PullProgress:
    """One step of a download. ``completed``/``total`` are bytes of ``file``."""

    status: str
    file: str | None = None
    digest: str | None = None
    completed: int | None = None
    total: int | None = None


@attrs.frozen(kw_only=True)
class FileCheck:
    """One file checked again: its sha256 against the manifest (``expected``) and,
    where the source published one, against the source's digest (``source``)."""

    path: str
    expected: str | None
    actual: str | None
    source: str | None = None
    source_actual: str | None = None

    @property
    def ok(self) -> bool:
        matches_manifest = self.expected is None or self.expected == self.actual
        return matches_manifest and (self.source is None or self.source == self.source_actual)


@attrs.frozen(kw_only=True)
class VerifyReport:
    model: str
    checks: tuple[FileCheck, ...] = attrs.field(converter=tuple)

    @property
    def ok(self) -> bool:
        return all(check.ok and check.actual is not None for check in self.checks)

    @property
    def failures(self) -> tuple[FileCheck, ...]:
        return tuple(c for c in self.checks if not c.ok or c.actual is None)


@attrs.frozen(kw_only=True)
class SearchHit:
    repo_id: str
    downloads: int = 0
    likes: int = 0
    pipeline_tag: str | None = None
    tags: tuple[str, ...] = attrs.field(default=(), converter=tuple)


@attrs.frozen(kw_only=True)
class DiskUsage:
    """Bytes on disk under a store's folder; a file hard-linked into several models
    counts once. ``partial`` is interrupted pulls kept for resuming."""

    root: str
    models: int = 0
    partial: int = 0
    free: int = 0
    by_model: tuple[tuple[str, int], ...] = attrs.field(default=(), converter=tuple)

    @property
    def total(self) -> int:
        return self.models + self.partial
