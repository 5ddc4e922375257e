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
    path: str
    expected: str | None
    actual: str | None

    @property
    def ok(self) -> bool:
        return self.expected is None or self.expected == self.actual


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
