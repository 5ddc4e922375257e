"""`modelport serve` on the bundled SmolLM2, driven by the official ollama client and
by plain HTTP: the first end-to-end path of a real model through gunicorn."""

from __future__ import annotations

import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import httpx
import ollama
import pytest
from processes import free_port, serving

pytestmark = pytest.mark.slow
QUESTION = "What is the capital of France? Answer in one sentence."
GREEDY = {"temperature": 0}


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> Iterator[str]:
    port = free_port()
    executable = shutil.which("modelport", path=str(Path(sys.executable).parent)) or "modelport"
    env = {**os.environ, "MODELPORT_HOME": str(tmp_path_factory.mktemp("home")), "MODELPORT_PORT": str(port)}
    log = tmp_path_factory.mktemp("server") / "serve.log"
    with serving([executable, "serve", "--threads", "4"], port, env, log) as address:
        yield address


@pytest.fixture
def client(url: str) -> ollama.Client:
    return ollama.Client(host=url, timeout=120)


def test_tags_list_both_bundled_models(client: ollama.Client) -> None:
    models = {m.model: m for m in client.list().models}
    # the two models, and their short names as Ollama clients match them exactly
    assert set(models) == {"smollm2:135m", "all-minilm:l6-v2", "smollm2:latest", "all-minilm:latest"}
    assert models["smollm2:latest"].digest == models["smollm2:135m"].digest
    smollm = models["smollm2:135m"]
    assert (smollm.size, smollm.details.format, smollm.details.family) == (98_362_432, "gguf", "llama")
    assert (smollm.details.parameter_size, smollm.details.quantization_level) == ("135M", "Q4_1")
    assert len(smollm.digest) == 64


def test_generate_answers_paris(client: ollama.Client) -> None:
    answer = client.generate(model="smollm2", prompt=QUESTION, options=GREEDY)
    assert answer.response == "The capital of France is Paris."
    assert (answer.done, answer.done_reason) == (True, "stop")
    assert answer.prompt_eval_count > 10 and answer.eval_count == 7
    assert answer.eval_duration > 0 and answer.total_duration >= answer.eval_duration


def test_streamed_generate_equals_the_whole_answer(client: ollama.Client) -> None:
    *chunks, final = list(client.generate(model="smollm2", prompt=QUESTION, options=GREEDY, stream=True))
    assert "".join(c.response for c in chunks) == "The capital of France is Paris."
    assert final.done and final.response == "" and final.done_reason == "stop"


def test_raw_prompt_gives_the_golden_continuation(client: ollama.Client) -> None:
    answer = client.generate(
        model="smollm2",
        prompt="Once upon a time, there was a little girl named",
        raw=True,
        options={**GREEDY, "num_predict": 10},
    )
    assert answer.response == " Emma who loved to play in the sun. She"
    assert (answer.done_reason, answer.eval_count, answer.prompt_eval_count) == ("length", 10, 11)


def test_chat_streams_with_a_role_on_every_line(client: ollama.Client) -> None:
    parts = list(
        client.chat(model="smollm2:135m", messages=[{"role": "user", "content": QUESTION}], options=GREEDY, stream=True)
    )
    assert all(p.message.role == "assistant" for p in parts)
    assert "Paris" in "".join(p.message.content for p in parts)


def test_ndjson_wire_format(url: str) -> None:
    body = {"model": "smollm2", "prompt": "Say hi.", "options": {**GREEDY, "num_predict": 4}}
    with httpx.stream("POST", f"{url}/api/generate", json=body, timeout=60) as response:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert all(line["model"] == "smollm2" and "created_at" in line for line in lines)
    final = lines[-1]
    assert final["done"] and final["done_reason"] == "length" and final["eval_count"] == 4
    for key in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_duration"):
        assert isinstance(final[key], int)


def test_several_clients_at_once(url: str) -> None:
    def ask(_: int) -> str:
        return ollama.Client(host=url, timeout=120).generate(model="smollm2", prompt=QUESTION, options=GREEDY).response

    with ThreadPoolExecutor(max_workers=3) as pool:
        assert list(pool.map(ask, range(3))) == ["The capital of France is Paris."] * 3


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"model": "nosuch", "prompt": "hi"}, 404, "model 'nosuch' not found"),
        ({"model": "smollm2", "prompt": 5}, 400, "prompt"),
        ({"model": "smollm2", "prompt": "hi", "options": {"top_p": 3}}, 400, "top_p"),
        ({"model": "all-minilm", "prompt": "hi"}, 400, "does not support"),
        ({"model": "smollm2", "prompt": "word " * 5000}, 400, "context window"),
    ],
)
def test_bad_requests_get_a_clear_status(url: str, body, status, message) -> None:
    response = httpx.post(f"{url}/api/generate", json=body, timeout=60)
    assert response.status_code == status
    assert message in response.json()["error"]
