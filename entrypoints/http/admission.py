"""Admission: which requests may use a model now, which wait, which are turned away.

Each model serves ``parallel`` generations at a time (the engines run one at a time
per loaded model, so the default is 1). Further requests for it wait in a FIFO line:
they are served in the order they arrived, whatever the thread scheduler does. At
most ``max_queue`` requests wait across all models; one more gets :class:`QueueFull`
(the HTTP layer answers 503 with ``Retry-After``).
"""

from __future__ import annotations

import collections
import itertools
import threading

import attrs


class QueueFull(Exception):
    """Too many requests are already waiting."""

    def __init__(self, waiting: int) -> None:
        super().__init__(f"the server is busy: {waiting} requests are already waiting; try again shortly")
        self.waiting = waiting


@attrs.frozen
class Ticket:
    """A place in the line of one model; give it back with :meth:`Admission.leave`."""

    model: str
    number: int


class Admission:
    """Fair (FIFO per model), bounded admission of requests to models. Thread safe."""

    def __init__(self, *, parallel: int = 1, max_queue: int = 512) -> None:
        if parallel < 1:
            raise ValueError("parallel must be at least 1")
        if max_queue < 0:
            raise ValueError("max_queue must be 0 or more")
        self.parallel = parallel
        self.max_queue = max_queue
        self._changed = threading.Condition(threading.RLock())
        self._numbers = itertools.count()
        self._lines: dict[str, collections.deque[Ticket]] = collections.defaultdict(collections.deque)
        self._active: collections.Counter[str] = collections.Counter()

    def enter(self, model: str) -> Ticket:
        """Wait for a turn on ``model``; raises :class:`QueueFull` rather than wait
        behind ``max_queue`` others."""
        with self._changed:
            line = self._lines[model]
            if not line and self._active[model] < self.parallel:
                return self._admit(Ticket(model, next(self._numbers)))
            if self.waiting >= self.max_queue:
                raise QueueFull(self.waiting)
            ticket = Ticket(model, next(self._numbers))
            line.append(ticket)
            try:
                while line[0] != ticket or self._active[model] >= self.parallel:
                    self._changed.wait()
            except BaseException:
                line.remove(ticket)
                self._changed.notify_all()
                raise
            line.popleft()
            self._changed.notify_all()  # the next in line may fit too (parallel > 1)
            return self._admit(ticket)

    def leave(self, ticket: Ticket) -> None:
        with self._changed:
            self._active[ticket.model] -= 1
            if self._active[ticket.model] <= 0:
                del self._active[ticket.model]
            if not self._lines.get(ticket.model):
                self._lines.pop(ticket.model, None)
            self._changed.notify_all()

    @property
    def waiting(self) -> int:
        """Requests waiting for their turn, all models together."""
        with self._changed:
            return sum(len(line) for line in self._lines.values())

    @property
    def active(self) -> int:
        """Requests being served now."""
        with self._changed:
            return sum(self._active.values())

    def _admit(self, ticket: Ticket) -> Ticket:
        self._active[ticket.model] += 1
        return ticket
