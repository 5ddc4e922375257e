"""Every Ollama route driven by the official ``ollama`` client, against gunicorn on
127.0.0.1 serving the fake app (see fake_app.py), streaming and not."""

from __future__ import annotations

import hashlib
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import httpx
import ollama
import pytest
from processes import free_port, serving

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
REPLY = "The capital of France is Paris."
GREEDY = {"temperature": 0}
TIMEOUT_S = 30


def server_env(tmp_path_factory, **extra: str) -> dict[str, str]:
    paths = [str(HERE), os.environ.get("PYTHONPATH", "")]
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        "MODELPORT_HOME": str(tmp_path_factory.mktemp("home")),
        **extra,
    }


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with serving(
        [sys.executable, str(HERE / "fake_app.py"), str(port)], port, server_env(tmp_path_factory), log
    ) as address:
        yield address


@pytest.fixture
def client(url: str) -> ollama.Client:
    return ollama.Client(host=url, timeout=TIMEOUT_S)


def test_version(client) -> None:
    assert client._client.get("/api/version").json()["version"]


def test_embed_and_embeddings(client) -> None:
    batch = client.embed(model="embedder", input=["a", "b"])
    assert len(batch.embeddings) == 2 and all(len(v) == 16 for v in batch.embeddings)
    assert batch.prompt_eval_count == 2
    single = client.embeddings(model="embedder", prompt="a")
    assert list(single.embedding) == pytest.approx(list(batch.embeddings[0]))
    with pytest.raises(ollama.ResponseError) as raised:
        client.embed(model="fake", input="a")
    assert raised.value.status_code == 400 and "does not support embeddings" in raised.value.error


def test_ps_shows_what_is_loaded_and_keep_alive_zero_unloads(client) -> None:
    client.generate(model="fake", prompt="hi", options=GREEDY, keep_alive="10m")
    models = {m.model: m for m in client.ps().models}
    fake = models["fake:latest"]
    remaining = (fake.expires_at - datetime.now(timezone.utc)).total_seconds()
    assert 500 < remaining <= 600
    assert fake.size > 0 and fake.size_vram == 0 and fake.context_length == 4096
    assert fake.details.family == "fake"
    client.generate(model="fake", prompt="hi", options=GREEDY, keep_alive=0)
    assert "fake:latest" not in {m.model for m in client.ps().models}


def test_load_and_unload_with_an_empty_prompt(client) -> None:
    assert client.generate(model="fake", prompt="").done_reason == "load"
    assert "fake:latest" in {m.model for m in client.ps().models}
    assert client.generate(model="fake", prompt="", keep_alive=0).done_reason == "unload"
    assert "fake:latest" not in {m.model for m in client.ps().models}


def test_pull_streaming_and_not(client) -> None:
    steps = list(client.pull("org/tiny", stream=True))
    assert steps[0].status == "pulling manifest" and steps[-1].status == "success"
    progress = [s for s in steps if s.status.startswith("pulling ") and s.digest]
    assert progress[-1].completed == progress[-1].total == 4096
    assert progress[0].digest.startswith("sha256:")
    assert client.pull("org/tiny").status == "success"
    assert any(m.model.startswith("org/tiny") for m in client.list().models)
    with pytest.raises(ollama.ResponseError) as raised:
        client.pull("org/absent")
    assert raised.value.status_code == 404
    with pytest.raises(ollama.ResponseError):
        list(client.pull("org/absent", stream=True))


def test_push_is_refused_clearly(client) -> None:
    with pytest.raises(ollama.ResponseError) as raised:
        client.push("fake")
    assert raised.value.status_code == 501 and "push is not supported" in raised.value.error


def test_copy_and_delete(client) -> None:
    assert client.copy("fake", "copied:v1").status == "success"
    assert client.show("copied:v1").details.family == "fake"
    assert client.delete("copied:v1").status == "success"
    with pytest.raises(ollama.ResponseError) as raised:
        client.delete("copied:v1")
    assert raised.value.status_code == 404


def test_create_from_an_uploaded_blob(client, tmp_path) -> None:
    path = tmp_path / "mine.gguf"
    path.write_bytes(b"GGUF" + b"\x01" * 2000)
    digest = client.create_blob(path)
    assert digest == f"sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}"
    assert client._client.head(f"/api/blobs/{digest}").status_code == 200
    steps = list(client.create(model="mine", files={"mine.gguf": digest}, stream=True))
    assert steps[0].status == f"using existing layer {digest}" and steps[-1].status == "success"
    assert client.show("mine").details.format == "gguf"
    assert "mine:latest" in {m.model for m in client.list().models}
    assert client.create(model="mine2", from_="mine").status == "success"
    with pytest.raises(ollama.ResponseError) as raised:
        client.create(model="x", files={"m.gguf": "sha256:" + "0" * 64})
    assert raised.value.status_code == 400 and "upload it first" in raised.value.error


MODELFILE = '''FROM fake
SYSTEM """You are Mario."""
PARAMETER temperature 0
PARAMETER num_predict 9
PARAMETER stop "Paris"
MESSAGE user Who are you?
MESSAGE assistant It's-a me!
TEMPLATE """{{- range .Messages }}[{{ .Role }}] {{ .Content }}
{{ end }}[assistant] """
LICENSE MIT
'''


