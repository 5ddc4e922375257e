"""The CLI as model-rs and Hugging Llama users call it, as subprocesses on the bundled
SmolLM2: a model given as a path (MODELPORT_MODEL_PATH, --model-path), `deploy
--detached` and `stop-server`, `show` of a missing model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from processes import free_port

pytestmark = pytest.mark.slow
MODELPORT = shutil.which("modelport", path=str(Path(sys.executable).parent)) or "modelport"
QUESTION = "What is the capital of France? Answer in one sentence."


def modelport(*argv: str, env: dict[str, str], stdin: str | None = None, timeout: float = 240):
    return subprocess.run([MODELPORT, *argv], env=env, input=stdin, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MODELPORT_", "OLLAMA_"))}
    return {**environ, "MODELPORT_HOME": str(tmp_path / "home")}


@pytest.fixture
def gguf(env) -> str:
    """The bundled SmolLM2's GGUF file, as a path."""
    shown = json.loads(modelport("show", "smollm2", "--json", env=env).stdout)
    (found,) = Path(shown["location"]).glob("*.gguf")
    return str(found)


def test_run_without_a_model_uses_model_path_and_chat_takes_a_path(env, gguf) -> None:
    answer = modelport(
        "run", QUESTION, "--temperature", "0", "--max-tokens", "12", env={**env, "MODELPORT_MODEL_PATH": gguf}
    )
    assert answer.returncode == 0, answer.stderr
    assert "Paris" in answer.stdout
    chat = modelport(
        "chat", "--model-path", gguf, "--temperature", "0", "--max-tokens", "12", env=env, stdin=QUESTION + "\n"
    )
    assert chat.returncode == 0, chat.stderr
    assert "Paris" in chat.stdout
    missing = modelport("run", "say hi", env={**env, "MODELPORT_MODEL_PATH": str(Path(gguf).parent / "nope.gguf")})
    assert missing.returncode == 3 and missing.stderr.startswith("error:")


def test_show_of_a_missing_model_exits_3(env) -> None:
    result = modelport("show", "no-such-model", env=env)
    assert result.returncode == 3 and result.stderr.startswith("error:") and "Traceback" not in result.stderr


def test_deploy_detached_returns_and_stop_server_stops_it(env, tmp_path) -> None:
    port = free_port()
    home = tmp_path / "home"
    started = modelport("deploy", "--detached", "--port", str(port), env=env, timeout=150)
    assert started.returncode == 0, started.stderr + started.stdout
    assert f"127.0.0.1:{port}" in started.stdout and "stop-server" in started.stdout
    record = json.loads((home / "server.pid").read_text())
    pid = record["pid"]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/tags", timeout=10) as answer:
            assert answer.status == 200 and "smollm2:135m" in answer.read().decode()
        assert (home / "logs" / "server.log").exists()
        again = modelport("deploy", "--detached", "--port", str(port), env=env)
        assert again.returncode == 2 and "already running" in again.stderr
        ps = modelport("ps", env={**env, "OLLAMA_LOCAL_PORT": str(port)})  # the client finds it by port
        assert ps.returncode == 0 and ps.stdout.split()[:8] == [
            "NAME",
            "ID",
            "SIZE",
            "PROCESSOR",
            "CONTEXT",
            "REFS",
            "SLOTS",
            "UNTIL",
        ]
    finally:
        stopped = modelport("stop-server", env=env, timeout=90)
    assert stopped.returncode == 0, stopped.stderr
    assert f"pid {pid}" in stopped.stdout and not (home / "server.pid").exists()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    assert not _alive(pid)
    assert modelport("stop-server", env=env).returncode == 2


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
