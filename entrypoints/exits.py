"""The command line's exit statuses: one table maps every modelport error to one."""

from __future__ import annotations

from modelport.domain import (
    EngineUnavailable,
    InvalidModelName,
    InvalidRequest,
    ModelNotFound,
    ModelportError,
    RemoteBadRequest,
    RemoteNotFound,
    ServerUnreachable,
)

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_ENGINE, EXIT_SERVER, EXIT_INTERRUPTED = (0, 1, 2, 3, 4, 5, 130)
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (RemoteNotFound, EXIT_NOT_FOUND),
    (RemoteBadRequest, EXIT_USAGE),
    (ServerUnreachable, EXIT_SERVER),
    (ModelNotFound, EXIT_NOT_FOUND),
    (EngineUnavailable, EXIT_ENGINE),
    (InvalidRequest, EXIT_USAGE),
    (InvalidModelName, EXIT_USAGE),
    (ModelportError, EXIT_ERROR),
)


def exit_code(exc: BaseException) -> int | None:
    """The documented status for a modelport error (None: not one of ours)."""
    return next((code for kind, code in EXIT_CODES if isinstance(exc, kind)), None)
