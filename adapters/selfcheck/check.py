"""Run an engine library's probe in a child process, once per build, and remember it."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import attrs

from modelport.adapters.filesystem.files import write_atomic
from modelport.ports import EngineCheck

TIMEOUT_S = 180.0
PASSED, CRASHED, FAILED, TIMED_OUT = "passed", "crashed", "failed", "timed out"
# What a build does on this machine; an error exit or a timeout may be passing trouble
# (a full disk, a busy machine), so those are run again by the next process.
_REMEMBERED = (PASSED, CRASHED)
_SHARED_SUFFIXES = (".so", ".dylib", ".dll", ".pyd")


@attrs.frozen(kw_only=True)
class Library:
    """An installed engine library build: its distribution, version and the shared
    libraries it ships (path, size, mtime in ns)."""

    name: str
    version: str
    files: tuple[tuple[str, int, int], ...] = ()

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    @property
    def key(self) -> str:
        """Changes when the library is reinstalled or rebuilt."""
        text = json.dumps([self.name, self.version, [list(f) for f in self.files]])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _is_shared(name: str) -> bool:
    return name.endswith(_SHARED_SUFFIXES) or ".so." in name


def installed_library(module: str, distribution: str) -> Library | None:
    """The installed build of ``module`` (found without importing it), or None when
    it is not installed."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations)))
    elif spec.origin:
        folder = Path(spec.origin).parent
    else:
        return None
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    files = []
    for path in sorted(folder.rglob("*")):
        if _is_shared(path.name) and path.is_file():
            stat = path.stat()
            files.append((str(path), stat.st_size, stat.st_mtime_ns))
    return Library(name=distribution, version=version, files=tuple(files))


@attrs.frozen(kw_only=True)
class CheckResult:
    """One run of a probe. ``outcome``: passed, crashed (killed by ``signal``),
    failed (exited with an error) or timed out."""

    engine: str
    library: str
    key: str
    outcome: str
    detail: str = ""
    signal: str | None = None
    checked_at: float = 0.0
    remembered: bool = attrs.field(default=False, eq=False)

    @property
    def usable(self) -> bool:
        """Only a native crash rules the engine out; a probe that failed with an error
        or ran out of time leaves the real load to say what is wrong."""
        return self.outcome != CRASHED

    def summary(self) -> str:
        if self.outcome == PASSED:
            return f"self-check passed ({self.library}{': ' + self.detail if self.detail else ''})"
        if self.outcome == CRASHED:
            why = signal_words(self.signal)
            text = (
                f"{self.library} crashed with {self.signal}{' (' + why + ')' if why else ''} "
                f"generating one token in a child process"
            )
            if self.signal == "SIGILL":
                text += ": this build uses an instruction this CPU (or its VM) does not execute"
            return text
        return f"self-check {self.outcome} ({self.library}{': ' + self.detail if self.detail else ''})"

    def to_json(self) -> dict:
        return {
            "engine": self.engine,
            "library": self.library,
            "key": self.key,
            "outcome": self.outcome,
            "detail": self.detail,
            "signal": self.signal,
            "checked_at": self.checked_at,
        }


def signal_words(name: str | None) -> str:
    try:
        return (signal.strsignal(signal.Signals[name]) or "").lower() if name else ""
    except (KeyError, ValueError):
        return ""


# One run per library build, engine and probe in a process, whatever the home: a
# process that builds services for several homes (tests, mostly) probes once.
_RUNS: dict[tuple[str, str, tuple[str, ...]], CheckResult] = {}
_RUNS_LOCK = threading.Lock()


