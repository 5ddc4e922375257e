"""`modelport deploy` on the bundled SmolLM2, and the CLI talking to it with --url,
everything in subprocesses, as a user runs them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from processes import free_port, serving

pytestmark = pytest.mark.slow
QUESTION = "What is the capital of France? Answer in one sentence."
EXECUTABLE = shutil.which("modelport", path=str(Path(sys.executable).parent)) or "modelport"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    port = free_port()
    log = tmp_path_factory.mktemp("deploy") / "deploy.log"
    env = {**os.environ, "MODELPORT_HOME": str(tmp_path_factory.mktemp("server-home"))}
    with serving([EXECUTABLE, "deploy", "--port", str(port), "--threads", "4"], port, env, log) as url:
        yield url, log


def client(*args: str, home: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MODELPORT_HOME": str(home)}
    return subprocess.run([EXECUTABLE, *args], capture_output=True, text=True, env=env, input=stdin, timeout=120)


def test_deploy_says_how_to_reach_and_keep_the_server(deployed) -> None:
    url, log = deployed
    text = log.read_text()
    assert f"curl {url}/api/tags" in text and "does not detach" in text
    assert f"serve --host 127.0.0.1 --port {url.rsplit(':', 1)[1]}" in text
    assert "gunicorn --worker-class modelport.entrypoints.http.worker.HeadFirstWorker" in text


def test_run_and_chat_through_the_server(deployed, tmp_path: Path) -> None:
    url, _ = deployed
    result = client("run", "smollm2", QUESTION, "--temperature", "0", "--url", url, home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "The capital of France is Paris."
    result = client("chat", "smollm2", "--temperature", "0", "--url", url, home=tmp_path, stdin=QUESTION + "\n")
    assert result.returncode == 0 and result.stdout.strip() == "The capital of France is Paris."


def test_list_and_show_through_the_server(deployed, tmp_path: Path) -> None:
    url, _ = deployed
    names = [m["name"] for m in json.loads(client("list", "--json", "--url", url, home=tmp_path).stdout)]
    assert names == ["all-minilm:l6-v2", "smollm2:135m"]
    shown = json.loads(client("show", "smollm2", "--json", "--url", url, home=tmp_path).stdout)
    assert shown["architecture"] == "llama" and shown["default_options"]["temperature"] == 0.2


def test_preload_evict_and_stop(deployed, tmp_path: Path) -> None:
    url, _ = deployed
    for args, said in (
        (("cache", "preload", "smollm2"), "loaded 'smollm2'"),
        (("cache", "evict", "smollm2"), "evicted 'smollm2'"),
        (("stop", "smollm2"), "stopped 'smollm2'"),
    ):
        result = client(*args, "--url", url, home=tmp_path)
        assert (result.returncode, result.stdout.strip()) == (0, said), result.stderr
    result = client("stop", "nosuchmodel", "--url", url, home=tmp_path)
    assert result.returncode == 3 and "not found" in result.stderr


def test_nothing_listening_is_status_5(tmp_path: Path) -> None:
    result = client("ps", "--url", f"http://127.0.0.1:{free_port()}", home=tmp_path)
    assert result.returncode == 5 and "cannot reach a modelport server" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
