"""The HTTP API served by gunicorn in a subprocess, driven by the official ``ollama``
client: once through gunicorn's command line, once through modelport's ``serve()``."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import httpx
import ollama
import pytest
from processes import free_port, serving, stop, wait_until_up

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
REPLY = "The capital of France is Paris."
GREEDY = {"temperature": 0}
CLIENT_TIMEOUT_S = 30


def command(launcher: str, port: int) -> list[str]:
    if launcher == "gunicorn":
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{port}",
            "--worker-class",
            "modelport.entrypoints.http.worker.HeadFirstWorker",
            "--threads",
            "4",
            "fake_app:get_app()",
        ]
    return [sys.executable, str(HERE / "fake_app.py"), str(port)]


@pytest.fixture(scope="module", params=["gunicorn", "serve"])
def url(request, tmp_path_factory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    paths = [str(HERE), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        "MODELPORT_HOME": str(tmp_path_factory.mktemp("home")),
    }
    with serving(command(request.param, port), port, env, log) as address:
        yield address


@pytest.fixture
def client(url: str) -> ollama.Client:
    return ollama.Client(host=url, timeout=CLIENT_TIMEOUT_S)


def test_root_answers(url: str) -> None:
    with urllib.request.urlopen(url) as response:
        assert response.read() == b"Ollama is running"


def test_list(client: ollama.Client) -> None:
    models = {m.model: m for m in client.list().models}
    assert sorted(models) == [
        "chatty:latest",
        "embedder:latest",
        "fake:latest",
        "slow:latest",
        "smollm2:135m",
        "smollm2:latest",
        "weather:latest",
    ]
    assert models["fake:latest"].details.family == "fake"
    assert models["fake:latest"].modified_at is not None


def test_generate_streaming(client: ollama.Client) -> None:
    *chunks, final = list(client.generate(model="fake", prompt="Capital?", stream=True, options=GREEDY))
    assert "".join(c.response for c in chunks) == REPLY
    assert not any(c.done for c in chunks)
    assert (final.done, final.done_reason, final.eval_count) == (True, "stop", len(REPLY))


def test_generate_whole(client: ollama.Client) -> None:
    answer = client.generate(model="fake", prompt="Capital?", options={**GREEDY, "num_predict": 5})
    assert (answer.response, answer.done_reason, answer.eval_count) == ("The c", "length", 5)


def test_chat_streaming(client: ollama.Client) -> None:
    messages = [{"role": "user", "content": "Capital?"}]
    *chunks, final = list(client.chat(model="fake", messages=messages, stream=True, options=GREEDY))
    assert all(c.message.role == "assistant" for c in [*chunks, final])
    assert "".join(c.message.content for c in chunks) == REPLY
    assert (final.done, final.done_reason) == (True, "stop")


def test_chat_whole(client: ollama.Client) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital?"}]
    answer = client.chat(model="fake", messages=messages, options={**GREEDY, "stop": ["Paris"]})
    assert (answer.message.role, answer.message.content) == ("assistant", "The capital of France is ")


def test_show(client: ollama.Client) -> None:
    shown = client.show("fake")
    assert shown.modelinfo["general.architecture"] == "fake"
    assert shown.details.quantization_level == "F32"
    assert "completion" in shown.capabilities


def test_an_unknown_model_raises_404(client: ollama.Client) -> None:
    calls = [
        lambda: client.show("nope"),
        lambda: client.generate(model="nope", prompt="hi"),
        lambda: list(client.generate(model="nope", prompt="hi", stream=True)),
        lambda: list(client.chat(model="nope", messages=[{"role": "user", "content": "hi"}], stream=True)),
    ]
    for call in calls:
        with pytest.raises(ollama.ResponseError) as raised:
            call()
        assert raised.value.status_code == 404
        assert raised.value.error == "model 'nope' not found"


def test_four_concurrent_streams_all_complete(url: str) -> None:
    def ask(_: int) -> str:
        client = ollama.Client(host=url, timeout=CLIENT_TIMEOUT_S)
        parts = client.generate(model="fake", prompt="Capital?", stream=True, options=GREEDY)
        return "".join(part.response for part in parts)

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(ask, range(4))) == [REPLY] * 4


def test_a_client_that_leaves_cancels_its_generation(url: str, client: ollama.Client) -> None:
    """``slow`` needs 100 s for a whole reply and generates one reply at a time, so
    the next request only gets an answer within the client's timeout if the first
    generation stopped when its client left."""
    body = {"model": "slow", "prompt": "Tick?", "options": GREEDY}
    with httpx.stream("POST", f"{url}/api/generate", json=body, timeout=CLIENT_TIMEOUT_S) as response:
        assert response.status_code == 200
        assert '"done":false' in next(response.iter_lines())
    answer = client.generate(model="slow", prompt="Tick?", options={**GREEDY, "num_predict": 3})
    assert answer.response == "tic"


def test_serve_runs_the_production_wiring_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    code = (
        "from modelport.entrypoints.config import Settings\n"
        "from modelport.entrypoints.http.server import serve\n"
        f"serve(Settings.load({{'port': {port}, 'host': '127.0.0.1'}}, dotenv=None), threads=2)\n"
    )
    env = {**os.environ, "MODELPORT_HOME": str(tmp_path / "home")}
    with log.open("wb") as output:
        process = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url, process, log)
        assert isinstance(ollama.Client(host=url, timeout=CLIENT_TIMEOUT_S).list().models, list)
        process.terminate()
        assert process.wait(timeout=CLIENT_TIMEOUT_S) == 0, log.read_text()
    finally:
        stop(process)