class LibraryCheck:
    """Callable as an :class:`~modelport.ports.EngineSpec`'s ``check``.

    ``library`` finds the installed build (None: not installed, nothing to check);
    ``argv`` runs the probe, which exits 0 after generating and prints a JSON line
    whose ``detail`` (optional) describes the build; ``fix`` is the command that
    reinstalls the library correctly. Results are kept in ``folder`` (None: only in
    this process). Thread safe; the child runs at most once per instance.
    """

    def __init__(
        self,
        *,
        engine: str,
        library: Callable[[], Library | None],
        argv: Sequence[str],
        fix: str,
        folder: str | Path | None = None,
        timeout: float = TIMEOUT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self._library = library
        self._argv = tuple(argv)
        self._fix = fix
        self._folder = Path(folder) if folder is not None else None
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._done = False
        self._result: CheckResult | None = None

    def __call__(self) -> EngineCheck | None:
        result = self.result()
        if result is None:
            return None
        return EngineCheck(
            usable=result.usable,
            summary=result.summary(),
            fix=None if result.usable else f"reinstall it with: {self._fix}",
        )

    def result(self) -> CheckResult | None:
        """The check of the installed build: remembered, or run now."""
        with self._lock:
            if not self._done:
                self._result = self._check()
                self._done = True
            return self._result

    def _check(self) -> CheckResult | None:
        library = self._library()
        if library is None:
            return None
        remembered = self._load(library)
        if remembered is not None:
            return remembered
        run_key = (self.engine, library.key, self._argv)
        with _RUNS_LOCK:
            result = _RUNS.get(run_key)
        if result is None:
            result = self._run(library)
            if result.outcome in _REMEMBERED:
                with _RUNS_LOCK:
                    _RUNS[run_key] = result
        if result.outcome in _REMEMBERED:
            self._store(result)
        return result

    def _load(self, library: Library) -> CheckResult | None:
        path = self._path_for_key(library.key)
        if path is None:
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            result = CheckResult(
                engine=self.engine,
                library=str(data["library"]),
                key=library.key,
                outcome=str(data["outcome"]),
                detail=str(data.get("detail") or ""),
                signal=data.get("signal"),
                checked_at=float(data.get("checked_at") or 0),
                remembered=True,
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None  # never checked, or a file we cannot read: check again
        return result if result.outcome in _REMEMBERED else None

    def _store(self, result: CheckResult) -> None:
        path = self._path_for_key(result.key)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(str(path), (json.dumps(result.to_json(), indent=2) + "\n").encode())
        except OSError:
            pass  # a read-only home: the result still holds for this process

    def _path_for_key(self, key: str) -> Path | None:
        return None if self._folder is None else self._folder / f"{self.engine}-{key}.json"

    def _run(self, library: Library) -> CheckResult:
        base = {"engine": self.engine, "library": library.label, "key": library.key, "checked_at": self._clock()}
        try:
            done = subprocess.run(
                list(self._argv), stdin=subprocess.DEVNULL, capture_output=True, timeout=self._timeout
            )
        except subprocess.TimeoutExpired:
            return CheckResult(**base, outcome=TIMED_OUT, detail=f"no answer in {self._timeout:g} s")
        except OSError as exc:
            return CheckResult(**base, outcome=FAILED, detail=f"could not start the probe: {exc}")
        if done.returncode < 0:
            try:
                name = signal.Signals(-done.returncode).name
            except ValueError:
                name = f"signal {-done.returncode}"
            return CheckResult(**base, outcome=CRASHED, signal=name)
        if done.returncode != 0:
            return CheckResult(
                **base, outcome=FAILED, detail=f"exit status {done.returncode}: {_last_line(done.stderr)}"
            )
        return CheckResult(**base, outcome=PASSED, detail=_detail(done.stdout))


def _last_line(output: bytes) -> str:
    lines = [line.strip() for line in output.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def _detail(output: bytes) -> str:
    """The probe's own ``detail`` from its last JSON line, if it gave one."""
    for line in reversed(output.decode(errors="replace").splitlines()):
        if line.startswith("{"):
            try:
                return str(json.loads(line).get("detail") or "")
            except ValueError:
                return ""
    return ""
