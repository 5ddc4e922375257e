"""Stop strings over a stream of text deltas.

A stop string can arrive split across several deltas, so text that might be the
start of one is held back until it is certain either way. The stop string itself is
never emitted, nor anything after it.
"""

from __future__ import annotations

from typing import Iterable


class StopMatcher:
    """Feed text deltas with :meth:`push`; emit what it returns.

    >>> m = StopMatcher(["</s>"])
    >>> m.push("Hello </"), m.push("s> world"), m.stopped
    ('Hello ', '', True)

    When stop strings overlap, the one completed first wins.
    """

    def __init__(self, stops: Iterable[str] = ()) -> None:
        self.stops = tuple(s for s in stops if s)
        self._longest = max((len(s) for s in self.stops), default=0)
        self._held = ""
        self.stopped = False

    def push(self, delta: str) -> str:
        """Return the part of the text so far that can safely be emitted."""
        if self.stopped:
            return ""
        if not self.stops:
            return delta
        text = self._held + delta
        hit = first_stop(text, self.stops)
        if hit is not None:
            self.stopped = True
            self._held = ""
            return text[:hit]
        hold = self._partial_suffix(text)
        self._held = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold]

    def flush(self) -> str:
        """At the end of generation: release whatever was held back."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _partial_suffix(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that begins some stop string."""
        for length in range(min(len(text), self._longest - 1), 0, -1):
            tail = text[-length:]
            if any(stop.startswith(tail) for stop in self.stops):
                return length
        return 0


def first_stop(text: str, stops: Iterable[str]) -> int | None:
    """Where the text should be cut: at the stop string that is complete first (the
    earliest end, then the earliest start), so the answer never depends on how the
    text was split into deltas. None when no stop string occurs."""
    found = [(i + len(s), i) for s in stops if (i := text.find(s)) >= 0]
    return min(found)[1] if found else None
