"""Every error modelport raises on purpose.

Entrypoints map these, and only these, to HTTP statuses and exit codes; anything
else reaching them is a bug and is reported as one.
"""

from __future__ import annotations


class ModelportError(Exception):
    """Base class: an error a user can act on, with a message worth showing."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidModelName(ModelportError, ValueError):
    """A model reference that cannot be parsed or is unsafe to use as a path."""


class ModelNotFound(ModelportError):
    """The reference is well formed but names nothing in the store."""

    def __init__(self, name: str, hint: str = "") -> None:
        message = f"model '{name}' not found"
        super().__init__(f"{message}; {hint}" if hint else message)
        self.name = name


class UnsupportedArchitecture(ModelportError):
    """The weights describe an architecture that no engine here implements."""

    def __init__(self, architecture: str, supported: tuple[str, ...] = ()) -> None:
        message = f"unsupported architecture '{architecture}'"
        if supported:
            message += f"; supported: {', '.join(sorted(supported))}"
        super().__init__(message)
        self.architecture = architecture
        self.supported = supported


class EngineUnavailable(ModelportError):
    """An engine that cannot run here, usually because its extra is not installed.

    ``fix`` is what to do about it when that is not installing the extra (say, the
    command that reinstalls a library build that crashes on this CPU)."""

    def __init__(self, engine: str, reason: str = "", extra: str | None = None, fix: str | None = None) -> None:
        message = f"engine '{engine}' is not available"
        if reason:
            message += f": {reason}"
        if extra:
            message += f"; install it with: pip install 'modelport[{extra}]'"
        if fix:
            message += f"; {fix}"
        super().__init__(message)
        self.engine = engine
        self.extra = extra
        self.fix = fix


class ContextOverflow(ModelportError):
    """The prompt does not fit in the model's context window."""

    def __init__(self, prompt_tokens: int, context_length: int) -> None:
        super().__init__(
            f"the prompt is {prompt_tokens} tokens but the context window holds "
            f"{context_length}; shorten the prompt or raise num_ctx"
        )
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length


class ServerBusy(ModelportError):
    """Too many requests are already waiting for the model; try again shortly."""

    def __init__(self, waiting: int) -> None:
        super().__init__(f"the server is busy: {waiting} requests are already waiting; try again shortly")
        self.waiting = waiting


class PromptTooLong(ContextOverflow):
    """The prompt is so long that it cannot fit, whatever it tokenizes to: refused by
    its size in bytes, before it is tokenized."""

    def __init__(self, prompt_bytes: int, context_length: int, max_bytes: int) -> None:
        ModelportError.__init__(
            self,
            f"the prompt is {prompt_bytes} bytes, more than a context window of {context_length} "
            f"tokens can hold (at most {max_bytes} bytes); shorten the prompt or raise num_ctx",
        )
        self.prompt_tokens = -(-prompt_bytes // (max_bytes // context_length))  # at least this many
        self.context_length = context_length
        self.prompt_bytes = prompt_bytes


class InvalidRequest(ModelportError, ValueError):
    """A request whose values are out of range, of the wrong type or contradictory."""


class CapabilityMissing(InvalidRequest):
    """The model cannot do what was asked (embeddings from a chat-only model, ...)."""

    def __init__(self, model: str, capability: str) -> None:
        super().__init__(f"'{model}' does not support {capability}")
        self.model = model
        self.capability = capability


class ModelLoadError(ModelportError):
    """The files are there but the engine could not load them (corrupt, truncated,
    or too large for this machine)."""


class ModelReadOnly(ModelportError):
    """An attempt to change a model the store does not own (a bundled model)."""


class DownloadError(ModelportError):
    """Fetching a model failed; the message says why and what to do."""


class ServerUnreachable(ModelportError):
    """Nothing answers at a modelport server's address (``--url`` mode)."""

    def __init__(self, url: str, reason: object) -> None:
        super().__init__(
            f"cannot reach a modelport server at {url} ({reason}); "
            "start one with `modelport serve`, or name another with --url"
        )
        self.url = url


class ServerError(ModelportError):
    """A server answered with an error status (or an error line in a stream)."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.status = status


class RemoteNotFound(ServerError):
    """404: the server has no such model (or no such route)."""


class RemoteBadRequest(ServerError):
    """400: the server refused the request's values."""
