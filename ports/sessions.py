"""Where saved chat sessions are kept."""

from __future__ import annotations

from typing import Protocol

from modelport.domain import ChatSession


class SessionRepository(Protocol):
    def save(self, session: ChatSession) -> None: ...

    def get(self, session_id: str) -> ChatSession:
        """Raises KeyError for an unknown id."""
        ...

    def list(self) -> list[str]: ...

    def delete(self, session_id: str) -> None: ...
