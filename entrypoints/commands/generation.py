"""run, generate, chat and embed: generation from the command line."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import attrs

from modelport.domain import (
    Completion,
    EmbeddingRequest,
    FinishReason,
    GenerationRequest,
    InvalidRequest,
    ModelInfo,
    ModelRef,
    OutputFormat,
    SamplingPolicy,
    TokenEvent,
    Usage,
    system_and_user,
)

from .. import render
from .context import Cli, as_path, isatty, number


def generate(cli: Cli) -> int:
    return _answer(cli, cli.model, " ".join(cli.args["<prompt>"]))


def run(cli: Cli) -> int:
    named = _named_model(cli)
    words = list(cli.args["<prompt>"])
    value = cli.args["<model>"]  # a list: `remove` takes several
    given = (value[0] if value else None) if isinstance(value, list) else value
    # `run --model m "hi"`, or `run "a question"` (no model name has spaces): docopt
    # took the prompt for <model>
    as_prompt = bool(given) and (named is not None or any(ch.isspace() for ch in given))
    if as_prompt:
        words = [given, *words]
    model = (
        named or (None if as_prompt else cli.model) or as_path(cli.settings.model_path) or cli.settings.default_model
    )
    prompt = " ".join(words)
    if prompt:
        return _answer(cli, model, prompt)
    if not isatty(cli.stdin):
        return _answer(cli, model, cli.stdin.read())
    for option in ("--raw", "--json", "--no-stream", "--stream"):
        if cli.args[option]:
            raise InvalidRequest(f"{option} needs a prompt; the interactive chat does not take it")
    return _chat(cli, model)


def chat(cli: Cli) -> int:
    named = _named_model(cli)
    if named is not None and cli.model:
        raise InvalidRequest(f"name the model once: '{cli.model}' or {named!r} (--model/--model-path)")
    return _chat(cli, named or cli.model or cli.settings.default_model)


def embed(cli: Cli) -> int:
    from ..http import model_schemas

    texts = list(cli.args["<text>"])
    if not texts:
        if isatty(cli.stdin):
            raise InvalidRequest("nothing to embed: give the texts as arguments, or pipe them one per line")
        texts = [line.rstrip("\r\n") for line in cli.stdin if line.strip()]
    if not texts:
        raise InvalidRequest("nothing to embed: stdin held no text")
    result = cli.backend.embed(EmbeddingRequest(model=ModelRef.parse(cli.model), inputs=texts))
    print(json.dumps(model_schemas.embed_reply(result, None), ensure_ascii=False), file=cli.out)
    return 0


def _named_model(cli: Cli) -> str | None:
    """--model (RustLLM) or --model-path (model-rs: a file or folder, or a name)."""
    name, path = cli.args.get("--model"), cli.args.get("--model-path")
    if name and path:
        raise InvalidRequest("--model and --model-path name the same thing; give one")
    if path:
        return as_path(path)
    from ..catalog import resolve_name

    return resolve_name(name) if name else None


def _answer(cli: Cli, model: str, prompt: str) -> int:
    fmt = output_format(cli.args.get("--format"))
    if not prompt.strip():
        raise InvalidRequest("the prompt is empty")
    ref = ModelRef.parse(model)
    info = cli.backend.show(model)  # the request's one store lookup
    sampling = _sampling(cli, info)
    if cli.args["--raw"]:
        if cli.args["--system"]:
            raise InvalidRequest("--raw sends the prompt as is; it cannot take --system")
        request = GenerationRequest(model=ref, prompt=prompt, sampling=sampling, format=fmt)
    else:
        request = GenerationRequest(
            model=ref, messages=system_and_user(prompt, cli.args["--system"]), sampling=sampling, format=fmt
        )
    stream = cli.backend.generate(request, model=info)
    saved: list[str] = []
    if cli.settings.output_dir:
        stream = _collecting(stream, saved)
    try:
        if cli.args["--json"]:
            usage = _print_json_reply(cli, model, stream)
        elif cli.args["--no-stream"]:
            completion = Completion.fold(stream)
            print(completion.text, file=cli.out, flush=True)
            usage = completion.usage
        else:
            usage = _print_stream(cli, stream)
    finally:
        stream.close()
    if cli.args["--verbose"] and usage is not None:
        print(render.format_stats(usage), file=cli.err)
    if cli.settings.output_dir:
        from ..cli_seeds import save_reply

        where = save_reply(cli.settings.output_dir, model, prompt, "".join(saved))
        if cli.args["--verbose"]:
            print(f"saved the reply to {where}", file=cli.err)
    return 0


def _print_stream(cli: Cli, events: Iterator[TokenEvent]) -> Usage | None:
    view = render.PlainReply(cli.out)
    usage = None
    for event in events:
        view.feed(event.text)
        if event.done:
            usage = event.usage
    view.close()
    return usage


def _print_json_reply(cli: Cli, model: str, events: Iterator[TokenEvent]) -> Usage | None:
    """Ollama's /api/generate answer: NDJSON chunks with --stream, else one object."""
    from ..http.schemas import Reply

    reply = Reply.generate(model, time.time)
    if cli.args["--stream"]:
        usage = None
        for event in events:
            if event.done:
                usage = event.usage
                line = reply.final(event.text, _reason(event), usage or Usage())
            else:
                line = reply.chunk(event.text)
            print(json.dumps(line, ensure_ascii=False), file=cli.out, flush=True)
        return usage
    completion = Completion.fold(events)
    final = TokenEvent(finish_reason=completion.finish_reason, usage=completion.usage)
    cli.print_json(reply.final(completion.text, _reason(final), completion.usage or Usage()))
    return completion.usage


