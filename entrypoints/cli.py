"""modelport: run, manage and serve local language models.

Usage:
  modelport run [<model>] [<prompt>...] [--stop=<text>]... [options]
                [--engine=<name>] [--device=<device>] [--device-index=<i>] [--home=<dir>] [--debug]
  modelport generate <model> <prompt>... [--stop=<text>]... [options]
                [--engine=<name>] [--device=<device>] [--device-index=<i>] [--home=<dir>] [--debug]
  modelport embed <model> <text>... [--engine=<name>] [--device=<device>] [--device-index=<i>]
                [--home=<dir>] [--debug]
  modelport (list | ls) [--json] [--home=<dir>] [--debug]
  modelport show <model> [--json] [--home=<dir>] [--debug]
  modelport serve [--host=<host>] [--port=<port>] [--threads=<n>] [--home=<dir>]
                  [--engine=<name>] [--device=<device>] [--device-index=<i>] [--debug]
  modelport config [--json] [--home=<dir>]
  modelport version
  modelport (-h | --help)

Commands:
  run        Answer a prompt with a model (the default model when none is named);
             without a prompt, chat with it interactively.
  generate   Answer a prompt once, streaming the reply to stdout.
  embed      Print the embeddings of the texts as JSON (one vector per text).
  list, ls   List installed and bundled models.
  show       Show what is known about a model.
  serve      Serve the Ollama- and OpenAI-compatible HTTP API with gunicorn.
  config     Show every setting, its value and where it came from.
  version    Print the version.

Generation options (unset ones take the model's defaults, then Ollama's):
  --system=<text>          System prompt.
  --temperature=<t>        Sampling temperature; 0 is greedy (default 0.8).
  --top-k=<k>              Keep the k most likely tokens; 0 keeps all (default 40).
  --top-p=<p>              Keep the smallest set of tokens with this probability (default 0.9).
  --min-p=<p>              Drop tokens below this fraction of the top one (default 0).
  --repeat-penalty=<r>     Penalty for repeating recent tokens; 1 is none (default 1).
  --repeat-last-n=<n>      How many recent tokens the penalty looks at (default 64).
  --seed=<n>               Random seed; the same seed gives the same text.
  --stop=<text>            Stop when this text appears (repeatable).
  --max-tokens=<n>         Generate at most this many tokens.
  --num-ctx=<n>            Context window in tokens (default 4096).
  --raw                    Send the prompt as is, without the chat template.
  --verbose                Print timings to stderr when done.

Global options:
  --engine=<name>          auto, gguf, jax or mlx (default: auto, or MODELPORT_ENGINE).
  --device=<device>        auto, cpu or gpu (default: auto, or MODELPORT_DEVICE).
  --device-index=<i>       Which GPU to use.
  --home=<dir>             Where models live (default: MODELPORT_HOME, or the user cache).
  --host=<host>            Address to serve on (default: 127.0.0.1, or MODELPORT_HOST).
  --port=<port>            Port to serve on (default: 11434, or MODELPORT_PORT).
  --threads=<n>            Request threads per server worker.
  --json                   Print JSON instead of a table.
  --debug                  Show a traceback when something fails.
  -h, --help               Show this help.

Exit status: 0 success, 1 error, 2 bad usage, 3 model not found, 4 engine
unavailable, 130 interrupted.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, Iterable, Sequence, TextIO

from docopt import DocoptExit, docopt

from modelport.domain import (
    ChatMessage,
    Conversation,
    EmbeddingRequest,
    EngineUnavailable,
    GenerationRequest,
    InvalidModelName,
    InvalidRequest,
    ModelInfo,
    ModelNotFound,
    ModelportError,
    ModelRef,
    SamplingPolicy,
    Usage,
    system_and_user,
)

from .config import Settings

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_ENGINE, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (ModelNotFound, EXIT_NOT_FOUND),
    (EngineUnavailable, EXIT_ENGINE),
    (InvalidRequest, EXIT_USAGE),
    (InvalidModelName, EXIT_USAGE),
    (ModelportError, EXIT_ERROR),
)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("modelport")
    except PackageNotFoundError:
        return "0.0.0"


def main(argv: Sequence[str] | None = None, *, services=None, out: TextIO | None = None,
         err: TextIO | None = None, stdin: TextIO | None = None) -> int:
    """Run one command; returns the exit status. ``services`` lets tests inject fakes."""
    out, err, stdin = out or sys.stdout, err or sys.stderr, stdin or sys.stdin
    try:
        args = docopt(__doc__, argv=list(sys.argv[1:] if argv is None else argv), default_help=False)
    except DocoptExit as exc:
        print(exc.code if isinstance(exc.code, str) else __doc__.split("\n\n")[1], file=err)
        return EXIT_USAGE
    if args["--help"]:
        print(__doc__.strip(), file=out)
        return EXIT_OK
    if args["version"]:
        print(f"modelport {version()}", file=out)
        return EXIT_OK
    try:
        return Cli(args, services=services, out=out, err=err, stdin=stdin).dispatch()
    except KeyboardInterrupt:
        print("\ninterrupted", file=err)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # one table maps every error to a message and a status
        if args.get("--debug"):
            raise
        code = next((c for kind, c in EXIT_CODES if isinstance(exc, kind)), None)
        if code is None:
            print(f"error: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)",
                  file=err)
            return EXIT_ERROR
        print(f"error: {exc}", file=err)
        return code


def run() -> None:
    """The console script."""
    sys.exit(main())


class Cli:
    def __init__(self, args: dict[str, Any], *, services, out: TextIO, err: TextIO, stdin: TextIO) -> None:
        self.args = args
        self.out, self.err, self.stdin = out, err, stdin
        self.settings = Settings.load(flags=_flags(args))
        self._services = services

    @property
    def services(self):
        if self._services is None:
            from .bootstrap import bootstrap

            self._services = bootstrap(self.settings)
        return self._services

    def dispatch(self) -> int:
        for command in ("run", "generate", "embed", "list", "ls", "show", "serve", "config"):
            if self.args.get(command):
                handler: Callable[[], int] = getattr(self, "cmd_" + ("list" if command == "ls" else command))
                return handler()
        raise InvalidRequest("unknown command")  # docopt makes this unreachable

    # -- models ---------------------------------------------------------------------

    def cmd_list(self) -> int:
        models = self.services.list_models()
        if self.args["--json"]:
            self._print_json([_model_json(m) for m in models])
            return EXIT_OK
        rows = [
            (m.name, m.digest[:12], _size(m.size), m.format.value, m.architecture,
             m.parameter_size, m.quantization or "", _age(m.modified_at))
            for m in models
        ]
        _table(self.out, ("NAME", "ID", "SIZE", "FORMAT", "ARCH", "PARAMS", "QUANT", "MODIFIED"), rows)
        return EXIT_OK

    def cmd_show(self) -> int:
        info = self.services.show(self.args["<model>"])
        if self.args["--json"]:
            self._print_json(_model_json(info))
            return EXIT_OK
        rows = [
            ("architecture", info.architecture), ("parameters", info.parameter_size),
            ("quantization", info.quantization or ""), ("context length", str(info.context_length or "")),
            ("embedding length", str(info.embedding_length or "")), ("format", info.format.value),
            ("capabilities", ", ".join(sorted(c.value for c in info.capabilities))),
            ("size", _size(info.size)), ("location", info.location),
            ("license", (info.license or "").splitlines()[0] if info.license else ""),
        ]
        print(f"  Model {info.name}", file=self.out)
        for key, value in rows:
            if value:
                print(f"    {key:<18}{value}", file=self.out)
        return EXIT_OK

    # -- generation -----------------------------------------------------------------

    def cmd_generate(self) -> int:
        return self._answer(self.args["<model>"], " ".join(self.args["<prompt>"]))

    def cmd_run(self) -> int:
        model = self.args["<model>"] or self.settings.default_model
        prompt = " ".join(self.args["<prompt>"])
        if prompt:
            return self._answer(model, prompt)
        if not self.stdin.isatty():
            return self._answer(model, self.stdin.read())
        return self._repl(model)

    def cmd_embed(self) -> int:
        request = EmbeddingRequest(model=ModelRef.parse(self.args["<model>"]), inputs=self.args["<text>"])
        result = self.services.embed(request)
        print(json.dumps({"model": result.model, "embeddings": [list(v) for v in result.vectors]}), file=self.out)
        return EXIT_OK

    def _answer(self, model: str, prompt: str) -> int:
        if not prompt.strip():
            raise InvalidRequest("the prompt is empty")
        ref = ModelRef.parse(model)
        sampling = self._sampling(model)
        if self.args["--raw"]:
            if self.args["--system"]:
                raise InvalidRequest("--raw sends the prompt as is; it cannot take --system")
            request = GenerationRequest(model=ref, prompt=prompt, sampling=sampling)
        else:
            request = GenerationRequest(
                model=ref, messages=system_and_user(prompt, self.args["--system"]), sampling=sampling
            )
        self._stream(request)
        return EXIT_OK

    def _stream(self, request: GenerationRequest) -> str:
        stream = self.services.generate(request)
        parts: list[str] = []
        usage: Usage | None = None
        try:
            for event in stream:
                if event.text:
                    parts.append(event.text)
                    self.out.write(event.text)
                    self.out.flush()
                if event.done:
                    usage = event.usage
        finally:
            stream.close()
        text = "".join(parts)
        if not text.endswith("\n"):
            self.out.write("\n")
        self.out.flush()
        if self.args["--verbose"] and usage is not None:
            print(format_stats(usage), file=self.err)
        return text

    def _repl(self, model: str) -> int:
        """A plain interactive chat; leave with /bye, Ctrl-D or Ctrl-C."""
        conversation = Conversation()
        if self.args["--system"]:
            conversation = conversation.add(ChatMessage.system(self.args["--system"]))
        ref = ModelRef.parse(model)
        sampling = self._sampling(model)
        print(f"Chatting with {model}. Type /bye or press Ctrl-D to leave.", file=self.err)
        while True:
            try:
                line = input(">>> ")
            except EOFError:
                print(file=self.err)
                return EXIT_OK
            if line.strip() in ("/bye", "/quit", "/exit"):
                return EXIT_OK
            if not line.strip():
                continue
            conversation = conversation.add(ChatMessage.user(line))
            request = GenerationRequest(model=ref, messages=conversation.last_turns(10), sampling=sampling)
            try:
                reply = self._stream(request)
            except KeyboardInterrupt:
                print("\n(stopped)", file=self.err)
                continue
            conversation = conversation.add(ChatMessage.assistant(reply))

    def _sampling(self, model: str) -> SamplingPolicy:
        """The flags given, as Ollama options over the model's own defaults."""
        options: dict[str, Any] = {}
        for flag, (option, kind) in _SAMPLING_FLAGS.items():
            if self.args[flag] is not None:
                options[option] = _number(self.args, flag, kind)
        if self.args["--stop"]:
            options["stop"] = list(self.args["--stop"])
        return self.services.sampling_for(model, options)

    # -- server and settings ------------------------------------------------------------

    def cmd_serve(self) -> int:
        from .http.server import serve

        print(f"modelport serving on {self.settings.url} (Ctrl-C to stop)", file=self.err)
        serve(self.settings)
        return EXIT_OK

    def cmd_config(self) -> int:
        rows = self.settings.describe()
        if self.args["--json"]:
            self._print_json({name: {"value": value, "source": source} for name, value, source in rows})
        else:
            _table(self.out, ("SETTING", "VALUE", "SOURCE"), rows)
        return EXIT_OK

    def _print_json(self, value: Any) -> None:
        print(json.dumps(value, indent=2, ensure_ascii=False), file=self.out)


