"""modelport: run, manage and serve local language models.

Usage:
  modelport run [<model>] [<prompt>...] [--stop=<text>]... [options]
  modelport generate <model> <prompt>... [--stop=<text>]... [options]
  modelport chat [<model>] [--stop=<text>]... [options]
  modelport embed <model> [<text>...] [options]
  modelport (pull | download) <model> [options]
  modelport model pull <model> [options]
  modelport model (list | ls) [options]
  modelport model (remove | rm) <model>... [options]
  modelport search <query>... [options]
  modelport (list | ls) [options]
  modelport show <model> [options]
  modelport info [<model>] [options]
  modelport verify <model> [options]
  modelport (copy | cp) <source> <destination> [options]
  modelport (remove | rm) <model>... [options]
  modelport create <model> (<path> | --file=<modelfile>) [options]
  modelport serve [options]
  modelport deploy [options]
  modelport stop-server [options]
  modelport ps [options]
  modelport stop <model> [options]
  modelport cache (stats | clear) [options]
  modelport cache (preload | evict) <model> [options]
  modelport cache max <n> [options]
  modelport cache (enable | disable) [options]
  modelport catalog [options]
  modelport config [options]
  modelport version
  modelport --version
  modelport (-h | --help)

Commands:
  run         Answer a prompt (with the default model when none is named); with no
              prompt, answer stdin, or chat when stdin is a terminal.
  generate    Answer a prompt once, streaming the reply to stdout.
  chat        Chat with a model; with stdin not a terminal, every line is a message.
  embed       Embed each text (the arguments, or each line of stdin); prints JSON.
  pull        Download a model from the Hugging Face Hub (download is the same).
  model       RustLLM's spelling: model pull NAME, model list, model remove NAME.
  search      Search the Hugging Face Hub for models.
  list, ls    List installed and bundled models.
  show        Show a model's details.
  info        Show this installation (engines, memory, GPUs, paths), or all about a model.
  verify      Hash a model's files again and compare them with the recorded sha256.
  copy, cp    Copy a model under a new name (the files are shared, not copied).
  remove, rm  Remove models.
  create      Add a local GGUF file or Hugging Face folder as a model, or make one
              from a Modelfile (-f): a base model with its own defaults.
  serve       Serve the Ollama-compatible HTTP API (gunicorn, in the foreground).
  deploy      Print how to reach the server and keep it running, then serve;
              with --detached, start it in the background and return.
  stop-server Stop the server that deploy --detached started.
  ps          List the models a running server holds in memory.
  stop        Unload a model from a running server.
  cache       A running server's resident models: stats, clear, preload MODEL,
              evict MODEL, max N; enable or disable keeping models loaded
              between requests (for the next server started here).
  catalog     Well-known small models, with the memory each needs against this machine's.
  config      Show every setting, its value and where it came from.
  version     Print the version.

Generation options (run, generate, chat; unset ones take the model's own defaults):
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
  --num-ctx=<n>            Context window in tokens (default 4096); catalog and info
                           estimate memory for it.
  --raw                    run, generate: send the prompt as is, without the chat template.
  --stream                 run, generate: print the reply as it comes (the default).
  --no-stream              run, generate: print the reply when it is complete.
  --format=<format>        run, generate, chat: the reply is JSON: json (any object), or
                           a JSON schema (the schema's text, or a file holding it).
  --session=<name>         chat: continue a saved chat (a name from /save, or a file).
  --model=<name>           run, chat: the model (RustLLM's spelling of <model>).
  --model-path=<path>      run, chat: a GGUF file or model folder to run (default for
                           run: MODELPORT_MODEL_PATH, else MODELPORT_DEFAULT_MODEL).
  --verbose                Print timings to stderr after each reply.

Model options:
  --author=<org>           search: only models of this organisation.
  --filter=<tag>           search: only models with this tag (gguf, text-generation...).
  --sort=<key>             search: the order, e.g. downloads (the default) or likes.
  --limit=<n>              search: at most this many results (default 20).
  --memory=<size>          catalog: the memory to fit in, e.g. 24GB (default: this
                           machine's RAM and GPU memory).
  --all                    catalog: list the models that do not fit too.
  --file=<modelfile>, -f   create: a Modelfile (FROM, SYSTEM, PARAMETER, TEMPLATE,
                           MESSAGE, LICENSE).
  --revision=<rev>         pull: a branch, tag or commit of the repository.
  --trust-remote-code      pull: accepted for Hugging Llama's scripts; modelport never
                           runs a repository's code (docs/models.md says what it means).

Server options:
  --url=<url>              A running server (default: MODELPORT_HOST and the --port
                           default below, else http://127.0.0.1:11434). ps, stop and
                           cache need one; list, show, pull, copy, remove, run,
                           generate, chat and embed go through it when --url is given.
  --host=<host>            serve, deploy: address to listen on (default: 127.0.0.1,
                           or MODELPORT_HOST).
  --port=<port>            serve, deploy: port (default: 11434, or MODELPORT_PORT, or
                           OLLAMA_LOCAL_PORT; client commands use it too).
  --threads=<n>            serve, deploy: request threads (default: 4, or MODELPORT_THREADS).
  --max-models=<n>         serve, deploy: models kept loaded at once (default: 3, or
                           MODELPORT_MAX_RESIDENT_MODELS).
  --max-resident-models=<n>  serve, deploy: the same as --max-models.
  --model-ttl=<seconds>    serve, deploy: how long an idle model stays loaded (300, 5m,
                           -1 for ever; default: 5m, or MODELPORT_MODEL_TTL).
  --api=<profile>          serve, deploy: ollama (the default) or rustllm, the routes
                           at /api (RustLLM's are always under /rustllm/api too).
  --detached               deploy: start the server in the background (a pid file and
                           a log under the home); stop-server stops it.

Global options:
  --engine=<name>          auto, gguf, jax or mlx (default: auto, or MODELPORT_ENGINE).
  --device=<device>        auto, cpu or gpu (default: auto, or MODELPORT_DEVICE).
  --device-index=<i>       Which GPU to use (default: 0, or MODELPORT_DEVICE_INDEX).
  --quantize=<kind>        The jax engine's weights: none, int8 or int4 (default: auto,
                           float weights; or MODELPORT_QUANTIZE).
  --home=<dir>             Where models live (default: MODELPORT_HOME, or the user cache).
  --models-path=<dir>      The model store's folder (default: MODELPORT_MODELS_PATH, or
                           the home's models/).
  --json                   Print JSON instead of text, for scripts.
  --debug                  Show a traceback when something fails.
  -h, --help               Show this help.
  --version                Print the version.

Exit status: 0 success, 1 error, 2 bad usage, 3 model not found, 4 engine
unavailable, 5 server not reachable, 130 interrupted.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

import attrs
from docopt import DocoptExit, docopt

from modelport.domain import (
    Completion,
    EmbeddingRequest,
    EngineUnavailable,
    GenerationRequest,
    InvalidModelName,
    InvalidRequest,
    Modelfile,
    ModelInfo,
    ModelNotFound,
    ModelportError,
    ModelRef,
    OutputFormat,
    SamplingPolicy,
    TokenEvent,
    Usage,
    system_and_user,
)

from . import render
from .client import (
    OllamaClient,
    RemoteBadRequest,
    RemoteNotFound,
    RemoteServices,
    ServerUnreachable,
)
from .config import Settings
from .render import format_stats  # noqa: F401  (part of this module's interface)

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_ENGINE, EXIT_SERVER, EXIT_INTERRUPTED = (
    0, 1, 2, 3, 4, 5, 130)
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

# Which options each command takes; any other option given is a usage error.
_GENERATION = {"--system", "--temperature", "--top-k", "--top-p", "--min-p", "--repeat-penalty",
               "--repeat-last-n", "--seed", "--stop", "--max-tokens", "--num-ctx", "--verbose"}
_ENGINE = {"--engine", "--device", "--device-index", "--quantize"}
_LOCAL = {"--home", "--models-path", "--debug"}
_SERVE = {"--host", "--port", "--threads", "--max-models", "--max-resident-models", "--model-ttl",
          "--api"} | _ENGINE | _LOCAL
_CLIENT = {"--url", "--json", "--debug"}
OPTIONS_OF: dict[str, set[str]] = {
    "run": _GENERATION | _ENGINE | _LOCAL | {"--raw", "--stream", "--no-stream", "--format", "--url", "--json",
                                             "--model", "--model-path"},
    "generate": _GENERATION | _ENGINE | _LOCAL | {"--raw", "--stream", "--no-stream", "--format", "--url",
                                                  "--json"},
    "chat": _GENERATION | _ENGINE | _LOCAL | {"--session", "--url", "--model", "--model-path", "--format"},
    "embed": _ENGINE | _LOCAL | {"--url", "--json"},
    "pull": _LOCAL | {"--url", "--json", "--revision", "--trust-remote-code"},
    "search": _LOCAL | {"--author", "--filter", "--sort", "--limit", "--json"},
    "list": _LOCAL | {"--url", "--json"},
    "show": _LOCAL | {"--url", "--json"},
    "info": _LOCAL | _ENGINE | {"--url", "--json", "--num-ctx"},
    "verify": _LOCAL | {"--json"},
    "copy": _LOCAL | {"--url", "--json"},
    "remove": _LOCAL | {"--url", "--json"},
    "create": _LOCAL | {"--json", "--file"},
    "serve": _SERVE,
    "deploy": _SERVE | {"--detached", "--json"},
    "stop-server": _LOCAL | {"--json"},
    "ps": _CLIENT,
    "stop": _CLIENT,
    "cache": _CLIENT,
    "catalog": _LOCAL | {"--memory", "--all", "--num-ctx", "--json", "--device-index"},
    "config": _SERVE | {"--json"},
}
OPTIONS_OF["model"] = OPTIONS_OF["pull"] | OPTIONS_OF["list"]  # only for `model --help`: `model pull` is pull
ALIASES = {"ls": "list", "download": "pull", "cp": "copy", "rm": "remove"}
SETTING_FLAGS = {"--home": "home", "--host": "host", "--port": "port", "--engine": "engine",
                 "--device": "device", "--device-index": "device_index", "--quantize": "quantize",
                 "--threads": "threads",
                 "--max-models": "max_resident_models", "--max-resident-models": "max_resident_models",
                 "--model-ttl": "model_ttl", "--api": "api", "--models-path": "models_path"}


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("modelport")
    except PackageNotFoundError:
        return "0.0.0"


def exit_code(exc: BaseException) -> int | None:
    """The documented status for a modelport error (None: not one of ours)."""
    return next((code for kind, code in EXIT_CODES if isinstance(exc, kind)), None)


def main(argv: Sequence[str] | None = None, *, services=None, out: TextIO | None = None,
         err: TextIO | None = None, stdin: TextIO | None = None) -> int:
    """Run one command; returns the exit status. ``services`` lets tests inject fakes
    (``serve`` then serves them)."""
    out, err, stdin = out or sys.stdout, err or sys.stderr, stdin or sys.stdin
    argv = list(sys.argv[1:] if argv is None else argv)
    from .cli_help import command_help, wants_command_help

    asked = wants_command_help(argv, [*OPTIONS_OF, *ALIASES])
    if asked:
        print(command_help(__doc__, asked, OPTIONS_OF, ALIASES), file=out)
        return EXIT_OK
    unknown = _unknown_command(argv)
    if unknown is not None:
        print(f"error: unknown command '{unknown}'; 'modelport --help' lists the commands", file=err)
        return EXIT_USAGE
    try:
        args = docopt(__doc__, argv=argv, default_help=False)
    except DocoptExit as exc:
        print(exc.code if isinstance(exc.code, str) else __doc__.split("\n\n")[1], file=err)
        return EXIT_USAGE
    if args["--help"]:
        print(__doc__.strip(), file=out)
        return EXIT_OK
    if args["version"] or args["--version"]:
        print(f"modelport {version()}", file=out)
        return EXIT_OK
    try:
        return Cli(args, services=services, out=out, err=err, stdin=stdin).dispatch()
    except KeyboardInterrupt:
        print("\ninterrupted", file=err)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_broken_pipe(out)
        return EXIT_OK
    except Exception as exc:  # one table maps every error to a message and a status
        if args.get("--debug"):
            raise
        code = exit_code(exc)
        if code is None:
            print(f"error: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)",
                  file=err)
            return EXIT_ERROR
        print(f"error: {exc}", file=err)
        return code


def _unknown_command(argv: Sequence[str]) -> str | None:
    """The first argument when it is a word but no command (docopt would print a
    warning and the whole usage for it)."""
    if not argv or argv[0].startswith("-"):
        return None
    known = {*OPTIONS_OF, *ALIASES, "version"}
    return None if argv[0] in known else argv[0]


def run() -> None:
    """The console script."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (modelport ... | head): no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_OK
    sys.exit(code)


