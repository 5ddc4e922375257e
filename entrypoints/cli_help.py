"""The CLI's docstring read as its one spec: which options each command takes
(:func:`options_of`), and ``modelport COMMAND --help`` (one command's usage lines,
what it does and the options it takes, cut out of the docstring)."""

from __future__ import annotations

import re
from typing import Iterable, Mapping, Sequence

HELP_FLAGS = ("-h", "--help")
_OPTION_LINE = re.compile(r"^  (-\w, )?(--[\w-]+)")
TAKES_TITLE = "Which command takes which option"


def options_of(doc: str) -> dict[str, set[str]]:
    """The options each command takes, from the docstring's section titled
    ``Which command takes which option``: one ``NAME WORD...`` line per entry (a
    name given on several lines takes all of them), where a word is an option
    (``--json``), a ``<group>`` or another command's name, both standing for
    their options. The groups are not commands."""
    lines = doc.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(TAKES_TITLE))
    while not lines[start].rstrip().endswith(":"):
        start += 1
    entries: dict[str, list[str]] = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        name, *words = line.split()
        entries.setdefault(name, []).extend(words)

    def expand(name: str, seen: tuple[str, ...]) -> set[str]:
        if name in seen:
            raise ValueError(f"the docstring's option table refers to itself through {name}")
        if name not in entries:
            raise ValueError(f"the docstring's option table names '{name}', which it does not define")
        options: set[str] = set()
        for word in entries[name]:
            options |= {word} if word.startswith("--") else expand(word, (*seen, name))
        return options

    return {name: expand(name, ()) for name in entries if not name.startswith("<")}


def wants_command_help(argv: Sequence[str], commands: Iterable[str]) -> str | None:
    """The command whose help ``argv`` asks for (``run --help``, ``cache -h``), or None."""
    if not argv or argv[0] not in set(commands) or not any(a in HELP_FLAGS for a in argv[1:]):
        return None
    if "--" in argv and argv.index("--") < min(argv.index(f) for f in HELP_FLAGS if f in argv):
        return None  # `run -- --help`: a prompt, not a flag
    return argv[0]


def command_help(doc: str, command: str, options_of: Mapping[str, set[str]], aliases: Mapping[str, str]) -> str:
    """The help of ``command`` (or of an alias of it)."""
    name = aliases.get(command, command)
    spellings = {name, *(alias for alias, target in aliases.items() if target == name)}
    usage = [line for line in _section(doc, "Usage:") if _usage_names(line) & spellings]
    described = _described(doc, spellings)
    allowed = options_of.get(name, set()) | {"--help"}
    options = _options(doc, allowed)
    parts = ["Usage:", *usage]
    if described:
        parts += ["", *described]
    if options:
        parts += ["", "Options:", *options]
    parts += ["", "modelport --help lists every command."]
    return "\n".join(parts)


def _section(doc: str, title: str) -> list[str]:
    lines = doc.splitlines()
    start = lines.index(title) + 1
    out = []
    for line in lines[start:]:
        if not line.strip():
            break
        out.append(line)
    return out


def _usage_names(line: str) -> set[str]:
    """The command words of a usage line: ``modelport (pull | download) <model>`` gives
    {pull, download}; ``modelport cache max <n>`` gives {cache}."""
    rest = line.strip().removeprefix("modelport").strip()
    if rest.startswith("("):
        inner = rest[1 : rest.index(")")]
        return {word.strip() for word in inner.split("|")}
    return {rest.split()[0]} if rest else set()


def _described(doc: str, spellings: set[str]) -> list[str]:
    """The command's entry under ``Commands:`` (with its continuation lines)."""
    out: list[str] = []
    taking = False
    for line in _section(doc, "Commands:"):
        head = line[:14].strip()
        if head:
            names = {word.strip() for word in head.split(",")}
            taking = bool(names & spellings)
        if taking:
            out.append(line)
    return out


def _options(doc: str, allowed: set[str]) -> list[str]:
    """Every option line (with its continuation lines) of an option in ``allowed``."""
    out: list[str] = []
    taking = False
    for line in doc.splitlines():
        match = _OPTION_LINE.match(line)
        if match:
            taking = match.group(2) in allowed
        elif not line.startswith("      ") or not line.strip():
            taking = False
        if taking:
            out.append(line)
    return out
