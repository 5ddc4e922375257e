"""Saved chats: a name in the session repository, or a file (``/save``, ``/load``,
``--session``)."""

from __future__ import annotations

import os
from pathlib import Path

from modelport.domain import ChatSession, InvalidRequest
from modelport.ports import SessionRepository

from .files import write_atomic


def session_path(name: str) -> Path | None:
    """A file path (it has a separator, starts with ~ or ends in .json), else None."""
    if "/" in name or os.sep in name or name.startswith("~") or name.lower().endswith(".json"):
        return Path(name).expanduser()
    return None


def load_session(name: str, sessions: SessionRepository | None) -> ChatSession:
    """A saved chat from a file, or from the saved sessions by name."""
    path = session_path(name)
    if path is not None:
        try:
            return ChatSession.from_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InvalidRequest(f"no such file: {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidRequest(f"cannot read {path}: {exc}") from None
    if sessions is None:
        raise InvalidRequest("no session folder here; give a file path instead")
    try:
        return sessions.get(name)
    except KeyError:
        saved = ", ".join(sessions.list()) or "none"
        raise InvalidRequest(f"no saved session '{name}' (saved: {saved})") from None


def save_session_file(path: Path, session: ChatSession) -> None:
    """Write ``session`` to ``path`` in one step: a crash leaves the old file or the new one."""
    try:
        write_atomic(str(path), session.to_json().encode("utf-8"))
    except OSError as exc:
        raise InvalidRequest(f"cannot write {path}: {exc}") from None