def _reason(event: TokenEvent) -> FinishReason:
    return event.finish_reason or FinishReason.STOP


def _chat(cli: Cli, model: str) -> int:
    from ..chat_files import load_session
    from ..repl import ChatRepl

    backend = cli.backend
    sessions = _sessions(cli)
    overrides = sampling_options(cli.args)
    if cli.args["--session"]:
        session = load_session(cli.args["--session"], sessions)
        if cli.model:
            session = attrs.evolve(session, model=model)
        overrides = {**attrs.asdict(session.sampling), **overrides}
        session = attrs.evolve(session, sampling=backend.sampling_for(session.model, overrides))
    else:
        info = backend.show(model)
        overrides = _with_env_defaults(cli, info, overrides)
        session = backend.new_session(model, sampling=backend.sampling_for(info, overrides))
    if cli.args["--system"]:
        session = session.with_system(cli.args["--system"])
    repl = ChatRepl(
        backend,
        session,
        overrides=overrides,
        out=cli.out,
        err=cli.err,
        stdin=cli.stdin,
        sessions=sessions,
        history_file=Path(cli.settings.home) / "history",
        verbose=bool(cli.args["--verbose"]),
        format=output_format(cli.args.get("--format")),
    )
    return repl.run()


def output_format(value: str | None) -> OutputFormat | None:
    """``--format``: ``json``, a JSON schema's text, or a file holding one."""
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


def _sessions(cli: Cli):
    """Saved chats stay on this machine, also when the model runs on a server."""
    if cli.args["--url"]:
        from ..bootstrap import build_sessions

        return build_sessions(cli.settings)
    return cli.services.sessions


# -- sampling flags: the one place they map to SamplingPolicy fields ----------------------

SAMPLING_FLAGS: dict[str, tuple[str, type]] = {
    "--temperature": ("temperature", float),
    "--top-k": ("top_k", int),
    "--top-p": ("top_p", float),
    "--min-p": ("min_p", float),
    "--repeat-penalty": ("repeat_penalty", float),
    "--repeat-last-n": ("repeat_last_n", int),
    "--seed": ("seed", int),
    "--max-tokens": ("max_tokens", int),
    "--num-ctx": ("num_ctx", int),
}


def sampling_options(args: dict[str, Any]) -> dict[str, Any]:
    """The generation flags given, as SamplingPolicy field changes."""
    options: dict[str, Any] = {}
    for flag, (field, kind) in SAMPLING_FLAGS.items():
        if args[flag] is not None:
            options[field] = number(args[flag], flag, kind)
    if options.get("max_tokens", 1) < 1:  # no limit is leaving the flag out
        raise InvalidRequest(f"--max-tokens must be at least 1, got {options['max_tokens']}")
    if options.get("seed", 0) < 0:  # as Ollama's -1: a random seed
        options["seed"] = None
    if args["--stop"]:
        options["stop"] = list(args["--stop"])
    return options


def _sampling(cli: Cli, model: ModelInfo) -> SamplingPolicy:
    """The flags given over the model's own defaults, over the
    MODELPORT_TEMPERATURE-style defaults."""
    return cli.backend.sampling_for(model, _with_env_defaults(cli, model, sampling_options(cli.args)))


def _with_env_defaults(cli: Cli, model: ModelInfo, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the MODELPORT_TEMPERATURE-style defaults (model-rs') added
    for every option that neither the flags nor the model's own defaults set."""
    defaults = cli.settings.sampling_defaults()
    if not defaults:
        return options
    own = model.sampling_defaults
    return {**{k: v for k, v in defaults.items() if k not in own}, **options}


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
