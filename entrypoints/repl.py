"""The interactive chat (``modelport chat``, and ``modelport run`` without a prompt).

On a terminal: a readline prompt with a history file, replies drawn as markdown
while they stream, Ctrl-C stopping the reply (not the chat), Ctrl-D leaving. With
stdin not a terminal it works as a pipe: every line (or block between triple
quotes) is a message, replies are plain text, nothing is drawn.

The conversation is a domain :class:`~modelport.domain.ChatSession`: the model sees
the system prompt and the last ``kept_turns`` turns (10).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, TextIO

import attrs

from modelport.domain import ChatSession, InvalidRequest, ModelportError
from modelport.ports import SessionRepository

from .chat_files import load_session, save_session_file, session_path
from .commands.context import isatty
from .render import MarkdownReply, PlainReply, format_stats, is_terminal, tool_call_text

QUOTES = '"""'
HISTORY_LENGTH = 1000

# /set KEY VALUE: the SamplingPolicy field each key sets, and how its value is read
# (the one place /set's keys are mapped; /set and /show list the settings by them).
SET_KEYS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "temperature": ("temperature", float),
    "top_p": ("top_p", float),
    "top_k": ("top_k", int),
    "min_p": ("min_p", float),
    "repeat_penalty": ("repeat_penalty", float),
    "repeat_last_n": ("repeat_last_n", int),
    "seed": ("seed", int),
    "max_tokens": ("max_tokens", int),
    "num_ctx": ("num_ctx", int),
}

HELP = """\
Type a message and press Enter; put a message of several lines between \"\"\" and \"\"\".
  /help                 this help
  /show                 the model, its settings and the system prompt
  /set KEY VALUE        change a setting: temperature, top_p, top_k, min_p, max_tokens,
                        repeat_penalty, repeat_last_n, seed, num_ctx, stop (adds one),
                        system (the system prompt), verbose (on/off)
  /set                  list the settings
  /model NAME           talk to another model, keeping the conversation
  /history              the conversation so far
  /clear                forget the conversation (the system prompt stays)
  /save NAME|FILE       save the chat: a NAME goes to the saved sessions, a FILE
                        (with a / or ending in .json) to that file
  /load NAME|FILE       continue a saved chat
  /quit, /bye           leave (Ctrl-D too); Ctrl-C stops a reply"""


class Leave(Exception):
    """Raised by /quit."""


