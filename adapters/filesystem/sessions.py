"""Saved chat sessions: one ``<id>.json`` file each, written atomically."""

from __future__ import annotations

import os
import re

from modelport.domain import ChatSession

from .files import write_atomic

# The ids ChatSession accepts; anything else cannot name a saved session (or a path).
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SUFFIX = ".json"


class FileSessionRepository:
    """A :class:`~modelport.ports.SessionRepository` over a folder, created on first save."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = os.path.abspath(os.path.expanduser(os.fspath(folder)))

    def save(self, session: ChatSession) -> None:
        os.makedirs(self.folder, exist_ok=True)
        write_atomic(self._path(session.id), session.to_json().encode("utf-8"))

    def get(self, session_id: str) -> ChatSession:
        """Raises KeyError for an unknown (or impossible) id."""
        if not _ID.fullmatch(session_id):
            raise KeyError(session_id)
        try:
            with open(self._path(session_id), encoding="utf-8") as handle:
                return ChatSession.from_json(handle.read())
        except FileNotFoundError:
            raise KeyError(session_id) from None

    def list(self) -> list[str]:
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        ids = (name[: -len(_SUFFIX)] for name in names if name.endswith(_SUFFIX))
        return sorted(i for i in ids if _ID.fullmatch(i))

    def delete(self, session_id: str) -> None:
        if not _ID.fullmatch(session_id):
            return
        try:
            os.unlink(self._path(session_id))
        except FileNotFoundError:
            pass

    def _path(self, session_id: str) -> str:
        return os.path.join(self.folder, session_id + _SUFFIX)
