"""The background side of the server: unloading models whose keep_alive ran out.

Expiry is lazy (every request that acquires a model first unloads the expired ones,
and ``/api/ps`` does too) *and* eager: a :class:`Reaper` thread, started by the
production application, calls :meth:`Services.expire` every few seconds so an
idle server gives its memory back without waiting for the next request.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from modelport.ports import Services

log = logging.getLogger("modelport.http")
REAP_INTERVAL_S = 5.0


class Expiring(Protocol):
    """What the reaper calls: :class:`Services` (or the resident models themselves)."""

    def expire(self) -> list[str]: ...


class Reaper:
    """A daemon thread that expires idle models every ``interval`` seconds until
    :meth:`stop`."""

    def __init__(self, resident: Expiring, interval: float = REAP_INTERVAL_S) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._resident = resident
        self._interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="modelport-reaper", daemon=True)

    def start(self) -> "Reaper":
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            try:
                gone = self._resident.expire()
            except Exception:  # never let the thread die: log and try again later
                log.exception("unloading expired models failed")
                continue
            if gone:
                log.info("unloaded idle models: %s", ", ".join(gone))


def clean_leftovers(services: Services) -> None:
    """Delete what a killed create, copy or pull left in the store's staging folder
    (scratch folders, empty pulls, locks nobody holds), once, as the server starts;
    work in progress elsewhere holds its locks and is never touched."""
    try:
        freed = services.clean_leftovers()
    except OSError as exc:
        log.warning("could not clean the store's staging folder: %s", exc)
        return
    if freed:
        log.info("deleted %d bytes that interrupted work left in the store", freed)
