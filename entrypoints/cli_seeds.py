"""What the CLI keeps of the three tools modelport replaces (docs/migrating-*.md):
model-rs' detached server, output folder and cache switch, Hugging Llama's
``--trust-remote-code``. Nothing here imports a framework."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from modelport.domain import InvalidRequest, ModelportError

from .config import Settings

TRUST_REMOTE_CODE_NOTE = (
    "--trust-remote-code: modelport never runs code from a model repository. Its engines "
    "(llama.cpp, its own JAX models, mlx-lm) implement each architecture themselves, and a pull "
    "fetches weights, configs and tokenizer files only, never a repository's .py files. The flag "
    "is accepted so that Hugging Llama's commands keep working and changes nothing: a model whose "
    "architecture exists only as the repository's Python code is refused when it loads."
)
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 40.0  # gunicorn's graceful timeout (30 s) and a margin


# -- MODELPORT_OUTPUT_DIR ---------------------------------------------------------------


def save_reply(folder: str, model: str, prompt: str, reply: str) -> str:
    """Write one reply (with its prompt and model) as JSON into ``folder``; returns the path."""
    from .files import write_atomic

    target = Path(folder).expanduser()
    target.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)[-60:]
    path = target / f"{stamp}-{safe}-{os.getpid()}-{time.monotonic_ns() % 10**6:06d}.json"
    record = {"model": model, "created_at": stamp, "prompt": prompt, "response": reply}
    write_atomic(str(path), (json.dumps(record, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))
    return str(path)


# -- deploy --detached / stop-server -------------------------------------------------------


def pid_file(settings: Settings) -> Path:
    return Path(settings.home) / "server.pid"


def log_file(settings: Settings) -> Path:
    return Path(settings.home) / "logs" / "server.log"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is gone for every purpose here
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _ours(pid: int) -> bool:
    """Whether ``pid`` is still a modelport server (not a recycled pid)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"modelport" in cmdline.read()
    except OSError:
        return _alive(pid)  # no /proc (macOS): trust the pid file


def read_pid_file(settings: Settings) -> dict[str, Any] | None:
    try:
        data = json.loads(pid_file(settings).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None


def start_detached(settings: Settings, flags: Mapping[str, str], *, is_up) -> dict[str, Any]:
    """Start ``modelport serve`` (with ``flags``) in a session of its own, its output
    in the home's logs/server.log, its pid in the home's server.pid; wait until
    ``is_up()`` says it answers. Returns what the pid file holds."""
    from .files import write_atomic

    running = read_pid_file(settings)
    if running and _alive(running["pid"]) and _ours(running["pid"]):
        raise InvalidRequest(
            f"a detached server is already running (pid {running['pid']}, {running.get('url')}); "
            "modelport stop-server stops it"
        )
    log = log_file(settings)
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-c",
        "from modelport.entrypoints.cli import run; run()",
        "serve",
        *(f"{flag}={value}" for flag, value in flags.items()),
    ]
    with open(log, "ab") as out:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True
        )
    record = {"pid": process.pid, "url": settings.url, "log": str(log), "started_at": time.time()}
    write_atomic(str(pid_file(settings)), (json.dumps(record) + "\n").encode("utf-8"))
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pid_file(settings).unlink(missing_ok=True)
            raise ModelportError(
                f"the server exited at once (status {process.returncode}); its log: {log}\n{_tail(log)}"
            )
        if is_up():
            return record
        time.sleep(0.2)
    raise ModelportError(
        f"the server (pid {process.pid}) did not answer within {START_TIMEOUT_S:.0f} s; "
        f"its log: {log}; modelport stop-server stops it"
    )


def stop_detached(settings: Settings) -> dict[str, Any]:
    """Stop the server ``start_detached`` started (SIGTERM, then SIGKILL after the
    graceful timeout); returns its pid file's record."""
    record = read_pid_file(settings)
    if record is None:
        raise InvalidRequest(
            f"no detached server to stop: no pid file at {pid_file(settings)} (modelport deploy --detached writes it)"
        )
    pid = record["pid"]
    if _alive(pid) and _ours(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        record["stopped"] = True
    else:
        record["stopped"] = False  # it had already gone: only the pid file was left
    pid_file(settings).unlink(missing_ok=True)
    return record


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- cache enable / disable ----------------------------------------------------------------


def set_model_cache(enabled: bool, dotenv: str = ".env") -> tuple[str, str]:
    """Keep models loaded between requests (the default, 5 minutes) or unload each
    after its request, for the next server started here; returns (value, file)."""
    from .config import update_dotenv

    value = "5m" if enabled else "0"
    update_dotenv(dotenv, "MODELPORT_MODEL_TTL", value)
    return value, os.path.abspath(dotenv)
