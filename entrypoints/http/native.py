"""modelport's own generation routes, in the domain's terms rather than a vendor's:

- ``POST /v1/generate``: one answer, ``{"model", "text", "finish_reason", "usage"}``;
- ``POST /v1/generate_stream``: the same as server-sent events, ``{"text"}`` per
  delta, then ``{"text": "", "finish_reason", "usage"}``, then ``[DONE]``;
- ``POST /v1/generate_batch``: several prompts, one result each, in order.

Bodies take ``prompt`` (through the chat template unless ``raw``) or ``messages``,
plus ``system``, ``options`` (Ollama's names) and ``keep_alive``.
"""

from __future__ import annotations

import functools
from typing import Any, Iterator

import falcon

from modelport.domain import Completion, InvalidRequest, ModelInfo, ModelportError, TokenEvent, Usage
from modelport.ports import GenerationStream

from . import schemas
from .disconnect import fold, watch_of
from .errors import openai_error, status_of
from .inference import Runner
from .resources import MAX_BODY_BYTES, read_json
from .schemas import Body, Call
from .streaming import SSE_DONE, event, log_unexpected, sse_headers

MAX_BATCH = 64


def usage(value: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": value.prompt_tokens,
        "completion_tokens": value.completion_tokens,
        "total_tokens": value.total_tokens,
        "load_ns": value.load_ns,
        "prompt_eval_ns": value.prompt_eval_ns,
        "eval_ns": value.eval_ns,
        "total_ns": value.total_ns,
    }


def result(done: Completion) -> dict[str, Any]:
    shape = {
        "text": done.text,
        "finish_reason": done.finish_reason.value,
        "usage": usage(done.usage),
        "token_ids": list(done.token_ids),
    }
    if done.tool_calls:
        shape["tool_calls"] = [call.to_dict() for call in done.tool_calls]
    return shape


class Generate:
    """``/v1/generate`` (``stream=False``) and ``/v1/generate_stream``."""

    def __init__(self, runner: Runner, *, stream: bool, max_body: int = MAX_BODY_BYTES) -> None:
        self._runner = runner
        self._stream = stream
        self._max_body = max_body

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, self._max_body)
        model = self._runner.services.show(schemas.model_name(body))  # the request's one store lookup
        call = parse(body, self._runner, model)
        assert call.request is not None
        events, stream = self._runner.generate(
            call.request, model=model, keep_alive=call.keep_alive, started=getattr(req.context, "started", None)
        )
        if self._stream:
            sse_headers(resp)
            resp.stream = deltas(events, stream)
            return
        done = fold(events, stream, watch_of(req))
        resp.media = {"model": call.model, **result(done)}


class GenerateBatch:
    """``/v1/generate_batch``: ``prompts`` answered one after the other (until the
    engines batch, this is what a batch means), each with its own result."""

    def __init__(self, runner: Runner, max_body: int = MAX_BODY_BYTES) -> None:
        self._runner = runner
        self._max_body = max_body

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, self._max_body)
        prompts = body.get("prompts")
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p for p in prompts):
            raise InvalidRequest("'prompts' must be a non-empty array of non-empty strings")
        if len(prompts) > MAX_BATCH:
            raise InvalidRequest(f"at most {MAX_BATCH} prompts per batch, got {len(prompts)}")
        rest = {k: v for k, v in body.items() if k not in ("prompts", "messages")}
        model = self._runner.services.show(schemas.model_name(body))  # one lookup for the batch
        calls = [parse({**rest, "prompt": p}, self._runner, model) for p in prompts]
        results = []
        watch = watch_of(req)
        for call in calls:
            assert call.request is not None
            events, stream = self._runner.generate(call.request, model=model, keep_alive=call.keep_alive)
            results.append(result(fold(events, stream, watch)))
        resp.media = {"model": calls[0].model, "results": results}


def parse(body: Body, runner: Runner, model: ModelInfo) -> Call:
    """Ollama's generate body (``prompt``) or chat body (``messages``), which must
    ask for a generation; features no model offers are refused. ``model``: what the
    body's ``model`` names, looked up once by the route."""
    if body.get("stream") is not None:
        raise InvalidRequest("'stream' is not a field here: use /v1/generate or /v1/generate_stream")
    policy = functools.partial(runner.services.sampling_for, model)
    call = schemas.parse_chat(body, policy) if "messages" in body else schemas.parse_generate(body, policy)
    if call.needs:
        raise InvalidRequest(f"'{model.name}' does not support {call.needs[0]}")
    if call.request is None:
        raise InvalidRequest("give a non-empty 'prompt' or 'messages'")
    return call


def deltas(events: Iterator[TokenEvent], stream: GenerationStream) -> Iterator[bytes]:
    try:
        for item in events:
            if item.text:
                yield event({"text": item.text})
            if item.tool_calls:
                yield event({"text": "", "tool_calls": [call.to_dict() for call in item.tool_calls]})
            if item.done:
                assert item.finish_reason is not None
                yield event(
                    {"text": "", "finish_reason": item.finish_reason.value, "usage": usage(item.usage or Usage())}
                )
                yield SSE_DONE
                return
        raise RuntimeError("the generation stream ended without a final event")
    except Exception as exc:  # the status is already sent: report it in the stream
        status = status_of(exc) if isinstance(exc, ModelportError) else 500
        yield event(openai_error(log_unexpected(exc, "generation"), status))
    finally:
        stream.close()