_SAMPLING_FLAGS: dict[str, tuple[str, type]] = {
    "--temperature": ("temperature", float),
    "--top-k": ("top_k", int),
    "--top-p": ("top_p", float),
    "--min-p": ("min_p", float),
    "--repeat-penalty": ("repeat_penalty", float),
    "--repeat-last-n": ("repeat_last_n", int),
    "--seed": ("seed", int),
    "--max-tokens": ("num_predict", int),
    "--num-ctx": ("num_ctx", int),
}


def _flags(args: dict[str, Any]) -> dict[str, Any]:
    names = {"--home": "home", "--host": "host", "--port": "port", "--engine": "engine",
             "--device": "device", "--device-index": "device_index", "--threads": "threads"}
    return {name: args.get(flag) for flag, name in names.items() if args.get(flag) is not None}


def _number(args: dict[str, Any], flag: str, kind: type) -> Any:
    text = args[flag]
    try:
        return kind(text)
    except (TypeError, ValueError):
        what = "a whole number" if kind is int else "a number"
        raise InvalidRequest(f"{flag} must be {what}, got {text!r}") from None


def format_stats(usage: Usage) -> str:
    """Ollama's --verbose block."""
    lines = [
        ("total duration", _duration(usage.total_ns)),
        ("load duration", _duration(usage.load_ns)),
        ("prompt eval count", f"{usage.prompt_tokens} token(s)"),
        ("prompt eval duration", _duration(usage.prompt_eval_ns)),
        ("prompt eval rate", f"{usage.prompt_rate:.2f} tokens/s"),
        ("eval count", f"{usage.completion_tokens} token(s)"),
        ("eval duration", _duration(usage.eval_ns)),
        ("eval rate", f"{usage.eval_rate:.2f} tokens/s"),
    ]
    return "\n".join(f"{name + ':':<22}{value}" for name, value in lines)