def test_create_with_a_modelfile_then_show_and_chat_with_the_new_defaults(client, url: str) -> None:
    # What `ollama create -f Modelfile` sends: the client reads the Modelfile, the server
    # gets its instructions as fields.
    steps = list(
        client.create(
            model="mario",
            from_="fake",
            system="You are Mario.",
            stream=True,
            parameters={"temperature": 0, "num_predict": 9, "stop": ["Paris"]},
            messages=[{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "It's-a me!"}],
            template="{{- range .Messages }}[{{ .Role }}] {{ .Content }}\n{{ end }}[assistant] ",
            license="MIT",
        )
    )
    assert steps[-1].status == "success"
    shown = client.show("mario")
    raw = client._client.post("/api/show", json={"model": "mario"}).json()
    assert raw["system"] == "You are Mario." and shown.license == "MIT"
    assert shown.template.startswith("{{- range .Messages }}")
    assert {"temperature 0.0", "num_predict 9", 'stop "Paris"'} <= set(shown.parameters.splitlines())
    assert 'SYSTEM "You are Mario."' in shown.modelfile and 'MESSAGE user "Who are you?"' in shown.modelfile
    answer = client.chat(model="mario", messages=[{"role": "user", "content": "Capital?"}])
    assert answer.message.content == "The capit" and answer.done_reason == "length"
    seen = "[system] You are Mario.\n[user] Who are you?\n[assistant] It's-a me!\n[user] Capital?\n[assistant] "
    assert answer.prompt_eval_count == len(seen)  # the fake engine's tokens are characters
    greedy_stop = client.chat(
        model="mario", messages=[{"role": "user", "content": "Capital?"}], options={"num_predict": 100}
    )
    assert greedy_stop.message.content == "The capital of France is "
    # The legacy field: the Modelfile's text itself.
    made = httpx.post(
        f"{url}/api/create", json={"model": "mario2", "modelfile": MODELFILE, "stream": False}, timeout=TIMEOUT_S
    )
    assert made.status_code == 200, made.text
    again = client._client.post("/api/show", json={"model": "mario2"}).json()
    assert (again["system"], again["template"], again["messages"]) == (raw["system"], raw["template"], raw["messages"])
    with pytest.raises(ollama.ResponseError) as raised:
        client.create(model="bad", from_="fake", adapters={"lora.gguf": "sha256:" + "1" * 64})
    assert raised.value.status_code == 400 and "adapters" in raised.value.error
    with pytest.raises(ollama.ResponseError) as raised:
        client.create(model="bad", from_="fake", template="{{ range .Tools }}{{ end }}")
    assert raised.value.status_code == 400 and "range .Tools" in raised.value.error


def test_a_blob_with_a_wrong_digest_is_refused(url: str) -> None:
    response = httpx.post(f"{url}/api/blobs/sha256:{'0' * 64}", content=b"data", timeout=TIMEOUT_S)
    assert response.status_code == 400 and "digest mismatch" in response.json()["error"]


def test_chat_whole_and_streamed_keep_the_role(client) -> None:
    messages = [{"role": "user", "content": "Capital?"}]
    whole = client.chat(model="fake", messages=messages, options=GREEDY)
    parts = list(client.chat(model="fake", messages=messages, options=GREEDY, stream=True))
    assert whole.message.content == "".join(p.message.content for p in parts) == REPLY
    assert parts[-1].done_reason == "stop" and parts[-1].eval_count == len(REPLY)


def test_generate_refuses_images(client) -> None:
    with pytest.raises(ollama.ResponseError) as raised:
        client.generate(model="fake", prompt="What?", images=[b"png"])
    assert raised.value.status_code == 400 and "does not support" in raised.value.error


def test_health_metrics_and_openapi(url: str) -> None:
    health = httpx.get(f"{url}/health", timeout=TIMEOUT_S).json()
    assert health["status"] == "ok" and "devices" in health
    metrics = httpx.get(f"{url}/metrics", timeout=TIMEOUT_S).text
    assert "modelport_http_requests_total" in metrics and "modelport_queue_depth" in metrics
    assert "/api/chat" in httpx.get(f"{url}/openapi.json", timeout=TIMEOUT_S).json()["paths"]


def test_a_foreign_host_header_is_refused(url: str) -> None:
    response = httpx.get(f"{url}/api/tags", headers={"Host": "attacker.example"}, timeout=TIMEOUT_S)
    assert response.status_code == 403


@pytest.fixture(scope="module")
def keyed_url(tmp_path_factory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("keyed") / "server.log"
    env = server_env(tmp_path_factory, MODELPORT_API_KEY="s3cret")
    with serving([sys.executable, str(HERE / "fake_app.py"), str(port)], port, env, log, probe="/health") as address:
        yield address


def test_an_api_key_protects_everything_but_health(keyed_url: str) -> None:
    with pytest.raises(ollama.ResponseError) as raised:
        ollama.Client(host=keyed_url, timeout=TIMEOUT_S).list()
    assert raised.value.status_code == 401
    keyed = ollama.Client(host=keyed_url, timeout=TIMEOUT_S, headers={"Authorization": "Bearer s3cret"})
    assert "fake:latest" in {m.model for m in keyed.list().models}
    assert keyed.generate(model="fake", prompt="hi", options=GREEDY).response == REPLY
    assert httpx.get(f"{keyed_url}/health", timeout=TIMEOUT_S).status_code == 200
