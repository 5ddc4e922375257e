"""simonw's ``llm`` with the llm-ollama plugin against a running server: the plugin
lists ``/api/tags``, treats names sharing a digest as one model, gives a
``name:latest`` the bare name as an alias, and matches names exactly; so
``llm -m ollama/smollm2`` (llm-ollama 0.19 puts ``ollama/`` before every name;
earlier versions used the bare ``smollm2``) works only if the bundled model's alias
is listed as ``smollm2:latest``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from processes import free_port, serving

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
REPLY = "The capital of France is Paris."
LLM = shutil.which("llm", path=str(Path(sys.executable).parent))


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> Iterator[str]:
    port = free_port()
    paths = [str(HERE), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        "MODELPORT_HOME": str(tmp_path_factory.mktemp("home")),
    }
    log = tmp_path_factory.mktemp("server") / "server.log"
    with serving([sys.executable, str(HERE / "fake_app.py"), str(port)], port, env, log) as address:
        yield address


def llm(url: str, home: Path, *args: str) -> subprocess.CompletedProcess:
    if LLM is None:
        pytest.fail("the llm command is not installed (pip install -e '.[test]')")
    env = {**os.environ, "OLLAMA_HOST": url, "LLM_USER_PATH": str(home), "LLM_LOAD_PLUGINS": "llm-ollama"}
    return subprocess.run([LLM, *args], env=env, capture_output=True, text=True, timeout=120)


def test_llm_lists_the_alias_and_runs_it(url: str, tmp_path: Path) -> None:
    listing = llm(url, tmp_path, "models", "list")
    assert listing.returncode == 0, listing.stderr
    line = next(line for line in listing.stdout.splitlines() if "smollm2:135m" in line)
    aliases = line.split("aliases: ")[1].rstrip(")").split(", ")
    assert {"ollama/smollm2:latest", "ollama/smollm2"} <= {a.strip() for a in aliases}
    answer = llm(url, tmp_path, "-m", "ollama/smollm2", "-o", "temperature", "0", "Capital of France?")
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() == REPLY
    unknown = llm(url, tmp_path, "-m", "ollama/nope", "hi")
    assert unknown.returncode != 0 and "Unknown model" in unknown.stderr


@pytest.fixture(scope="module")
def bundled_url(tmp_path_factory) -> Iterator[str]:
    port = free_port()
    executable = shutil.which("modelport", path=str(Path(sys.executable).parent)) or "modelport"
    env = {**os.environ, "MODELPORT_HOME": str(tmp_path_factory.mktemp("home")), "MODELPORT_PORT": str(port)}
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with serving([executable, "serve"], port, env, log) as address:
        yield address


def test_llm_runs_the_bundled_model_by_its_short_name(bundled_url: str, tmp_path: Path) -> None:
    answer = llm(
        bundled_url,
        tmp_path,
        "-m",
        "ollama/smollm2",
        "-o",
        "temperature",
        "0",
        "What is the capital of France? Answer in one sentence.",
    )
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() == "The capital of France is Paris."


def test_a_created_model_is_a_model_of_its_own_to_llm(bundled_url: str, tmp_path: Path) -> None:
    """A model created over the bundled file with its own system prompt has a digest
    of its own, so llm-ollama lists it apart instead of folding it into smollm2's
    aliases (and answering with smollm2's defaults)."""
    import json
    import urllib.request

    body = json.dumps({"model": "pirate", "from": "smollm2", "system": "You are a pirate.", "stream": False})
    request = urllib.request.Request(f"{bundled_url}/api/create", data=body.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert json.load(answer)["status"] == "success"
    listing = llm(bundled_url, tmp_path, "models", "list")
    assert listing.returncode == 0, listing.stderr
    [pirate] = [line for line in listing.stdout.splitlines() if "pirate" in line]
    assert pirate.startswith("Ollama: ollama/pirate:latest") and "smollm2" not in pirate
