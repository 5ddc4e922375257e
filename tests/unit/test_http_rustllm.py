"""RustLLM's REST API profile (under /rustllm, and at the root with api=rustllm) and
the chat page at /, through falcon's test client over fakes."""

from __future__ import annotations

import json

import attrs
import falcon.testing
import pytest

from modelport.entrypoints.http.app import create_app
from modelport.entrypoints.http.chatpage import PROBE_ANSWER

LOCAL = {"Host": "localhost:11434"}
HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
REPLY = "The capital of France is Paris."
BODY = {
    "model": "fake",
    "messages": [{"role": "user", "content": "Capital of France?"}],
    "temperature": 0,
    "max_tokens": 100,
}


@pytest.fixture(params=["/rustllm", ""], ids=["prefixed", "root"])
def profile(request, services, settings):
    """(client, prefix): the profile under /rustllm (Ollama's routes at /api), or at the root."""
    prefix = request.param
    settings = attrs.evolve(settings, api="ollama" if prefix else "rustllm")
    return falcon.testing.TestClient(create_app(services, settings), headers=LOCAL), prefix


def test_health(profile) -> None:
    client, p = profile
    assert client.simulate_get(f"{p}/api/health").json == {"success": True, "data": "OK"}


def test_models_list_and_one(profile) -> None:
    client, p = profile
    result = client.simulate_get(f"{p}/api/models")
    assert result.status_code == 200 and result.json["success"] is True
    models = result.json["data"]["models"]
    assert {m["name"] for m in models} == {"fake:latest", "embedder:latest"}
    assert all(set(m) == {"name", "size_bytes", "last_modified"} for m in models)
    one = client.simulate_get(f"{p}/api/models/fake").json
    assert one["success"] and one["data"]["name"] == "fake:latest" and one["data"]["size_bytes"] == 1024
    assert one["data"]["last_modified"].endswith("Z")


def test_errors_have_rustllm_shape(profile) -> None:
    client, p = profile
    missing = client.simulate_get(f"{p}/api/models/nothing-here")
    assert missing.status_code == 404 and missing.json["success"] is False and "nothing-here" in missing.json["error"]
    bad = client.simulate_post(f"{p}/api/chat", json={"model": "fake", "messages": "hi"})
    assert bad.status_code == 400 and bad.json == {"success": False, "error": bad.json["error"]}
    assert "messages" in bad.json["error"]
    assert client.simulate_post(f"{p}/api/chat", body=b"{not json").json["success"] is False
    assert client.simulate_post(f"{p}/api/chat", json={**BODY, "temperature": "hot"}).status_code == 400
    assert client.simulate_post(f"{p}/api/chat", json={**BODY, "max_tokens": 0}).status_code == 400
    unknown = client.simulate_get(f"{p}/api/nowhere")
    assert unknown.status_code == 404 and unknown.json["success"] is False
    no_source = client.simulate_post(f"{p}/api/models/org/absent", json={"force": False})
    assert no_source.status_code == 501 and no_source.json["success"] is False


def test_chat(profile) -> None:
    client, p = profile
    result = client.simulate_post(f"{p}/api/chat", json=BODY)
    assert result.status_code == 200
    data = result.json["data"]
    assert data["message"] == {"role": "assistant", "content": REPLY}
    usage = data["usage"]
    assert usage["completion_tokens"] == len(REPLY)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > len(REPLY)
    short = client.simulate_post(f"{p}/api/chat", json={**BODY, "max_tokens": 3}).json["data"]
    assert short["message"]["content"] == "The" and short["usage"]["completion_tokens"] == 3


def test_chat_stream(profile) -> None:
    client, p = profile
    result = client.simulate_post(f"{p}/api/chat/stream", json=BODY)
    assert result.status_code == 200 and result.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(block[len("data: ") :]) for block in result.text.split("\n\n") if block]
    assert all(e["success"] for e in events)
    assert "".join(e["data"].get("delta", "") for e in events[:-1]) == REPLY
    final = events[-1]["data"]
    assert final["done"] is True and final["message"]["content"] == REPLY and final["finish_reason"] == "stop"
    assert final["usage"]["completion_tokens"] == len(REPLY)


def test_delete_and_a_model_already_there(profile) -> None:
    client, p = profile
    present = client.simulate_post(f"{p}/api/models/fake", json={"force": False})
    assert present.status_code == 200 and present.json["data"]["downloaded"] is False
    assert client.simulate_post(f"{p}/api/models/fake").json["data"]["downloaded"] is False  # no body
    assert client.simulate_post(f"{p}/api/models/fake", json={"force": "yes"}).status_code == 400
    gone = client.simulate_delete(f"{p}/api/models/embedder")
    assert gone.json == {"success": True, "data": {"name": "embedder", "deleted": True}}
    assert client.simulate_get(f"{p}/api/models/embedder").status_code == 404


def test_the_profile_replaces_ollama_routes_only_at_the_root(profile) -> None:
    client, p = profile
    tags = client.simulate_get("/api/tags")
    assert tags.status_code == (200 if p else 404)
    assert client.simulate_get("/v1/models").status_code == 200  # OpenAI's routes stay in both
    assert client.simulate_get("/rustllm/api/health").status_code == 200
    ollama_chat = client.simulate_post("/api/chat", json={**BODY, "stream": False})
    assert ("message" in ollama_chat.json) if p else (ollama_chat.json["data"]["message"]["content"] == REPLY)


# -- the chat page -------------------------------------------------------------------------


@pytest.fixture
def client(services, settings) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(services, settings), headers=LOCAL)


def test_root_answers_clients_and_browsers(client) -> None:
    probe = client.simulate_get("/")
    assert (probe.status_code, probe.text) == (200, PROBE_ANSWER)
    page = client.simulate_get("/", headers=HTML)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<title>modelport chat</title>" in page.text and "/v1/chat/completions" in page.text
    assert "connect-src 'self'" in page.headers["content-security-policy"]


def test_the_page_fetches_nothing_from_elsewhere(client) -> None:
    text = client.simulate_get("/", headers=HTML).text
    assert "http://" not in text.replace("https?:\\/\\/", "") and "https://" not in text
    assert "<script src" not in text and "<link" not in text


def test_the_page_loads_without_the_key_but_nothing_else_does(services, settings) -> None:
    keyed = falcon.testing.TestClient(create_app(services, attrs.evolve(settings, api_key="k")), headers=LOCAL)
    assert keyed.simulate_get("/", headers=HTML).status_code == 200
    assert keyed.simulate_get("/").status_code == 401
    assert keyed.simulate_get("/v1/models", headers=HTML).status_code == 401
    assert keyed.simulate_get("/v1/models", headers={"Authorization": "Bearer k"}).status_code == 200
