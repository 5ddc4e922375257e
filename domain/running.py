"""What a loaded model is doing: the values ``/api/ps``, ``/health``, metrics and
``modelport ps`` show. The live engine stays behind the use cases; these are copies."""

from __future__ import annotations

import attrs

from .models import ModelInfo


@attrs.frozen(kw_only=True)
class SlotStats:
    """What a scheduler is doing now, for ``/api/ps``, ``modelport ps`` and metrics."""

    slots: int
    busy: int
    waiting: int
    tokens_per_second: float
    generated_tokens: int

    @property
    def free(self) -> int:
        return self.slots - self.busy


@attrs.frozen(kw_only=True)
class RunningModel:
    """A loaded model at one moment.

    ``size``: bytes the engine holds (the files' size when it cannot say);
    ``size_vram``: the part in GPU memory; ``expires_at``: when it will be unloaded
    if no request comes (seconds since the epoch; None: never; for a model in use,
    counted as if its requests ended now); ``in_use``: requests using it now;
    ``slots``: its generation slots (None for an embedding model).
    """

    model: ModelInfo
    size: int
    size_vram: int
    num_ctx: int
    device: str
    in_use: int
    expires_at: float | None
    slots: SlotStats | None = None
