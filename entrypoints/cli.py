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
  --coordinator=<address>  serve: HOST:PORT of process 0, to serve one model from
                           several processes or hosts with jax.distributed (or
                           MODELPORT_COORDINATOR); see docs/scaling.md.
  --num-processes=<n>      serve: how many processes take part (default: 1, or
                           MODELPORT_NUM_PROCESSES).
  --process-id=<i>         serve: this one's number (default: 0, or MODELPORT_PROCESS_ID);
                           0 serves HTTP, the others follow its steps and open no port.

Global options:
  --engine=<name>          auto, gguf, jax or mlx (default: auto, or MODELPORT_ENGINE).
  --device=<device>        auto, cpu or gpu (default: auto, or MODELPORT_DEVICE).
  --device-index=<i>       Which GPU to use (default: 0, or MODELPORT_DEVICE_INDEX).
  --quantize=<kind>        The jax engine's weights: none, int8 or int4 (default: auto,
                           int8 on a CPU, float on a GPU; or MODELPORT_QUANTIZE).
  --tensor-parallel=<n>    The jax engine splits a model over n devices (default: 1, or
                           MODELPORT_TENSOR_PARALLEL); see docs/scaling.md.
  --home=<dir>             Where models live (default: MODELPORT_HOME, or the user cache).
  --models-path=<dir>      The model store's folder (default: MODELPORT_MODELS_PATH, or
                           the home's models/).
  --json                   Print JSON instead of text, for scripts.
  --debug                  Show a traceback when something fails.
  -h, --help               Show this help.
  --version                Print the version.

Which command takes which option (any other is bad usage; <group> stands for the
options of its lines, a command's name for that command's options):
  <generation> --system --temperature --top-k --top-p --min-p --repeat-penalty
  <generation> --repeat-last-n --seed --stop --max-tokens --num-ctx --verbose
  <reply>      --raw --stream --no-stream --format --json
  <engine>     --engine --device --device-index --quantize --tensor-parallel
  <local>      --home --models-path --debug
  <serve>      --host --port --threads --max-models --max-resident-models
  <serve>      --model-ttl --api <engine> <local>
  <client>     --url --json --debug
  run          <generation> <reply> <engine> <local> --url --model --model-path
  generate     <generation> <reply> <engine> <local> --url
  chat         <generation> <engine> <local> --session --url --model --model-path
  chat         --format
  embed        <engine> <local> --url --json
  pull         <local> --url --json --revision --trust-remote-code
  model        pull list
  search       <local> --author --filter --sort --limit --json
  list         <local> --url --json
  show         <local> --url --json
  info         <local> <engine> --url --json --num-ctx
  verify       <local> --json
  copy         <local> --url --json
  remove       <local> --url --json
  create       <local> --json --file
  serve        <serve> --coordinator --num-processes --process-id
  deploy       <serve> --detached --json
  stop-server  <local> --json
  ps           <client>
  stop         <client>
  cache        <client>
  catalog      <local> --memory --all --num-ctx --json --device-index
  config       <serve> --json

Exit status: 0 success, 1 error, 2 bad usage, 3 model not found, 4 engine
unavailable, 5 server not reachable, 130 interrupted.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Sequence, TextIO

from docopt import DocoptExit, docopt

from modelport.domain import InvalidRequest, ModelportError  # noqa: F401  (ModelportError: tests raise it)
from modelport.ports import Services

from .cli_help import options_of
from .commands import generation, info, models, server
from .commands.context import SETTING_FLAGS, Cli  # noqa: F401  (part of this module's interface)
from .commands.info import version
from .commands.models import model_json  # noqa: F401
from .commands.server import deploy_notes  # noqa: F401
from .exits import (  # noqa: F401  (the statuses are part of this module's interface)
    EXIT_CODES,
    EXIT_ENGINE,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_SERVER,
    EXIT_USAGE,
    exit_code,
)
from .render import format_stats  # noqa: F401

# Which options each command takes (any other given is bad usage): the docstring's table.
OPTIONS_OF: dict[str, set[str]] = options_of(__doc__)  # `model` only for `model --help`: `model pull` is pull
ALIASES = {"ls": "list", "download": "pull", "cp": "copy", "rm": "remove"}

# Each command's handler: handler(cli) -> exit status.
HANDLERS: dict[str, Callable[[Cli], int]] = {
    "run": generation.run,
    "generate": generation.generate,
    "chat": generation.chat,
    "embed": generation.embed,
    "pull": models.pull,
    "search": models.search,
    "list": models.list_models,
    "show": models.show,
    "verify": models.verify,
    "copy": models.copy,
    "remove": models.remove,
    "create": models.create,
    "serve": server.serve,
    "deploy": server.deploy,
    "stop-server": server.stop_server,
    "ps": server.ps,
    "stop": server.stop,
    "cache": server.cache,
    "info": info.info,
    "catalog": info.catalog,
    "config": info.config,
}


def main(
    argv: Sequence[str] | None = None,
    *,
    services: Services | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
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
        command = _command_name(args)
        _check_options(args, command)
        return HANDLERS[command](Cli(args, command, services=services, out=out, err=err, stdin=stdin))
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
            print(f"error: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)", file=err)
            return EXIT_ERROR
        print(f"error: {exc}", file=err)
        return code


def _command_name(args: dict) -> str:
    for name in (*OPTIONS_OF, *ALIASES):
        if name != "model" and args.get(name) is True:  # `model pull` is pull
            return ALIASES.get(name, name)
    raise InvalidRequest("unknown command")  # docopt makes this unreachable


def _check_options(args: dict, command: str) -> None:
    allowed = OPTIONS_OF[command]
    for option, value in args.items():
        if option.startswith("--") and option != "--help" and value not in (None, False, [], 0):
            if option not in allowed:
                raise InvalidRequest(
                    f"{option} does not apply to '{command}'; modelport --help lists what each command takes"
                )
    if args["--stream"] and args["--no-stream"]:
        raise InvalidRequest("--stream and --no-stream contradict each other; choose one")


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
