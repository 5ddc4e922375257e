"""The OpenAI-compatible routes: ``/v1/chat/completions``, ``/v1/completions``,
``/v1/embeddings``, ``/v1/models`` and ``/v1/models/{id}``.

Streams are server-sent events ending with ``data: [DONE]``; an error after the
stream began is one last ``data: {"error": {...}}`` event.
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol, Sequence

import falcon

from modelport.domain import Completion, ModelportError, TokenEvent, Usage
from modelport.ports import GenerationStream

from . import logprobs
from . import openai_schemas as wire
from .disconnect import fold, watch_of
from .errors import openai_error, status_of
from .inference import Runner
from .logprobs import TokenTexts
from .resources import MAX_BODY_BYTES, read_json
from .schemas import Clock
from .streaming import SSE_DONE, event, log_unexpected, sse_headers
from .tools import openai_calls


class Chunk(Protocol):
    """Builds one choice object of a stream chunk."""

    logprobs: bool

    def __call__(self, index: int, item: TokenEvent) -> dict[str, Any]: ...


class ChatCompletions:
    def __init__(self, runner: Runner, clock: Clock, max_body: int = MAX_BODY_BYTES) -> None:
        self._runner = runner
        self._clock = clock
        self._max_body = max_body

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        services = self._runner.services
        body = read_json(req, self._max_body)
        model = services.show(wire.model_name(body))  # the request's one store lookup
        call = wire.parse_chat(body, wire.openai_policy(services, model), model.name)
        runs = self._runner.generate_many(
            call.request, call.n, model=model, started=getattr(req.context, "started", None)
        )
        texts = self._runner.token_texts(model) if call.logprobs is not None else None
        if call.stream:
            envelope = wire.Envelope.chat(call.model, self._clock(), chunk=True)
            sse_headers(resp)
            resp.stream = sse(
                runs, envelope, call.include_usage, ChatChunks(texts, call.logprobs), first={"role": "assistant"}
            )
            return
        done = [fold(*run, watch_of(req)) for run in runs]
        envelope = wire.Envelope.chat(call.model, self._clock())
        choices = [
            wire.chat_message(c.text, c.finish_reason, i, _chat_logprobs(c, texts, call.logprobs), calls=c.tool_calls)
            for i, c in enumerate(done)
        ]
        resp.media = envelope.wrap(choices, usage=wire.usage(_choices_usage([done])))


class Completions:
    def __init__(self, runner: Runner, clock: Clock, max_body: int = MAX_BODY_BYTES) -> None:
        self._runner = runner
        self._clock = clock
        self._max_body = max_body

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        services = self._runner.services
        body = read_json(req, self._max_body)
        model = services.show(wire.model_name(body))  # the request's one store lookup
        call = wire.parse_completion(body, wire.openai_policy(services, model), model.name)
        started = getattr(req.context, "started", None)
        envelope = wire.Envelope.completion(call.model, self._clock())
        texts = self._runner.token_texts(model) if call.logprobs is not None else None
        if call.stream:
            runs = self._runner.generate_many(call.request, call.n, model=model, started=started)
            sse_headers(resp)
            resp.stream = sse(runs, envelope, call.include_usage, TextChunks(texts, call.logprobs))
            return
        watch = watch_of(req)
        done = [
            [fold(*run, watch) for run in self._runner.generate_many(request, call.n, model=model, started=started)]
            for request in call.requests
        ]
        choices = []
        for c in (c for group in done for c in group):
            legacy = None
            if texts is not None and call.logprobs is not None:
                legacy = logprobs.openai_legacy(logprobs.of_completion(c), texts, call.logprobs)
            choices.append(wire.text_choice(c.text, c.finish_reason, len(choices), legacy))
        resp.media = envelope.wrap(choices, usage=wire.usage(_choices_usage(done)))


def _chat_logprobs(done: Completion, texts: TokenTexts | None, top: int | None) -> dict[str, Any] | None:
    if texts is None or top is None:
        return None
    return logprobs.openai_chat(logprobs.of_completion(done), texts, top)


def _choices_usage(groups: Sequence[Sequence[Completion]]) -> Usage:
    """One prompt's tokens per group of choices (the choices share the prompt), every
    choice's completion tokens."""
    return Usage(
        prompt_tokens=sum(group[0].usage.prompt_tokens for group in groups if group),
        cached_tokens=sum(group[0].usage.cached_tokens for group in groups if group),
        completion_tokens=sum(c.usage.completion_tokens for group in groups for c in group),
    )


class Embeddings:
    def __init__(self, runner: Runner, max_body: int = MAX_BODY_BYTES) -> None:
        self._runner = runner
        self._max_body = max_body

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        call, encoding = wire.parse_embeddings(read_json(req, self._max_body))
        result = self._runner.embed(call.request)
        resp.media = wire.embeddings(result.vectors, call.model, result.usage.prompt_tokens, encoding, call.dimensions)


