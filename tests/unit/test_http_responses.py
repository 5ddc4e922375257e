"""``/v1/responses`` (OpenAI's Responses API), through falcon's test client, over fakes."""

from __future__ import annotations

import json
from typing import Any

import falcon.testing
import pytest

from modelport.entrypoints.http.app import create_app
from modelport.entrypoints.http.responses import ResponseStore

REPLY = "The capital of France is Paris."
NOW = 1_700_000_000.0
LOCAL = {"Host": "localhost:11434"}


@pytest.fixture
def client(services, settings) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(services, settings, clock=lambda: NOW), headers=LOCAL)


def respond(client, **body: Any) -> falcon.testing.Result:
    return client.simulate_post("/v1/responses", json={"model": "fake", "input": "Capital of France?",
                                                       "temperature": 0, **body})


def sse(result: falcon.testing.Result) -> list[tuple[str, dict[str, Any]]]:
    assert result.headers["content-type"] == "text/event-stream", result.text
    out = []
    for frame in result.text.split("\n\n")[:-1]:
        kind, data = frame.split("\n")
        assert kind.startswith("event: ") and data.startswith("data: ")
        payload = json.loads(data[6:])
        assert payload["type"] == kind[7:]
        out.append((kind[7:], payload))
    return out


def test_a_text_input_gets_a_completed_response(client, engine_box) -> None:
    body = respond(client).json
    assert body["object"] == "response" and body["id"].startswith("resp_") and body["status"] == "completed"
    assert body["created_at"] == int(NOW) and body["model"] == "fake"
    (item,) = body["output"]
    assert (item["type"], item["role"], item["status"]) == ("message", "assistant", "completed")
    assert item["content"] == [{"type": "output_text", "text": REPLY, "annotations": []}]
    assert body["usage"]["output_tokens"] == len(REPLY)
    assert body["usage"]["total_tokens"] == body["usage"]["input_tokens"] + len(REPLY)
    assert engine_box.last.prompts[-1] == "<|user|>Capital of France?\n<|assistant|>"


def test_messages_and_instructions_become_the_conversation(client, engine_box) -> None:
    items = [{"role": "developer", "content": "Be brief."},
             {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
             {"role": "assistant", "content": [{"type": "output_text", "text": "Hello"}]},
             {"role": "user", "content": "Capital?"}]
    body = respond(client, input=items, instructions="Answer in French.").json
    assert body["instructions"] == "Answer in French."
    assert engine_box.last.prompts[-1] == ("<|system|>Answer in French.\n<|system|>Be brief.\n<|user|>Hi\n"
                                           "<|assistant|>Hello\n<|user|>Capital?\n<|assistant|>")


def test_max_output_tokens_makes_it_incomplete(client) -> None:
    body = respond(client, max_output_tokens=3).json
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["content"][0]["text"] == "The" and body["max_output_tokens"] == 3


def test_the_stream_follows_the_responses_event_order(client) -> None:
    events = sse(respond(client, stream=True))
    kinds = [kind for kind, _ in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert "".join(e["delta"] for k, e in events if k == "response.output_text.delta") == REPLY
    assert [e["sequence_number"] for _, e in events] == list(range(len(events)))
    final = events[-1][1]["response"]
    assert final["status"] == "completed" and final["output"][0]["content"][0]["text"] == REPLY
    assert events[0][1]["response"]["id"] == final["id"] and events[0][1]["response"]["status"] == "in_progress"


def test_a_short_stream_ends_incomplete(client) -> None:
    assert sse(respond(client, stream=True, max_output_tokens=2))[-1][0] == "response.incomplete"


def test_previous_response_id_continues_the_conversation(client, engine_box) -> None:
    first = respond(client, instructions="Only now.").json
    second = respond(client, input="And Spain?", previous_response_id=first["id"]).json
    assert second["previous_response_id"] == first["id"]
    assert engine_box.last.prompts[-1] == (f"<|user|>Capital of France?\n<|assistant|>{REPLY}\n"
                                           "<|user|>And Spain?\n<|assistant|>")
    third = respond(client, input="And Italy?", previous_response_id=second["id"], stream=True)
    assert sse(third)[-1][0] == "response.completed"
    assert engine_box.last.prompts[-1].count("<|user|>") == 3
    assert client.simulate_get(f"/v1/responses/{first['id']}").json == first
    assert client.simulate_delete(f"/v1/responses/{first['id']}").json["deleted"] is True
    gone = respond(client, input="Again?", previous_response_id=first["id"])
    assert gone.status_code == 404 and first["id"] in gone.json["error"]["message"]


def test_store_false_keeps_nothing(client) -> None:
    body = respond(client, store=False).json
    assert body["store"] is False
    assert client.simulate_get(f"/v1/responses/{body['id']}").status_code == 404


def test_the_store_is_bounded_and_expires() -> None:
    now = [0.0]
    store = ResponseStore(capacity=2, ttl=10, clock=lambda: now[0])
    for name in "abc":
        store.put(name, (), {"id": name})
    assert len(store) == 2
    with pytest.raises(falcon.HTTPNotFound):
        store.get("a")
    now[0] = 11
    assert len(store) == 0


def test_logprobs_in_output_text(client, engine_box) -> None:
    body = respond(client, top_logprobs=2, include=["message.output_text.logprobs"], max_output_tokens=2).json
    part = body["output"][0]["content"][0]
    assert [t["token"] for t in part["logprobs"]] == ["T", "h"]
    assert part["logprobs"][0]["logprob"] == pytest.approx(engine_box.last.distribution(0)[ord("T")])
    assert len(part["logprobs"][0]["top_logprobs"]) == 2
    deltas = [e for k, e in sse(respond(client, stream=True, top_logprobs=1, max_output_tokens=2))
              if k == "response.output_text.delta"]
    assert [d["logprobs"][0]["token"] for d in deltas] == ["T", "h"]


@pytest.mark.parametrize("body, words", [
    ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {}}}}, "text.format"),
    ({"tools": [{"type": "function", "name": "f", "parameters": {}}]}, "tools"),
    ({"reasoning": {"effort": "high"}}, "reasoning"),
    ({"background": True}, "background"),
    ({"conversation": "conv_1", "prompt": {"id": "p"}}, "conversation, prompt"),
    ({"include": ["file_search_call.results"]}, "file_search_call.results"),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": "1"}]}, "function_call_output"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "images"),
    ({"input": []}, "input"),
    ({"input": 3}, "input"),
    ({"temperature": -1}, "temperature"),
    ({"top_logprobs": 21}, "top_logprobs"),
    ({"model": None}, "model"),
])
def test_unsupported_or_bad_fields_are_400_naming_them(client, body, words) -> None:
    result = respond(client, **body)
    assert result.status_code == 400, result.text
    assert words in result.json["error"]["message"]


def test_an_unknown_model_is_404(client) -> None:
    result = respond(client, model="nope")
    assert result.status_code == 404 and result.json["error"]["code"] == "model_not_found"
