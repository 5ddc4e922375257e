"""The OpenAI-compatible routes: ``/v1/chat/completions``, ``/v1/completions``,
``/v1/embeddings``, ``/v1/models`` and ``/v1/models/{id}``.

Streams are server-sent events ending with ``data: [DONE]``; an error after the
stream began is one last ``data: {"error": {...}}`` event.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import falcon

from modelport.domain import FinishReason, ModelportError, TokenEvent, Usage
from modelport.ports import GenerationStream

from . import openai_schemas as wire
from .disconnect import fold, watch_of
from .errors import openai_error, status_of
from .inference import Runner
from .resources import MAX_BODY_BYTES, read_json
from .schemas import Clock
from .streaming import SSE_DONE, event, log_unexpected, sse_headers

Chunk = Callable[[str, "FinishReason | None"], dict[str, Any]]


class ChatCompletions:
    def __init__(self, runner: Runner, clock: Clock, max_body: int = MAX_BODY_BYTES) -> None:
        self._runner = runner
        self._clock = clock
        self._max_body = max_body

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        call = wire.parse_chat(read_json(req, self._max_body), self._runner.services.sampling_for_openai)
        events, stream = self._runner.generate(call.request, started=getattr(req.context, "started", None))
        if call.stream:
            envelope = wire.Envelope.chat(call.model, self._clock(), chunk=True)
            sse_headers(resp)
            resp.stream = sse(events, stream, envelope, call.include_usage, chat_chunk, first={"role": "assistant"})
            return
        done = fold(events, stream, watch_of(req))
        envelope = wire.Envelope.chat(call.model, self._clock())
        resp.media = envelope.wrap([wire.chat_message(done.text, done.finish_reason)],
                                   usage=wire.usage(done.usage))


class Completions:
    def __init__(self, runner: Runner, clock: Clock, max_body: int = MAX_BODY_BYTES) -> None:
        self._runner = runner
        self._clock = clock
        self._max_body = max_body

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        call = wire.parse_completion(read_json(req, self._max_body), self._runner.services.sampling_for_openai)
        started = getattr(req.context, "started", None)
        envelope = wire.Envelope.completion(call.model, self._clock())
        if call.stream:
            events, stream = self._runner.generate(call.request, started=started)
            sse_headers(resp)
            resp.stream = sse(events, stream, envelope, call.include_usage, text_chunk)
            return
        watch = watch_of(req)
        done = [fold(*self._runner.generate(request, started=started), watch) for request in call.requests]
        choices = [wire.text_choice(c.text, c.finish_reason, i) for i, c in enumerate(done)]
        resp.media = envelope.wrap(choices, usage=wire.usage(wire.add_usage([c.usage for c in done])))


class Embeddings:
    def __init__(self, runner: Runner, max_body: int = MAX_BODY_BYTES) -> None:
        self._runner = runner
        self._max_body = max_body

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        call, encoding = wire.parse_embeddings(read_json(req, self._max_body))
        result = self._runner.embed(call.request)
        resp.media = wire.embeddings(result.vectors, call.model, result.usage.prompt_tokens, encoding,
                                     call.dimensions)


class Models:
    def __init__(self, runner: Runner) -> None:
        self._services = runner.services

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = wire.model_list(self._services.list_models())

    def on_get_one(self, req: falcon.Request, resp: falcon.Response, model: str) -> None:
        resp.media = wire.model_entry(self._services.show(wire.store_name(model)))


def chat_chunk(text: str, reason: FinishReason | None) -> dict[str, Any]:
    return wire.chat_delta({"content": text} if reason is None else {}, reason)


def text_chunk(text: str, reason: FinishReason | None) -> dict[str, Any]:
    return wire.text_choice(text, reason)


def sse(events: Iterator[TokenEvent], stream: GenerationStream, envelope: wire.Envelope,
        include_usage: bool, chunk: Chunk, first: dict[str, Any] | None = None) -> Iterator[bytes]:
    """The chunks of one streamed answer: an optional opening delta (the chat role),
    one chunk per text delta, a finish chunk, the usage chunk when asked, [DONE]."""
    extra: dict[str, Any] = {"usage": None} if include_usage else {}
    try:
        if first is not None:
            yield event(envelope.wrap([wire.chat_delta({**first, "content": ""})], **extra))
        for item in events:
            if item.text:
                yield event(envelope.wrap([chunk(item.text, None)], **extra))
            if item.done:
                yield event(envelope.wrap([chunk("", item.finish_reason)], **extra))
                if include_usage:
                    yield event(envelope.wrap([], usage=wire.usage(item.usage or Usage())))
                yield SSE_DONE
                return
        raise RuntimeError("the generation stream ended without a final event")
    except Exception as exc:  # the status is already sent: report it in the stream
        status = status_of(exc) if isinstance(exc, ModelportError) else 500
        yield event(openai_error(log_unexpected(exc, "generation"), status))
    finally:
        stream.close()

