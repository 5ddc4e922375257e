"""How the command line prints: tables, sizes, ages, Ollama's statistics, pull
progress, and streamed markdown for the chat.

rich is imported only by the pieces that draw on a terminal (progress bars, the
chat's markdown), so ``modelport --help`` and scripted use stay light. Nothing here
writes ANSI codes to anything that is not a terminal.
"""

from __future__ import annotations

import os
import re
import threading
import time
from typing import Any, Iterable, Sequence, TextIO

from modelport.domain import InvalidRequest, PullProgress, Usage
from modelport.domain.timestamps import parse_timestamp  # noqa: F401  (render.parse_timestamp)

# -- plain text ----------------------------------------------------------------------


def table(out: TextIO, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Columns aligned with two spaces, like Ollama's tables (easy to read and to cut)."""
    cells = [tuple("" if c is None else str(c) for c in row) for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
    for row in (tuple(header), *cells):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip(), file=out)


def size(n: int | float | None) -> str:
    """Bytes in decimal units, as Ollama prints them: ``98 MB``, ``1.1 GB``."""
    if n is None:
        return ""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value >= 10 else f"{value:.1f} {unit}"
    return f"{int(n)} B"


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*$", re.IGNORECASE)
_SCALE = {"": 1, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(text: str) -> int:
    """``24GB``, ``24G``, ``24 GiB``, ``512MB``, ``1.5T`` in bytes; a bare number means GB."""
    match = _SIZE.match(text or "")
    if not match:
        raise InvalidRequest(f"not a memory size: {text!r} (write it like 24GB, 16GiB or 512MB)")
    number, unit, binary, _ = match.groups()
    unit = unit.lower() or "g"
    base = 1024 if binary else 1000
    return int(float(number) * base ** _SCALE[unit])


def duration(ns: int) -> str:
    if ns >= 1_000_000_000:
        return f"{ns / 1e9:.3f}s"
    if ns >= 1_000_000:
        return f"{ns / 1e6:.3f}ms"
    return f"{ns / 1e3:.3f}µs"


def format_stats(usage: Usage) -> str:
    """Ollama's --verbose block."""
    lines = [
        ("total duration", duration(usage.total_ns)),
        ("load duration", duration(usage.load_ns)),
        ("prompt eval count", f"{usage.prompt_tokens} token(s)"),
        ("prompt eval duration", duration(usage.prompt_eval_ns)),
        ("prompt eval rate", f"{usage.prompt_rate:.2f} tokens/s"),
        ("eval count", f"{usage.completion_tokens} token(s)"),
        ("eval duration", duration(usage.eval_ns)),
        ("eval rate", f"{usage.eval_rate:.2f} tokens/s"),
    ]
    return "\n".join(f"{name + ':':<22}{value}" for name, value in lines)


def age(timestamp: float, now: float | None = None) -> str:
    """``20 minutes ago``."""
    if not timestamp:
        return ""
    seconds = max(0.0, (time.time() if now is None else now) - timestamp)
    for unit, scale in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= scale:
            return f"{int(seconds // scale)} {unit} ago"
    return "just now"


def until(timestamp: float | None, now: float | None = None) -> str:
    """When a resident model will be unloaded: ``4 minutes from now``, ``Forever``."""
    if timestamp is None:
        return "Forever"
    seconds = timestamp - (time.time() if now is None else now)
    if seconds > 10 * 365 * 86400:
        return "Forever"
    if seconds <= 0:
        return "Stopping..."
    for unit, scale in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= scale:
            return f"{int(seconds // scale)} {unit} from now"
    return "Less than a minute from now"


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is a terminal worth drawing on (not ``TERM=dumb``)."""
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
    return tty and os.environ.get("TERM", "") != "dumb"


def console(stream: TextIO):
    """A rich Console on ``stream`` (imported here, on first use)."""
    from rich.console import Console

    return Console(file=stream, highlight=False, soft_wrap=False)


# -- pull progress -------------------------------------------------------------------


class PlainProgress:
    """Pull progress as lines, for logs and pipes: a line when a step starts, one
    when a file is complete."""

    def __init__(self, err: TextIO) -> None:
        self._err = err
        self._lock = threading.Lock()
        self._started: set[str] = set()
        self._done: set[str] = set()

    def __call__(self, event: PullProgress) -> None:
        with self._lock:
            key = event.file or event.digest
            if key is None or event.total is None:
                print(event.status, file=self._err, flush=True)
                return
            if key not in self._started:
                self._started.add(key)
                print(f"{event.status} {key} ({size(event.total)})", file=self._err, flush=True)
            if event.completed is not None and event.completed >= event.total and key not in self._done:
                self._done.add(key)
                print(f"{key}: done", file=self._err, flush=True)

    def close(self) -> None:
        pass


class BarProgress:
    """Pull progress as rich bars (one per file), for a terminal."""

    def __init__(self, err: TextIO) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console(err),
            transient=False,
        )
        self._tasks: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._progress.start()

    def __call__(self, event: PullProgress) -> None:
        key = event.file or event.digest
        with self._lock:
            if key is None or event.total is None:
                self._progress.console.print(event.status)
                return
            task = self._tasks.get(key)
            if task is None:
                task = self._tasks[key] = self._progress.add_task(f"{event.status} {key}", total=event.total)
            self._progress.update(task, completed=event.completed or 0, total=event.total)

    def close(self) -> None:
        self._progress.stop()


def pull_progress(err: TextIO):
    return BarProgress(err) if is_terminal(err) else PlainProgress(err)


# -- streamed replies ----------------------------------------------------------------


def tool_call_text(call: Any) -> str:
    """A tool call as the chat shows it: ``[tool call] name {"arg": ...}`` on a line."""
    import json

    return f"\n[tool call] {call.name} {json.dumps(call.arguments, ensure_ascii=False)}\n"


class PlainReply:
    """Text deltas written as they come (pipes, logs, one-shot answers)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._last = "\n"

    def feed(self, text: str) -> None:
        if text:
            self._out.write(text)
            self._out.flush()
            self._last = text[-1]

    def close(self) -> None:
        if self._last != "\n":
            self._out.write("\n")
        self._out.flush()
        self._last = "\n"


class MarkdownReply:
    """A reply drawn as markdown (code highlighted) while it streams.

    Finished blocks (text before a blank line, outside a code fence) are drawn once
    and left alone; only the block being written is redrawn, so a long reply never
    has to fit on the screen.
    """

    REFRESH_S = 0.08

    def __init__(self, out: TextIO, code_theme: str = "monokai") -> None:
        self._console = console(out)
        self._theme = code_theme
        self._live: Any = None
        self._pending = ""
        self._drawn_at = 0.0

    def feed(self, text: str) -> None:
        if not text:
            return
        self._pending += text
        finished, self._pending = split_finished_blocks(self._pending)
        if finished:
            self._draw(finished)
            self._stop()
            self._console.print()
        now = time.monotonic()
        if now - self._drawn_at >= self.REFRESH_S:
            self._draw(self._pending)
            self._drawn_at = now

    def close(self) -> None:
        if self._pending.strip():
            self._draw(self._pending)
        self._stop()
        self._pending = ""

    def _draw(self, text: str) -> None:
        from rich.live import Live
        from rich.markdown import Markdown

        markdown = Markdown(text.strip("\n"), code_theme=self._theme)
        if self._live is None:
            self._live = Live(markdown, console=self._console, auto_refresh=False, vertical_overflow="visible")
            self._live.start()
        self._live.update(markdown, refresh=True)

    def _stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


_FENCE = re.compile(r"^\s*(```|~~~)", re.MULTILINE)


def split_finished_blocks(text: str) -> tuple[str, str]:
    """Split ``text`` at its last blank line outside a code fence: (finished, rest)."""
    cut = -1
    inside = False
    position = 0
    for line in text.splitlines(keepends=True):
        if _FENCE.match(line):
            inside = not inside
        position += len(line)
        if not inside and line.strip() == "" and position < len(text):
            cut = position
    if cut <= 0:
        return "", text
    return text[:cut], text[cut:]
