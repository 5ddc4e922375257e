"""Rendering a generation stream: the stream is closed however the answer ends.

These hold their own reference to the stream, so a close that only happened when
the stream is garbage-collected would not pass.
"""

from __future__ import annotations

import json

import pytest

from modelport.domain import GenerationRequest, ModelRef, SamplingPolicy
from modelport.entrypoints.http import streaming
from modelport.entrypoints.http.schemas import Reply

REPLY = "The capital of France is Paris."


@pytest.fixture
def stream(services):
    request = GenerationRequest(model=ModelRef.parse("fake"), prompt="hi", sampling=SamplingPolicy.greedy())
    return services.generate(request)


def in_use(services) -> int:
    return services.loaded()[0].in_use


def reply() -> Reply:
    return Reply.generate("fake", lambda: 0.0)


def test_closing_the_lines_early_closes_the_generation(services, stream) -> None:
    body = streaming.ndjson(streaming.started(stream), stream, reply())
    assert json.loads(next(body))["response"] == "T"
    assert in_use(services) == 1
    body.close()
    assert in_use(services) == 0


def test_the_lines_close_the_generation_when_done(services, stream) -> None:
    *chunks, final = [json.loads(line) for line in streaming.ndjson(streaming.started(stream), stream, reply())]
    assert "".join(c["response"] for c in chunks) == REPLY and final["done"] is True
    assert in_use(services) == 0


def test_the_whole_answer_closes_the_generation(services, stream) -> None:
    answer = streaming.whole(streaming.started(stream), stream, reply())
    assert answer["response"] == REPLY
    assert in_use(services) == 0