class ChatRepl:
    def __init__(
        self,
        services: Any,
        session: ChatSession,
        *,
        overrides: Mapping[str, Any] | None = None,
        out: TextIO,
        err: TextIO,
        stdin: TextIO,
        sessions: SessionRepository | None = None,
        history_file: str | os.PathLike[str] | None = None,
        verbose: bool = False,
        format: Any = None,
    ) -> None:
        self.services = services
        self.format = format  # an OutputFormat every reply must follow (chat --format)
        self.session = session
        self.overrides: dict[str, Any] = dict(overrides or {})
        self.out, self.err, self.stdin = out, err, stdin
        self.sessions = sessions
        self.interactive = isatty(stdin)
        self.markdown = self.interactive and is_terminal(out)
        self.use_readline = self.interactive and stdin is sys.stdin
        self.history_file = Path(history_file) if history_file else None
        self.verbose = verbose
        self.status = 0

    # -- the loop -------------------------------------------------------------------

    def run(self) -> int:
        """Chat until /quit or end of input; returns the exit status (in a pipe, that
        of the last error, if any)."""
        self._open_history()
        if self.interactive:
            self._note(f"Chatting with {self.session.model}. /help for help, Ctrl-D or /bye to leave.")
        try:
            while True:
                try:
                    text = self._next_message()
                except KeyboardInterrupt:
                    self._note("\nUse Ctrl-D or /bye to leave.")
                    continue
                except EOFError:
                    if self.interactive:
                        self._note("")
                    break
                if text is None:
                    continue
                try:
                    self._command(text) if _is_command(text) else self._reply(text)
                except Leave:
                    break
        finally:
            self._save_history()
        return self.status

    def _next_message(self) -> str | None:
        """One message (None for an empty line); multi-line between triple quotes."""
        line = self._read(">>> ")
        stripped = line.strip()
        if not stripped:
            return None
        if not stripped.startswith(QUOTES):
            return line.rstrip("\n")
        body = stripped[len(QUOTES) :]
        if body.rstrip().endswith(QUOTES):
            return body.rstrip()[: -len(QUOTES)] or None
        lines = [body] if body else []
        while True:
            try:
                more = self._read("... ")
            except EOFError:
                break
            if more.rstrip().endswith(QUOTES):
                lines.append(more.rstrip()[: -len(QUOTES)])
                break
            lines.append(more)
        text = "\n".join(lines).strip("\n")
        return text if text.strip() else None

    def _read(self, prompt: str) -> str:
        if self.use_readline:
            return input(prompt)
        if self.interactive:
            self.out.write(prompt)
            self.out.flush()
        line = self.stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")

    # -- replies --------------------------------------------------------------------

    def _reply(self, text: str) -> None:
        view = MarkdownReply(self.out) if self.markdown else PlainReply(self.out)
        turn = None
        try:
            with self._spinner():  # loading the model and reading the prompt take a while
                output = {"format": self.format} if self.format is not None else {}
                turn = self.services.chat(self.session, text, **output)
                events = iter(turn)
                first = next((e for e in events if e.text or e.tool_calls or e.done), None)
            for event in itertools.chain([first] if first is not None else [], events):
                view.feed(event.text)
                for call in event.tool_calls:
                    view.feed(tool_call_text(call))
        except KeyboardInterrupt:
            view.close()
            self._note("(stopped)")
            return
        except ModelportError as exc:
            view.close()
            self._error(exc)
            return
        finally:
            if turn is not None:
                turn.close()
        view.close()
        self.session = turn.session
        if self.verbose and turn.final is not None and turn.final.usage is not None:
            print(format_stats(turn.final.usage), file=self.err)

    def _spinner(self):
        if not self.markdown:
            return contextlib.nullcontext()
        from .render import console

        return console(self.err).status("thinking...", spinner="dots")

    # -- slash commands -------------------------------------------------------------------

    def _command(self, line: str) -> None:
        name, _, rest = line.strip().partition(" ")
        rest = rest.strip()
        handler = {
            "/help": self._help,
            "/?": self._help,
            "/show": self._show,
            "/set": self._set,
            "/model": self._model,
            "/history": self._history,
            "/clear": self._clear,
            "/save": self._save,
            "/load": self._load,
        }.get(name.lower())
        if name.lower() in ("/quit", "/bye", "/exit"):
            raise Leave()
        if handler is None:
            self._error(InvalidRequest(f"unknown command {name}; /help lists them"))
            return
        try:
            handler(rest)
        except ModelportError as exc:
            self._error(exc)
        except OSError as exc:
            self._error(InvalidRequest(f"{name}: {exc}"))

    def _help(self, _rest: str) -> None:
        print(HELP, file=self.out)

    def _show(self, _rest: str) -> None:
        info = self.services.show(self.session.model)
        lines = [
            ("model", self.session.model),
            ("architecture", info.architecture),
            ("parameters", info.parameter_size),
            ("quantization", info.quantization or ""),
            ("context length", str(info.context_length or "")),
            ("session", self.session.id),
            ("kept turns", str(self.session.kept_turns)),
            ("system", self.session.conversation.system_prompt or ""),
        ]
        for key, value in lines:
            if value:
                print(f"  {key:<16}{value}", file=self.out)
        self._settings()

    def _settings(self) -> None:
        """The settings under the names /set takes (-1: a random seed, no token limit)."""
        sampling = self.session.sampling
        for key, (field, _) in SET_KEYS.items():
            value = getattr(sampling, field)
            print(f"  {key:<16}{-1 if value is None else value}", file=self.out)
        if sampling.stop:
            print(f"  {'stop':<16}{list(sampling.stop)}", file=self.out)
        print(f"  {'verbose':<16}{'on' if self.verbose else 'off'}", file=self.out)

    def _set(self, rest: str) -> None:
        key, _, value = rest.partition(" ")
        key, value = key.lower(), value.strip()
        if not key:
            self._settings()
            return
        if key == "system":
            self.session = self.session.with_system(value or None)
            self._note("System prompt cleared." if not value else "System prompt set.")
            return
        if key == "verbose":
            self.verbose = value.lower() not in ("off", "false", "0", "no")
            self._note(f"Statistics after each reply: {'on' if self.verbose else 'off'}.")
            return
        if key == "stop":
            stops = list(self.overrides.get("stop") or []) + [value] if value else []
            self._apply({**self.overrides, "stop": stops})
            self._note(f"Stop strings: {stops}" if stops else "Stop strings cleared.")
            return
        if key not in SET_KEYS:
            known = ", ".join([*SET_KEYS, "stop", "system", "verbose"])
            raise InvalidRequest(f"unknown setting '{key}'; one of: {known}")
        option, kind = SET_KEYS[key]
        try:
            number = kind(value)
        except ValueError:
            raise InvalidRequest(
                f"/set {key} needs {'a whole number' if kind is int else 'a number'}, got {value!r}"
            ) from None
        if option in ("seed", "max_tokens") and number < 0:  # as Ollama's -1: random, no limit
            number = None
        self._apply({**self.overrides, option: number})
        self._note(f"Set {key} to {number}.")

    def _apply(self, overrides: dict[str, Any]) -> None:
        """Validate the options against the model (raises), then use them."""
        sampling = self.services.sampling_for(self.session.model, overrides)
        self.overrides = overrides
        self.session = attrs.evolve(self.session, sampling=sampling)

    def _model(self, rest: str) -> None:
        if not rest:
            print(self.session.model, file=self.out)
            return
        info = self.services.show(rest)
        sampling = self.services.sampling_for(info, self.overrides)
        self.session = attrs.evolve(self.session, model=rest, sampling=sampling)
        self._note(f"Now talking to {info.name}.")

    def _history(self, _rest: str) -> None:
        messages = list(self.session.conversation)
        if not messages:
            print("(no messages yet)", file=self.out)
            return
        for message in messages:
            who = (
                f"tool {message.tool_name}"
                if message.role.value == "tool" and message.tool_name
                else message.role.value
            )
            if message.content or not message.tool_calls:
                print(f"{who}: {message.content}", file=self.out)
            for call in message.tool_calls:
                print(f"{who}: {tool_call_text(call).strip()}", file=self.out)

    def _clear(self, _rest: str) -> None:
        self.session = self.session.cleared()
        self._note("Cleared the conversation.")

    def _save(self, rest: str) -> None:
        if not rest:
            raise InvalidRequest("/save needs a name or a file")
        path = session_path(rest)
        if path is not None:
            save_session_file(path, self.session)
            self._note(f"Saved {len(self.session.conversation)} messages to {path}.")
            return
        repository = self._repository()
        try:
            session = attrs.evolve(self.session, id=rest)
        except ValueError:
            raise InvalidRequest(
                f"'{rest}' cannot name a session: use letters, digits, '.', '_' and '-' (or a file path with a /)"
            ) from None
        repository.save(session)
        self.session = session
        self._note(f"Saved as '{rest}'; /load {rest} or `modelport chat --session {rest}` continues it.")

    def _load(self, rest: str) -> None:
        if not rest:
            raise InvalidRequest("/load needs a name or a file")
        session = load_session(rest, self.sessions)
        try:
            self.services.show(session.model)
        except ModelportError as exc:
            self._error(exc)
            self._note(f"Keeping {self.session.model} for the loaded conversation.")
            session = attrs.evolve(session, model=self.session.model)
        self.session = session
        self.overrides = attrs.asdict(session.sampling)
        self._note(f"Loaded {len(session.conversation)} messages ({session.model}).")

    def _repository(self) -> SessionRepository:
        if self.sessions is None:
            raise InvalidRequest("no session folder here; give a file path instead")
        return self.sessions

    # -- history --------------------------------------------------------------------

    def _open_history(self) -> None:
        if not (self.use_readline and self.history_file):
            return
        import readline

        readline.set_history_length(HISTORY_LENGTH)
        with contextlib.suppress(OSError):
            readline.read_history_file(self.history_file)

    def _save_history(self) -> None:
        if not (self.use_readline and self.history_file):
            return
        import readline

        try:
            self.history_file.parent.mkdir(parents=True, exist_ok=True)
            readline.write_history_file(self.history_file)
        except OSError as exc:
            print(f"warning: could not write the history file {self.history_file}: {exc}", file=self.err)

    # -- output -------------------------------------------------------------------

    def _note(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def _error(self, exc: BaseException) -> None:
        print(f"error: {exc}", file=self.err, flush=True)
        if not self.interactive:
            from .exits import exit_code

            self.status = exit_code(exc) or 1


def _is_command(text: str) -> bool:
    return text.startswith("/") and "\n" not in text