def _quiet_broken_pipe(out: TextIO) -> None:
    """After a closed pipe (``modelport list | head -1``), keep Python from
    complaining when it flushes stdout at exit."""
    if out is sys.stdout:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass


class Cli:
    def __init__(self, args: dict[str, Any], *, services, out: TextIO, err: TextIO, stdin: TextIO) -> None:
        self.args = args
        self.out, self.err, self.stdin = out, err, stdin
        self.command = self._command_name()
        self._check_options()
        self.settings = Settings.load(flags=_flags(args))
        self._services = services

    @property
    def services(self):
        """modelport's use cases on this machine (built on first use)."""
        if self._services is None:
            from .bootstrap import bootstrap

            self._services = bootstrap(self.settings)
        return self._services

    @property
    def models(self) -> list[str]:
        """The <model> arguments (docopt gives a list: `remove` takes several)."""
        from .catalog import resolve_name  # RustLLM's registry names (phi-2) -> their Hub source

        value = self.args.get("<model>")
        return [resolve_name(v) for v in (list(value) if isinstance(value, list) else [value] if value else [])]

    @property
    def model(self) -> str | None:
        return self.models[0] if self.models else None

    @property
    def backend(self):
        """The services, or a running server's when --url is given."""
        if self.args["--url"]:
            for option in ("--engine", "--device", "--device-index", "--quantize"):
                if self.args.get(option) is not None:
                    raise InvalidRequest(f"{option} chooses how this machine runs a model; "
                                         "with --url the server decides")
            return RemoteServices(self.client)
        engine = None if self.settings.engine == "auto" else self.settings.engine
        return EngineBound(self.services, engine)

    @property
    def client(self) -> OllamaClient:
        return OllamaClient(self.args["--url"] or self.settings.url)

    def dispatch(self) -> int:
        handler: Callable[[], int] = getattr(self, "cmd_" + self.command.replace("-", "_"))
        return handler()

    def _command_name(self) -> str:
        for name in (*OPTIONS_OF, *ALIASES):
            if name != "model" and self.args.get(name) is True:  # `model pull` is pull
                return ALIASES.get(name, name)
        raise InvalidRequest("unknown command")  # docopt makes this unreachable

    def _check_options(self) -> None:
        allowed = OPTIONS_OF[self.command]
        for option, value in self.args.items():
            if option.startswith("--") and option != "--help" and value not in (None, False, [], 0):
                if option not in allowed:
                    raise InvalidRequest(f"{option} does not apply to '{self.command}'; "
                                         "modelport --help lists what each command takes")
        if self.args["--stream"] and self.args["--no-stream"]:
            raise InvalidRequest("--stream and --no-stream contradict each other; choose one")

    # -- generation -------------------------------------------------------------------

    def cmd_generate(self) -> int:
        return self._answer(self.model, " ".join(self.args["<prompt>"]))

    def cmd_run(self) -> int:
        named = self._named_model()
        words = list(self.args["<prompt>"])
        value = self.args["<model>"]  # a list: `remove` takes several
        given = (value[0] if value else None) if isinstance(value, list) else value
        # `run --model m "hi"`, or `run "a question"` (no model name has spaces): docopt
        # took the prompt for <model>
        as_prompt = bool(given) and (named is not None or any(ch.isspace() for ch in given))
        if as_prompt:
            words = [given, *words]
        model = named or (None if as_prompt else self.model) or _as_path(self.settings.model_path) \
            or self.settings.default_model
        prompt = " ".join(words)
        if prompt:
            return self._answer(model, prompt)
        if not _isatty(self.stdin):
            return self._answer(model, self.stdin.read())
        for option in ("--raw", "--json", "--no-stream", "--stream"):
            if self.args[option]:
                raise InvalidRequest(f"{option} needs a prompt; the interactive chat does not take it")
        return self._chat(model)

    def cmd_chat(self) -> int:
        named = self._named_model()
        if named is not None and self.model:
            raise InvalidRequest(f"name the model once: '{self.model}' or {named!r} (--model/--model-path)")
        return self._chat(named or self.model or self.settings.default_model)

    def _named_model(self) -> str | None:
        """--model (RustLLM) or --model-path (model-rs: a file or folder, or a name)."""
        name, path = self.args.get("--model"), self.args.get("--model-path")
        if name and path:
            raise InvalidRequest("--model and --model-path name the same thing; give one")
        if path:
            return _as_path(path)
        from .catalog import resolve_name

        return resolve_name(name) if name else None

    def _answer(self, model: str, prompt: str) -> int:
        fmt = self._format()
        if not prompt.strip():
            raise InvalidRequest("the prompt is empty")
        ref = ModelRef.parse(model)
        sampling = self._sampling(model)
        if self.args["--raw"]:
            if self.args["--system"]:
                raise InvalidRequest("--raw sends the prompt as is; it cannot take --system")
            request = GenerationRequest(model=ref, prompt=prompt, sampling=sampling, format=fmt)
        else:
            request = GenerationRequest(
                model=ref, messages=system_and_user(prompt, self.args["--system"]), sampling=sampling, format=fmt
            )
        stream = self.backend.generate(request)
        saved: list[str] = []
        if self.settings.output_dir:
            stream = _collecting(stream, saved)
        try:
            if self.args["--json"]:
                usage = self._print_json_reply(model, stream)
            elif self.args["--no-stream"]:
                completion = Completion.fold(stream)
                print(completion.text, file=self.out, flush=True)
                usage = completion.usage
            else:
                usage = self._print_stream(stream)
        finally:
            stream.close()
        if self.args["--verbose"] and usage is not None:
            print(format_stats(usage), file=self.err)
        if self.settings.output_dir:
            from .cli_seeds import save_reply

            where = save_reply(self.settings.output_dir, model, prompt, "".join(saved))
            if self.args["--verbose"]:
                print(f"saved the reply to {where}", file=self.err)
        return EXIT_OK

    def _print_stream(self, events) -> Usage | None:
        view = render.PlainReply(self.out)
        usage = None
        for event in events:
            view.feed(event.text)
            if event.done:
                usage = event.usage
        view.close()
        return usage

    def _print_json_reply(self, model: str, events) -> Usage | None:
        """Ollama's /api/generate answer: NDJSON chunks with --stream, else one object."""
        if self.args["--stream"]:
            usage = None
            for event in events:
                line = _reply_json(model, event, event.text)
                print(json.dumps(line, ensure_ascii=False), file=self.out, flush=True)
                usage = event.usage if event.done else usage
            return usage
        completion = Completion.fold(events)
        final = TokenEvent(finish_reason=completion.finish_reason, usage=completion.usage)
        self._print_json(_reply_json(model, final, completion.text))
        return completion.usage

    def _chat(self, model: str) -> int:
        from .repl import ChatRepl, load_session

        backend = self.backend
        sessions = self._sessions()
        overrides = self._options()
        if not self.args["--session"]:
            overrides = self._with_env_defaults(model, overrides)
        if self.args["--session"]:
            session = load_session(self.args["--session"], sessions)
            if self.model:
                session = attrs.evolve(session, model=model)
            overrides = {**session.sampling.to_options(), **overrides}
            session = attrs.evolve(session, sampling=backend.sampling_for(session.model, overrides))
        else:
            session = backend.new_session(model, sampling=backend.sampling_for(model, overrides))
        if self.args["--system"]:
            session = session.with_system(self.args["--system"])
        repl = ChatRepl(backend, session, overrides=overrides, out=self.out, err=self.err, stdin=self.stdin,
                        sessions=sessions, history_file=Path(self.settings.home) / "history",
                        verbose=bool(self.args["--verbose"]), format=self._format())
        return repl.run()

    def _format(self) -> OutputFormat | None:
        """``--format``: ``json``, a JSON schema's text, or a file holding one."""
        value = self.args.get("--format")
        if value is None:
            return None
        if value.strip() == "json":
            return OutputFormat.json_mode()
        text = value
        if not value.lstrip().startswith("{"):
            path = Path(value).expanduser()
            if not path.is_file():
                raise InvalidRequest(f"--format: '{value}' is not json, a JSON schema or a schema file")
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise InvalidRequest(f"--format: cannot read {value}: {exc}") from None
        try:
            return OutputFormat.from_schema(text)
        except InvalidRequest as exc:
            raise InvalidRequest(f"--format: {exc}") from None

    def _sessions(self):
        """Saved chats stay on this machine, also when the model runs on a server."""
        if self.args["--url"]:
            from .bootstrap import build_sessions

            return build_sessions(self.settings)
        return self.services.sessions

    def _options(self) -> dict[str, Any]:
        """The generation flags given, as Ollama options."""
        options: dict[str, Any] = {}
        for flag, (option, kind) in _SAMPLING_FLAGS.items():
            if self.args[flag] is not None:
                options[option] = _number(self.args[flag], flag, kind)
        if options.get("num_predict", 1) < 1:  # Ollama's -1 (no limit) is leaving the flag out
            raise InvalidRequest(f"--max-tokens must be at least 1, got {options['num_predict']}")
        if self.args["--stop"]:
            options["stop"] = list(self.args["--stop"])
        return options

    def _sampling(self, model: str) -> SamplingPolicy:
        """The flags given, as Ollama options over the model's own defaults, over the
        MODELPORT_TEMPERATURE-style defaults."""
        return self.backend.sampling_for(model, self._with_env_defaults(model, self._options()))

    def _with_env_defaults(self, model: str, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` with the MODELPORT_TEMPERATURE-style defaults (model-rs') added
        for every option that neither the flags nor the model's own defaults set."""
        defaults = self.settings.sampling_defaults()
        if not defaults:
            return options
        own = dict(self.backend.show(model).default_options)
        return {**{k: v for k, v in defaults.items() if k not in own}, **options}

    def cmd_embed(self) -> int:
        texts = list(self.args["<text>"])
        if not texts:
            if _isatty(self.stdin):
                raise InvalidRequest("nothing to embed: give the texts as arguments, or pipe them one per line")
            texts = [line.rstrip("\r\n") for line in self.stdin if line.strip()]
        if not texts:
            raise InvalidRequest("nothing to embed: stdin held no text")
        request = EmbeddingRequest(model=ModelRef.parse(self.model), inputs=texts)
        result = self.backend.embed(request)
        answer = {
            "model": result.model,
            "embeddings": [list(vector) for vector in result.vectors],
            "total_duration": result.usage.total_ns,
            "load_duration": result.usage.load_ns,
            "prompt_eval_count": result.usage.prompt_tokens,
        }
        print(json.dumps(answer, ensure_ascii=False), file=self.out)
        return EXIT_OK

    # -- models -----------------------------------------------------------------------

    def cmd_pull(self) -> int:
        name = self.model
        if self.args["--revision"]:
            ref = ModelRef.parse(name)
            if ref.revision and ref.revision != self.args["--revision"]:
                raise InvalidRequest(f"'{name}' names revision {ref.revision}; --revision says "
                                     f"{self.args['--revision']}: give one")
            name = str(attrs.evolve(ref, revision=ModelRef.parse(f"x@{self.args['--revision']}").revision))
        if self.args["--trust-remote-code"]:
            from .cli_seeds import TRUST_REMOTE_CODE_NOTE

            print(TRUST_REMOTE_CODE_NOTE, file=self.err)
        progress = render.pull_progress(self.err)
        try:
            info = self.backend.pull(name, progress)
        finally:
            progress.close()
        if self.args["--json"]:
            self._print_json(model_json(info))
        else:
            print(f"pulled {info.name} ({render.size(info.size)})", file=self.out)
        return EXIT_OK

    def cmd_search(self) -> int:
        query = " ".join(self.args["<query>"])
        filters: dict[str, Any] = {"author": self.args["--author"], "filter": self.args["--filter"]}
        if self.args["--sort"]:
            filters["sort"] = self.args["--sort"]
        if self.args["--limit"]:
            filters["limit"] = _positive(self.args["--limit"], "--limit")
        hits = self.services.search(query, **filters)
        if self.args["--json"]:
            self._print_json([{"id": h.repo_id, "downloads": h.downloads, "likes": h.likes,
                               "pipeline_tag": h.pipeline_tag, "tags": list(h.tags)} for h in hits])
            return EXIT_OK
        if not hits:
            print(f"no models match '{query}'", file=self.err)
            return EXIT_OK
        rows = [(h.repo_id, h.downloads, h.likes, h.pipeline_tag or "", _shorten(", ".join(h.tags), 40))
                for h in hits]
        render.table(self.out, ("MODEL", "DOWNLOADS", "LIKES", "TASK", "TAGS"), rows)
        return EXIT_OK

    def cmd_list(self) -> int:
        models = self.backend.list_models()
        if self.args["--json"]:
            self._print_json([model_json(m) for m in models])
            return EXIT_OK
        rows = [
            (m.name, m.digest[:12], render.size(m.size), m.format.value, m.architecture,
             m.parameter_size, m.quantization or "", render.age(m.modified_at))
            for m in models
        ]
        render.table(self.out, ("NAME", "ID", "SIZE", "FORMAT", "ARCH", "PARAMS", "QUANT", "MODIFIED"), rows)
        return EXIT_OK

    def cmd_show(self) -> int:
        info = self.backend.show(self.model)
        if self.args["--json"]:
            self._print_json(model_json(info))
            return EXIT_OK
        self._model_card(info)
        return EXIT_OK

    def _model_card(self, info: ModelInfo) -> None:
        rows = [
            ("architecture", info.architecture), ("parameters", info.parameter_size),
            ("quantization", info.quantization or ""), ("context length", str(info.context_length or "")),
            ("embedding length", str(info.embedding_length or "")), ("format", info.format.value),
            ("capabilities", ", ".join(sorted(c.value for c in info.capabilities))),
            ("size", render.size(info.size)), ("location", info.location),
            ("aliases", ", ".join(info.aliases)),
            ("license", (info.license or "").strip().splitlines()[0] if (info.license or "").strip() else ""),
        ]
        print(f"  Model {info.name}", file=self.out)
        for key, value in rows:
            if value:
                print(f"    {key:<18}{value}", file=self.out)
        if info.default_options:
            print("\n  Parameters", file=self.out)
            for key, value in info.default_options:
                print(f"    {key:<18}{value}", file=self.out)

    def cmd_info(self) -> int:
        if self.model:
            return self._model_info(self.services.show(self.model))
        return self._system_info()

    def _model_info(self, info: ModelInfo) -> int:
        from .catalog import estimate, model_memory

        num_ctx = self._num_ctx()
        weights, kv_cache = model_memory(info, num_ctx)
        memory = {"weights": weights, "kv_cache": kv_cache, "num_ctx": num_ctx,
                  "estimate": estimate(weights, kv_cache or 0)}
        if self.args["--json"]:
            data = model_json(info)
            data["files"] = [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in info.files]
            data["metadata"] = {k: v for k, v in info.metadata if _json_scalar(v)}
            data["memory"] = memory
            self._print_json(data)
            return EXIT_OK
        self._model_card(info)
        print("\n  Files", file=self.out)
        for file in info.files:
            print(f"    {file.path}  {render.size(file.size)}  sha256 {file.sha256 or '(not recorded)'}",
                  file=self.out)
        kv_text = render.size(kv_cache) if kv_cache is not None else "unknown (the metadata lacks the shapes)"
        print("\n  Memory (an estimate)", file=self.out)
        print(f"    {'weights':<18}{render.size(weights)}", file=self.out)
        print(f"    {'KV cache':<18}{kv_text} at {num_ctx} tokens (f16)", file=self.out)
        print(f"    {'total':<18}{render.size(memory['estimate'])} (with 10% for buffers)", file=self.out)
        if info.metadata:
            print("\n  Metadata", file=self.out)
            for key, value in info.metadata:
                print(f"    {key:<38}{_shorten(str(value), 60)}", file=self.out)
        return EXIT_OK

    def _system_info(self) -> int:
        from .hardware import nvidia_gpus, system_memory

        memory = system_memory()
        gpus = nvidia_gpus()
        registry = self.services.engines
        engines = {}
        for name in registry.names:
            spec = registry.spec(name)
            check = spec.check() if spec.available() else None  # runs the library once per build
            engines[name] = {"available": spec.available(), "formats": sorted(f.value for f in spec.formats),
                             "extra": spec.extra,
                             "check": None if check is None else {"usable": check.usable, "summary": check.summary,
                                                                  "fix": check.fix}}
        url = self.args["--url"] or self.settings.url
        server_up = OllamaClient(url).is_up()
        paths = {"home": self.settings.home, "models": str(self.settings.models_dir),
                 "sessions": str(self.settings.sessions_dir),
                 "history": str(Path(self.settings.home) / "history")}
        data = {
            "version": version(), "python": platform.python_version(),
            "platform": f"{platform.system()} {platform.machine()}", "paths": paths,
            "default_model": self.settings.default_model, "engines": engines,
            "memory": None if memory is None else {"total": memory.total, "available": memory.available},
            "gpus": [{"index": g.index, "name": g.name, "total": g.total, "free": g.free} for g in gpus],
            "server": {"url": url, "running": server_up},
        }
        if self.args["--json"]:
            self._print_json(data)
            return EXIT_OK
        lines = [(f"modelport {data['version']}", f"Python {data['python']}, {data['platform']}")]
        lines += [(name, path) for name, path in paths.items()]
        lines.append(("default model", self.settings.default_model))
        for name, engine in engines.items():
            state = "available" if engine["available"] else (
                f"not installed (pip install 'modelport[{engine['extra']}]')" if engine["extra"] else "unavailable")
            check = engine["check"]
            if check is not None and not check["usable"]:
                state = f"unusable: {check['summary']}; {check['fix']}"
            lines.append((f"engine {name}", f"{state}; runs {', '.join(engine['formats'])}"))
            if engine["available"] and (check is None or check["usable"]):
                lines.append(("", check["summary"] if check is not None else "no self-check for this engine"))
        if memory is not None:
            available = f" ({render.size(memory.available)} available)" if memory.available else ""
            lines.append(("memory", f"{render.size(memory.total)}{available}"))
        else:
            lines.append(("memory", "unknown"))
        if gpus:
            for gpu in gpus:
                free = f" ({render.size(gpu.free)} free)" if gpu.free is not None else ""
                lines.append((f"gpu {gpu.index}", f"{gpu.name}, {render.size(gpu.total)}{free}"))
        else:
            lines.append(("gpus", "none found (no nvidia-smi, or it reports none)"))
        lines.append(("server", f"{url}: {'running' if server_up else 'not running'}"))
        for key, value in lines:
            print(f"  {key:<18}{value}", file=self.out)
        return EXIT_OK

    def cmd_verify(self) -> int:
        report = self.services.verify(self.model)
        if self.args["--json"]:
            self._print_json({"model": report.model, "ok": report.ok, "files": [
                {"path": c.path, "expected": c.expected, "actual": c.actual, "ok": c.ok and c.actual is not None}
                for c in report.checks]})
        else:
            rows = [(c.path, _check_state(c), (c.actual or "")[:16]) for c in report.checks]
            render.table(self.out, ("FILE", "STATE", "SHA256"), rows)
        if not report.ok:
            failed = len(report.failures)
            print(f"error: {failed} of {len(report.checks)} files of {report.model} failed verification; "
                  f"pull or import it again", file=self.err)
            return EXIT_ERROR
        return EXIT_OK

    def cmd_copy(self) -> int:
        info = self.backend.copy(self.args["<source>"], self.args["<destination>"])
        if self.args["--json"]:
            self._print_json(model_json(info))
        else:
            print(f"copied '{self.args['<source>']}' to '{info.name}'", file=self.out)
        return EXIT_OK

    def cmd_remove(self) -> int:
        status, removed = EXIT_OK, []
        for name in self.models:
            try:
                self.backend.remove(name)
            except ModelportError as exc:
                print(f"error: {exc}", file=self.err)
                status = status or exit_code(exc) or EXIT_ERROR
                continue
            removed.append(name)
            if not self.args["--json"]:
                print(f"deleted '{name}'", file=self.out)
        if self.args["--json"]:
            self._print_json({"deleted": removed})
        return status

    def cmd_create(self) -> int:
        if self.args["--file"]:
            return self._create_from_modelfile(self.args["--file"])
        path = self.args["<path>"]
        if not os.path.exists(os.path.expanduser(path)):
            raise InvalidRequest(f"cannot import '{path}': no such file or folder")
        info = self.services.import_model(self.model, path)
        if self.args["--json"]:
            self._print_json(model_json(info))
        else:
            print(f"created '{info.name}' from {path} ({render.size(info.size)})", file=self.out)
        return EXIT_OK

    def _create_from_modelfile(self, file: str) -> int:
        """A model from a Modelfile; a relative FROM path is read from the Modelfile's folder."""
        try:
            text = Path(file).expanduser().read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidRequest(f"cannot read the Modelfile '{file}': {exc}") from None
        modelfile = Modelfile.parse(text)
        base = modelfile.base
        if ModelRef.parse(base).is_path and not os.path.isabs(os.path.expanduser(base)):
            base = os.path.join(os.path.dirname(os.path.abspath(file)), base)
        info = self.services.create(self.model, base, modelfile.defaults)
        if self.args["--json"]:
            self._print_json(model_json(info))
        else:
            print(f"created '{info.name}' from {modelfile.base}", file=self.out)
        return EXIT_OK

    # -- the server -----------------------------------------------------------------------

    def cmd_serve(self) -> int:
        return self._serve()

    def cmd_deploy(self) -> int:
        if self.args["--detached"]:
            return self._deploy_detached()
        print(deploy_notes(self.settings), file=self.out, flush=True)
        return self._serve()

    def _deploy_detached(self) -> int:
        from .cli_seeds import start_detached

        if self._services is not None:
            raise InvalidRequest("--detached starts a server of its own; it cannot serve services built here")
        flags = {flag: self.args[flag] for flag in SETTING_FLAGS if self.args.get(flag) is not None}
        flags.setdefault("--home", self.settings.home)
        record = start_detached(self.settings, flags, is_up=OllamaClient(self.settings.url).is_up)
        if self.args["--json"]:
            self._print_json(record)
        else:
            print(f"modelport serving on {record['url']} in the background (pid {record['pid']})\n"
                  f"  log   {record['log']}\n  stop  modelport stop-server --home {self.settings.home}",
                  file=self.out)
        return EXIT_OK

    def cmd_stop_server(self) -> int:
        from .cli_seeds import stop_detached

        record = stop_detached(self.settings)
        if self.args["--json"]:
            self._print_json(record)
        elif record["stopped"]:
            print(f"stopped the server on {record.get('url')} (pid {record['pid']})", file=self.out)
        else:
            print(f"the server (pid {record['pid']}) had already stopped; removed its pid file", file=self.out)
        return EXIT_OK

    def _serve(self) -> int:
        from .http.server import serve

        factory = None
        if self._services is not None:  # tests: serve the services they built
            from .http.app import create_app

            services, settings = self._services, self.settings
            factory = lambda: create_app(services, settings)  # noqa: E731
        print(f"modelport serving on {self.settings.url} (Ctrl-C to stop)", file=self.err, flush=True)
        serve(self.settings, app_factory=factory)
        return EXIT_OK

    def cmd_ps(self) -> int:
        models = self.client.ps()
        if self.args["--json"]:
            self._print_json(models)
            return EXIT_OK
        self._ps_table(models)
        return EXIT_OK

    def _ps_table(self, models: list[dict[str, Any]]) -> None:
        rows = [(m.get("name") or m.get("model"), str(m.get("digest") or "")[:12], render.size(m.get("size") or 0),
                 _processor(m), m.get("context_length") or "", m.get("refs", ""), _slots(m),
                 render.until(render.parse_timestamp(m.get("expires_at")))) for m in models]
        render.table(self.out, ("NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "REFS", "SLOTS", "UNTIL"), rows)

    def cmd_stop(self) -> int:
        answer = self.client.unload(self.model)
        if self.args["--json"]:
            self._print_json(answer)
        else:
            print(f"stopped '{self.model}'", file=self.out)
        return EXIT_OK

    def cmd_cache(self) -> int:
        client = self.client
        if self.args["stats"]:
            health, models = client.health(), client.ps()
            if self.args["--json"]:
                self._print_json({"server": client.url, "health": health, "models": models})
                return EXIT_OK
            print(f"  {'server':<18}{client.url}", file=self.out)
            for key, value in health.items():
                if not isinstance(value, (dict, list)):
                    print(f"  {key:<18}{value}", file=self.out)
            engines = health.get("engines")
            if isinstance(engines, dict):
                shown = ", ".join(f"{k} ({'available' if v else 'not installed'})" for k, v in engines.items())
                print(f"  {'engines':<18}{shown}", file=self.out)
            total = sum(int(m.get("size") or 0) for m in models)
            print(f"  {'resident':<18}{len(models)} model(s), {render.size(total) or '0 B'}\n", file=self.out)
            self._ps_table(models)
            return EXIT_OK
        if self.args["clear"]:
            names = [m.get("name") or m.get("model") for m in client.ps()]
            for name in names:
                client.unload(name)
            if self.args["--json"]:
                self._print_json({"evicted": names})
            else:
                print("\n".join(f"evicted '{n}'" for n in names) or "no model was loaded", file=self.out)
            return EXIT_OK
        if self.args["enable"] or self.args["disable"]:
            return self._cache_switch(bool(self.args["enable"]))
        model = self.model
        if self.args["preload"]:
            answer = client.load(model)
            word = "loaded"
        elif self.args["evict"]:
            answer = client.unload(model)
            word = "evicted"
        else:
            return self._cache_max(_positive(self.args["<n>"], "max"))
        if self.args["--json"]:
            self._print_json(answer)
        else:
            print(f"{word} '{model}'", file=self.out)
        return EXIT_OK

    def _cache_switch(self, enabled: bool) -> int:
        from .cli_seeds import set_model_cache

        value, where = set_model_cache(enabled)
        if self.args["--json"]:
            self._print_json({"model_ttl": value, "written_to": where, "running_server_changed": False})
            return EXIT_OK
        what = ("keeps each model loaded for 5 minutes after its last request" if enabled
                else "unloads each model as soon as its request ends")
        print(f"Wrote MODELPORT_MODEL_TTL={value} to {where}: a server started from this folder {what}.\n"
              f"A running server keeps its setting; elsewhere: modelport serve --model-ttl {value}", file=self.out)
        return EXIT_OK

    def _cache_max(self, limit: int) -> int:
        """A server sets its limit when it starts and the Ollama API has no call to
        change it, so this sets it for the next server started here (in ./.env)."""
        from .config import update_dotenv

        update_dotenv(".env", "MODELPORT_MAX_RESIDENT_MODELS", str(limit))
        where = os.path.abspath(".env")
        if self.args["--json"]:
            self._print_json({"max_resident_models": limit, "written_to": where, "running_server_changed": False})
            return EXIT_OK
        print(f"A running server keeps the limit it started with: the Ollama API has no call to change it.\n"
              f"Wrote MODELPORT_MAX_RESIDENT_MODELS={limit} to {where}: a server started from this folder\n"
              f"(`modelport serve`) keeps at most {limit} model(s) loaded. Anywhere else: "
              f"modelport serve --max-models {limit}", file=self.out)
        return EXIT_OK

    # -- catalog and settings ---------------------------------------------------------------

    def cmd_catalog(self) -> int:
        from .catalog import entries, installed_names

        budget, described = self._budget()
        num_ctx = self._num_ctx()
        rows = entries(budget, num_ctx, everything=bool(self.args["--all"]))
        installed = installed_names(self.services.list_models())
        if self.args["--json"]:
            self._print_json({"budget": described, "num_ctx": num_ctx, "models": [
                {"name": e.name, "pull": e.pull_name, "family": e.family, "parameters": e.parameters,
                 "quantization": e.quantization, "format": e.format, "kind": e.kind, "license": e.license,
                 "weights": e.weights_bytes, "kv_cache": e.kv_cache_bytes(num_ctx), "memory": need,
                 "fits": fits, "installed": _installed(e, installed)}
                for e, need, fits in rows]})
            return EXIT_OK
        print(f"Memory to fit in: {described['text']}; estimates at {num_ctx} tokens of context.\n", file=self.out)
        table_rows = [
            (e.name, _count(e.parameters), e.quantization, e.format, render.size(e.weights_bytes),
             render.size(need), fits.upper() if fits in ("gpu", "cpu") else fits,
             "yes" if _installed(e, installed) else "", "(bundled)" if e.bundled else e.pull_name)
            for e, need, fits in rows]
        render.table(self.out, ("NAME", "PARAMS", "QUANT", "FORMAT", "SIZE", "MEMORY", "FITS", "INSTALLED", "PULL"),
                     table_rows)
        if not self.args["--all"]:
            hidden = len(entries(budget, num_ctx, everything=True)) - len(rows)
            if hidden:
                print(f"\n{hidden} more do not fit; --all lists them.", file=self.out)
        return EXIT_OK

    def _budget(self):
        from .catalog import Budget
        from .hardware import nvidia_gpus, system_memory

        if self.args["--memory"]:
            given = render.parse_size(self.args["--memory"])
            return Budget(given=given), {"given": given, "text": f"{render.size(given)} (--memory)"}
        memory = system_memory()
        gpus = nvidia_gpus()
        index = self.settings.device_index
        gpu = next((g for g in gpus if g.index == index), gpus[0] if gpus else None)
        ram = memory.total if memory else None
        vram = gpu.total if gpu else None
        parts = [f"{render.size(ram)} RAM" if ram else "RAM unknown",
                 f"{render.size(vram)} on GPU {gpu.index} ({gpu.name})" if gpu else "no NVIDIA GPU found"]
        return Budget(ram=ram, vram=vram), {"ram": ram, "vram": vram, "text": ", ".join(parts)}

    def _num_ctx(self) -> int:
        from modelport.domain.sampling import DEFAULT_NUM_CTX

        if self.args["--num-ctx"] is None:
            return DEFAULT_NUM_CTX
        return _positive(self.args["--num-ctx"], "--num-ctx")

    def cmd_config(self) -> int:
        rows = self.settings.describe()
        if self.args["--json"]:
            self._print_json({name: {"value": value, "source": source} for name, value, source in rows})
        else:
            render.table(self.out, ("SETTING", "VALUE", "SOURCE"), rows)
        return EXIT_OK

    def _print_json(self, value: Any) -> None:
        print(json.dumps(value, indent=2, ensure_ascii=False), file=self.out)


class EngineBound:
    """The services, with the engine chosen by --engine (or MODELPORT_ENGINE) used by
    every call that runs a model, also when the services were built elsewhere."""

    def __init__(self, services, engine: str | None) -> None:
        self._services = services
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._services, name)

    def generate(self, request: GenerationRequest):
        return self._services.generate(request, engine=self._engine)

    def chat(self, session, message: str, **output: Any):
        return self._services.chat(session, message, engine=self._engine, **output)

    def embed(self, request: EmbeddingRequest):
        return self._services.embed(request, engine=self._engine)


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
    return {name: args.get(flag) for flag, name in SETTING_FLAGS.items() if args.get(flag) is not None}


class _collecting:
    """The events of ``stream``, with their text also appended to ``parts``."""

    def __init__(self, stream, parts: list[str]) -> None:
        self._stream, self._parts = stream, parts

    def __iter__(self):
        return self

    def __next__(self) -> TokenEvent:
        event = next(self._stream)
        self._parts.append(event.text)
        return event

    def close(self) -> None:
        self._stream.close()


def _as_path(text: str) -> str:
    """A path given where a model name may go: kept a path (``mymodels/llama`` would
    read as an org/name); empty stays empty."""
    if not text:
        return text
    text = os.path.expanduser(text)
    if text.startswith(("/", "./", "../")) or not os.path.exists(text):
        return text
    return "./" + text


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _number(text: str, flag: str, kind: type) -> Any:
    try:
        return kind(text)
    except (TypeError, ValueError):
        what = "a whole number" if kind is int else "a number"
        raise InvalidRequest(f"{flag} must be {what}, got {text!r}") from None


def _positive(text: str, name: str) -> int:
    value = _number(text, name, int)
    if value < 1:
        raise InvalidRequest(f"{name} must be at least 1, got {value}")
    return value


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _count(parameters: int) -> str:
    from modelport.domain.models import format_parameter_count

    return format_parameter_count(parameters)


def _json_scalar(value: object) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _check_state(check) -> str:
    if check.actual is None:
        return "MISSING"
    if check.expected is None:
        return "ok (no recorded sha256)"
    return "ok" if check.ok else "MISMATCH"


def _slots(model: dict[str, Any]) -> str:
    """``busy/total +waiting @ tok/s`` of a /api/ps entry ('' for a server that does not say)."""
    slots = model.get("slots")
    if not isinstance(slots, dict):
        return ""
    text = f"{slots.get('busy', 0)}/{slots.get('total', 0)}"
    if slots.get("waiting"):
        text += f" +{slots['waiting']}"
    if slots.get("tokens_per_second"):
        text += f" @ {slots['tokens_per_second']:.1f} tok/s"
    return text


def _processor(model: dict[str, Any]) -> str:
    """Ollama's PROCESSOR column: how much of the model sits in GPU memory."""
    size, vram = int(model.get("size") or 0), int(model.get("size_vram") or 0)
    if size <= 0 or vram <= 0:
        return "100% CPU"
    if vram >= size:
        return "100% GPU"
    gpu = round(100 * vram / size)
    return f"{100 - gpu}%/{gpu}% CPU/GPU"


def _installed(entry, installed: set[str]) -> bool:
    names = {entry.name.lower(), entry.source.lower(), f"{entry.source.lower()}:latest"}
    return bool(names & installed)


def _reply_json(model: str, event: TokenEvent, text: str) -> dict[str, Any]:
    """An Ollama ``/api/generate`` object for ``event``."""
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    data: dict[str, Any] = {"model": model, "created_at": created, "response": text, "done": event.done}
    if event.done:
        usage = event.usage or Usage()
        data.update(done_reason=event.finish_reason.value if event.finish_reason else "stop",
                    total_duration=usage.total_ns, load_duration=usage.load_ns,
                    prompt_eval_count=usage.prompt_tokens, prompt_eval_duration=usage.prompt_eval_ns,
                    eval_count=usage.completion_tokens, eval_duration=usage.eval_ns)
    return data


def model_json(info: ModelInfo) -> dict[str, Any]:
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
        "default_options": dict(info.default_options),
        "license": info.license,
    }


HEAD_FIRST_WORKER = "modelport.entrypoints.http.worker.HeadFirstWorker"  # server.WORKER_CLASS


def deploy_notes(settings: Settings) -> str:
    """What ``deploy`` prints before it serves: how to reach the server, and how to
    keep it running (modelport itself stays in the foreground)."""
    url = settings.url
    local = settings.host in ("127.0.0.1", "localhost", "::1")
    executable = shutil.which("modelport") or "modelport"
    reach = ("only this machine can reach it; --host 0.0.0.0 opens it to the network (there is no "
             "authentication: put a reverse proxy in front)") if local else (
        f"listening on {settings.host}: anyone who can reach this port can use it (no authentication)")
    serve_line = (f"{executable} serve --host {settings.host} --port {settings.port} "
                  f"--threads {settings.threads} --max-models {settings.max_resident_models}")
    return "\n".join([
        "modelport deploy: the Ollama-compatible HTTP API, served in the foreground by gunicorn.",
        "",
        f"  address     {url}  ({reach})",
        f"  models      {settings.models_dir} (and the bundled ones)",
        f"  check       curl {url}/api/tags",
        f"  clients     OLLAMA_HOST={url} ollama list;  ollama.Client(host=\"{url}\")",
        f"  this CLI    modelport ps --url {url};  modelport run --url {url} MODEL \"PROMPT\"",
        "",
        "modelport does not detach: to keep the server running after you log out, give this",
        "command to a process manager (a systemd unit's ExecStart=, supervisord, a container):",
        "",
        f"  MODELPORT_HOME={settings.home} {serve_line}",
        "",
        "or run gunicorn yourself with the same settings in the environment:",
        "",
        f"  MODELPORT_HOME={settings.home} gunicorn --worker-class {HEAD_FIRST_WORKER} --threads {settings.threads} "
        f"--bind {settings.host}:{settings.port} 'modelport.entrypoints.http.app:get_app()'",
        "",
    ])