def _duration(ns: int) -> str:
    if ns >= 1_000_000_000:
        return f"{ns / 1e9:.3f}s"
    if ns >= 1_000_000:
        return f"{ns / 1e6:.3f}ms"
    return f"{ns / 1e3:.3f}µs"


def _size(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size >= scale:
            return f"{size / scale:.0f} {unit}" if size / scale >= 10 else f"{size / scale:.1f} {unit}"
    return f"{size} B"


def _age(timestamp: float) -> str:
    import time

    if not timestamp:
        return ""
    seconds = max(0, time.time() - timestamp)
    for unit, scale in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= scale:
            return f"{int(seconds // scale)} {unit} ago"
    return "just now"


def _table(out: TextIO, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    rows = [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    for row in (tuple(header), *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip(), file=out)


def _model_json(info: ModelInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "digest": info.digest,
        "size": info.size,
        "format": info.format.value,
        "architecture": info.architecture,
        "parameters": info.parameter_count,
        "parameter_size": info.parameter_size,
        "quantization": info.quantization,
        "context_length": info.context_length,
        "embedding_length": info.embedding_length,
        "capabilities": sorted(c.value for c in info.capabilities),
        "location": info.location,
        "read_only": info.read_only,
        "aliases": list(info.aliases),
        "modified_at": info.modified_at,
    }