class Models:
    def __init__(self, runner: Runner) -> None:
        self._services = runner.services

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = wire.model_list(self._services.list_models())

    def on_get_one(self, req: falcon.Request, resp: falcon.Response, model: str) -> None:
        resp.media = wire.model_entry(self._services.show(wire.store_name(model)))


class ChatChunks:
    """A chat stream's choice objects: content deltas, with each token's
    log-probabilities when asked."""

    def __init__(self, texts: TokenTexts | None, top: int | None) -> None:
        self._texts, self._top = texts, top

    @property
    def logprobs(self) -> bool:
        return self._texts is not None and self._top is not None

    def __call__(self, index: int, item: TokenEvent) -> dict[str, Any]:
        if item.done:
            return wire.chat_delta({"content": item.text} if item.text else {}, item.finish_reason, index)
        entries = None
        if self._texts is not None and self._top is not None:
            entries = logprobs.openai_chat(logprobs.of_event(item), self._texts, self._top)
        return wire.chat_delta({"content": item.text}, None, index, entries)


class TextChunks:
    """A completion stream's choice objects, with the legacy log-probabilities
    (their text offsets counted per choice) when asked."""

    def __init__(self, texts: TokenTexts | None, top: int | None) -> None:
        self._texts, self._top = texts, top
        self._offsets: dict[int, int] = {}

    @property
    def logprobs(self) -> bool:
        return self._texts is not None and self._top is not None

    def __call__(self, index: int, item: TokenEvent) -> dict[str, Any]:
        legacy = None
        if self._texts is not None and self._top is not None and not item.done:
            offset = self._offsets.get(index, 0)
            legacy = logprobs.openai_legacy(logprobs.of_event(item), self._texts, self._top, offset)
            self._offsets[index] = offset + sum(len(t) for t in legacy["tokens"])
        return wire.text_choice(item.text, item.finish_reason, index, legacy)


Run = tuple[Iterator[TokenEvent], GenerationStream]


def sse(
    runs: Sequence[Run], envelope: wire.Envelope, include_usage: bool, chunk: Chunk, first: dict[str, Any] | None = None
) -> Iterator[bytes]:
    """The chunks of one streamed answer of one or more choices: an optional opening
    delta per choice (the chat role), one chunk per text delta (or per token, with
    log-probabilities), one per completed tool call (``delta.tool_calls``), a finish
    chunk per choice, the usage chunk when asked, [DONE]."""
    extra: dict[str, Any] = {"usage": None} if include_usage else {}
    finals: list[Usage] = []
    called: dict[int, int] = {}  # tool calls sent so far, per choice
    try:
        if first is not None:
            for index in range(len(runs)):
                yield event(envelope.wrap([wire.chat_delta({**first, "content": ""}, index=index)], **extra))
        for index, item in interleaved([events for events, _ in runs]):
            if not item.done and (item.text or (chunk.logprobs and item.token_id is not None)):
                yield event(envelope.wrap([chunk(index, item)], **extra))
            if item.tool_calls:
                delta = {"tool_calls": openai_calls(item.tool_calls, called.get(index, 0), streamed=True)}
                yield event(envelope.wrap([wire.chat_delta(delta, index=index)], **extra))
                called[index] = called.get(index, 0) + len(item.tool_calls)
            if item.done:
                if called.get(index):
                    if item.text:
                        yield event(envelope.wrap([wire.chat_delta({"content": item.text}, index=index)], **extra))
                    last = wire.chat_delta({}, item.finish_reason, index=index, called=True)
                else:
                    last = chunk(index, item)
                yield event(envelope.wrap([last], **extra))
                finals.append(item.usage or Usage())
        if include_usage:
            total = Usage(
                prompt_tokens=finals[0].prompt_tokens if finals else 0,
                cached_tokens=finals[0].cached_tokens if finals else 0,
                completion_tokens=sum(u.completion_tokens for u in finals),
            )
            yield event(envelope.wrap([], usage=wire.usage(total)))
        yield SSE_DONE
    except Exception as exc:  # the status is already sent: report it in the stream
        status = status_of(exc) if isinstance(exc, ModelportError) else 500
        yield event(openai_error(log_unexpected(exc, "generation"), status))
    finally:
        for _, stream in runs:
            stream.close()


def interleaved(streams: Sequence[Iterator[TokenEvent]]) -> Iterator[tuple[int, TokenEvent]]:
    """(choice index, event) from every stream in turn, until each has given its
    final event. The choices decode together, so taking them in turn waits little."""
    open_ = list(range(len(streams)))
    while open_:
        for index in list(open_):
            item = next(streams[index], None)
            if item is None:
                raise RuntimeError("the generation stream ended without a final event")
            if item.done:
                open_.remove(index)
            yield index, item
