"""What every command handler shares: the parsed arguments, the settings, the
streams, and the backend the command runs on (this machine's services, or a
running server's with ``--url``)."""

from __future__ import annotations

import json
import os
from typing import Any, TextIO

from modelport.domain import InvalidRequest
from modelport.ports import Backend, Services

from ..config import Settings

# The flags that are settings (Settings.load(flags=...)), by setting name.
SETTING_FLAGS = {
    "--home": "home",
    "--host": "host",
    "--port": "port",
    "--engine": "engine",
    "--device": "device",
    "--device-index": "device_index",
    "--quantize": "quantize",
    "--tensor-parallel": "tensor_parallel",
    "--coordinator": "coordinator",
    "--num-processes": "num_processes",
    "--process-id": "process_id",
    "--threads": "threads",
    "--max-models": "max_resident_models",
    "--max-resident-models": "max_resident_models",
    "--model-ttl": "model_ttl",
    "--api": "api",
    "--models-path": "models_path",
}


def setting_flags(args: dict[str, Any]) -> dict[str, Any]:
    return {name: args.get(flag) for flag, name in SETTING_FLAGS.items() if args.get(flag) is not None}


class Cli:
    """One command's context. ``services`` given: tests' fakes (``serve`` serves them)."""

    def __init__(
        self, args: dict[str, Any], command: str, *, services: Services | None, out: TextIO, err: TextIO, stdin: TextIO
    ) -> None:
        self.args = args
        self.command = command
        self.out, self.err, self.stdin = out, err, stdin
        self.settings = Settings.load(flags=setting_flags(args))
        self._services = services

    @property
    def injected(self) -> bool:
        """Whether the services were built by the caller (tests), not here."""
        return self._services is not None

    @property
    def services(self) -> Services:
        """modelport's use cases on this machine (built on first use)."""
        if self._services is None:
            from ..bootstrap import bootstrap

            self._services = bootstrap(self.settings, warm=False)  # a first reply sooner, see EngineOptions
        return self._services

    @property
    def models(self) -> list[str]:
        """The <model> arguments (docopt gives a list: `remove` takes several)."""
        from ..catalog import resolve_name  # RustLLM's registry names (phi-2) -> their Hub source

        value = self.args.get("<model>")
        return [resolve_name(v) for v in (list(value) if isinstance(value, list) else [value] if value else [])]

    @property
    def model(self) -> str | None:
        return self.models[0] if self.models else None

    @property
    def backend(self) -> Backend:
        """This machine's services (with --engine's engine), or a running server's
        when --url is given: the same Backend port either way."""
        if self.args["--url"]:
            for option in ("--engine", "--device", "--device-index", "--quantize", "--tensor-parallel"):
                if self.args.get(option) is not None:
                    raise InvalidRequest(
                        f"{option} chooses how this machine runs a model; with --url the server decides"
                    )
            return self.remote
        return self.services.using(None if self.settings.engine == "auto" else self.settings.engine)

    @property
    def remote(self):
        """The server at --url (else the settings' address): the Backend port plus
        the server's own calls (ps, health, load, unload, is_up)."""
        from ..bootstrap import build_remote

        return build_remote(self.args["--url"] or self.settings.url)

    def print_json(self, value: Any) -> None:
        print(json.dumps(value, indent=2, ensure_ascii=False), file=self.out)

    def _serve(self) -> int:
        """Serve the HTTP API in the foreground (the injected services, in tests)."""
        from ..http.server import serve

        factory = None
        if self._services is not None:
            from ..http.app import create_app

            services, settings = self._services, self.settings
            factory = lambda: create_app(services, settings)  # noqa: E731
        print(f"modelport serving on {self.settings.url} (Ctrl-C to stop)", file=self.err, flush=True)
        serve(self.settings, app_factory=factory)
        return 0


# -- strings to values ------------------------------------------------------------------


def number(text: str, flag: str, kind: type) -> Any:
    try:
        return kind(text)
    except (TypeError, ValueError):
        what = "a whole number" if kind is int else "a number"
        raise InvalidRequest(f"{flag} must be {what}, got {text!r}") from None


def positive(text: str, name: str) -> int:
    value = number(text, name, int)
    if value < 1:
        raise InvalidRequest(f"{name} must be at least 1, got {value}")
    return value


def as_path(text: str) -> str:
    """A path given where a model name may go: kept a path (``mymodels/llama`` would
    read as an org/name); empty stays empty."""
    if not text:
        return text
    text = os.path.expanduser(text)
    if text.startswith(("/", "./", "../")) or not os.path.exists(text):
        return text
    return "./" + text


def isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def num_ctx(cli: Cli) -> int:
    """--num-ctx (info and catalog estimate memory for it)."""
    from modelport.domain.sampling import DEFAULT_NUM_CTX

    if cli.args["--num-ctx"] is None:
        return DEFAULT_NUM_CTX
    return positive(cli.args["--num-ctx"], "--num-ctx")
