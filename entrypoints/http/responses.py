"""``/v1/responses``: OpenAI's Responses API over the generation core.

``POST /v1/responses`` answers one ``response`` object, or (``stream: true``)
server-sent events in the Responses order: ``response.created``,
``response.in_progress``, ``response.output_item.added``,
``response.content_part.added``, one ``response.output_text.delta`` per text
delta, ``response.output_text.done``, ``response.content_part.done``,
``response.output_item.done``, then ``response.completed`` (``response.incomplete``
when ``max_output_tokens`` cut it short). An error after the stream began is an
``error`` event, then ``response.failed``.

``text.format`` (a JSON schema, JSON mode) and function ``tools`` are chat
completions' own (``tools.py`` reads their Responses shapes): each call the model
makes is a ``function_call`` output item, streamed as ``response.output_item.added``,
``response.function_call_arguments.delta`` (the whole arguments: the core gives a
call once it is complete), ``response.function_call_arguments.done``,
``response.output_item.done``. ``function_call`` and ``function_call_output``
input items carry a tool round trip back in, as does ``previous_response_id``.

Stored responses (``store``, true unless false) give ``previous_response_id`` its
conversation: they are kept in this server process's memory, at most
``capacity`` of them and each for ``ttl`` seconds after it was made, and
``GET``/``DELETE /v1/responses/{id}`` read and forget one.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from typing import Any, Callable, Iterator

import attrs
import falcon

from modelport.domain import (
    ChatMessage,
    Completion,
    ModelportError,
    Role,
    TokenEvent,
    ToolCall,
    Usage,
    canonical_json_text,
)
from modelport.ports import GenerationStream

from . import logprobs
from . import responses_schemas as wire
from .openai_schemas import openai_policy
from .errors import status_of
from .inference import Runner
from .logprobs import TokenTexts
from .resources import MAX_BODY_BYTES, read_json
from .schemas import Clock
from .streaming import SSE, log_unexpected

STORE_CAPACITY = 1000
STORE_TTL_S = 3600.0


@attrs.frozen
class Stored:
    """A stored response: the conversation it ends (without its instructions,
    which apply to it alone, as OpenAI does) and the object it answered."""

    history: tuple[ChatMessage, ...]
    response: dict[str, Any]
    expires: float


class ResponseStore:
    """The last ``capacity`` stored responses, each for ``ttl`` seconds. Thread safe."""

    def __init__(
        self, capacity: int = STORE_CAPACITY, ttl: float = STORE_TTL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if capacity < 1 or ttl <= 0:
            raise ValueError("capacity and ttl must be positive")
        self.capacity, self.ttl = capacity, ttl
        self._clock = clock
        self._items: collections.OrderedDict[str, Stored] = collections.OrderedDict()
        self._lock = threading.Lock()

    def put(self, response_id: str, history: tuple[ChatMessage, ...], response: dict[str, Any]) -> None:
        with self._lock:
            self._expire()
            self._items[response_id] = Stored(history, response, self._clock() + self.ttl)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def get(self, response_id: str) -> Stored:
        with self._lock:
            self._expire()
            stored = self._items.get(response_id)
        if stored is None:
            raise falcon.HTTPNotFound(
                description=(
                    f"response '{response_id}' not found; responses are kept in the server's memory for "
                    f"{self.ttl:g} s (the last {self.capacity}), and not at all with store: false"
                )
            )
        return stored

    def delete(self, response_id: str) -> None:
        self.get(response_id)
        with self._lock:
            self._items.pop(response_id, None)

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._items)

    def _expire(self) -> None:
        now = self._clock()
        while self._items:
            first = next(iter(self._items.values()))
            if first.expires > now:
                break
            self._items.popitem(last=False)


class Responses:
    def __init__(
        self, runner: Runner, clock: Clock, store: ResponseStore | None = None, max_body: int = MAX_BODY_BYTES
    ) -> None:
        self._runner = runner
        self._clock = clock
        self._store = store or ResponseStore()
        self._max_body = max_body

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, self._max_body)
        services = self._runner.services
        model = services.show(wire.model_name(body))  # the request's one store lookup
        call = wire.parse(body, openai_policy(services, model))
        history = self._store.get(call.previous_response_id).history if call.previous_response_id else ()
        request = call.request(history)
        events, stream = self._runner.generate(request, model=model, started=getattr(req.context, "started", None))
        texts = self._runner.token_texts(model) if call.logprobs is not None else None
        before = history + wire.named_results(history, call.input)
        answer = _Answer(call, self._clock(), texts, before, self._store)
        if call.stream:
            resp.content_type = SSE
            resp.set_header("Cache-Control", "no-cache")
            resp.set_header("X-Accel-Buffering", "no")
            resp.stream = answer.events(events, stream)
            return
        try:
            done = Completion.fold(events)
        finally:
            stream.close()
        resp.media = answer.finished(done.text, done, logprobs.of_completion(done))

    def on_get_one(self, req: falcon.Request, resp: falcon.Response, response_id: str) -> None:
        resp.media = self._store.get(response_id).response

    def on_delete_one(self, req: falcon.Request, resp: falcon.Response, response_id: str) -> None:
        self._store.delete(response_id)
        resp.media = {"id": response_id, "object": "response", "deleted": True}


class _Answer:
    """One response being made: its ids, its events, and storing it at the end.
    ``before``: the conversation it answers, without the instructions."""

    def __init__(
        self,
        call: wire.ResponsesCall,
        created: float,
        texts: TokenTexts | None,
        before: tuple[ChatMessage, ...],
        store: ResponseStore,
    ) -> None:
        self.call, self.created, self.texts = call, created, texts
        self.before, self.store = before, store
        self.id, self.item_id = wire.new_ids()
        self._sequence = 0

    def _logprobs(self, entries: list[logprobs.TokenLogprob]) -> list[dict[str, Any]] | None:
        if self.texts is None or self.call.logprobs is None:
            return None
        return logprobs.openai_content(entries, self.texts, self.call.logprobs)

    def _response(self, status: str, output: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return wire.response(self.call, self.id, self.created, status=status, output=output, **extra)

    def finished(
        self,
        text: str,
        done: Completion,
        entries: list[logprobs.TokenLogprob],
        output: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """The final response, stored when asked. ``output``: the items as they
        were streamed; None: a message with the text (when there is text, or no
        call), then one ``function_call`` item per call."""
        status = wire.status_of(done.finish_reason)
        calls = self.call.kept_calls(done.tool_calls)
        if output is None:
            output = [wire.message_item(self.item_id, status, [wire.text_part(text, self._logprobs(entries))])]
            if calls and not text.strip():
                output = []
            output += [wire.function_call_item(wire.new_item_id("fc"), c) for c in calls]
        body = self._response(status, output, usage_=done.usage)
        if self.call.store:
            reply = ChatMessage(role=Role.ASSISTANT, content=text, tool_calls=calls)
            self.store.put(self.id, self.before + (reply,), body)
        return body

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        return f"event: {kind}\ndata: {payload}\n\n".encode()

    def events(self, events: Iterator[TokenEvent], stream: GenerationStream) -> Iterator[bytes]:
        """The Responses event sequence. A message item opens at its first text
        (``output_item.added``, ``content_part.added``, then ``output_text.delta``
        s) and closes before a call or at the end; each call is its own
        ``function_call`` item: ``output_item.added``, its arguments in one
        ``function_call_arguments.delta``, ``.done``, ``output_item.done``."""
        output: list[dict[str, Any]] = []
        message: _Message | None = None
        texts: list[str] = []
        tokens: list[logprobs.TokenLogprob] = []
        calls: list[ToolCall] = []
        blank = ""  # white space no message holds yet: beside calls, it makes none
        try:
            yield self._event("response.created", response=self._response("in_progress", []))
            yield self._event("response.in_progress", response=self._response("in_progress", []))
            for item in events:
                entries = logprobs.of_event(item)
                tokens += entries
                delta = item.text
                if message is None and self.call.tools and not delta.strip():
                    blank, delta = blank + delta, ""
                if delta or (self.texts is not None and entries and (message or not self.call.tools)):
                    if message is None:
                        message = _Message(self.item_id if not output else wire.new_item_id(), len(output))
                        yield from self._open(message)
                    delta, blank = blank + delta, ""
                    texts.append(delta)
                    message.parts.append(delta)
                    message.entries += entries
                    yield self._event(
                        "response.output_text.delta",
                        **message.where,
                        delta=delta,
                        logprobs=self._logprobs(entries) or [],
                    )
                for call in self.call.kept_calls(calls + list(item.tool_calls))[len(calls) :]:
                    if message is not None:
                        output.append(message.item("completed", self._logprobs(message.entries)))
                        yield from self._close(message, output[-1])
                        message = None
                    calls.append(call)
                    yield from self._call(call, len(output), output)
                if item.done:
                    status = wire.status_of(item.finish_reason)
                    if message is None and not calls:
                        message = _Message(self.item_id, len(output))
                        yield from self._open(message)
                        if blank:
                            texts.append(blank)
                            message.parts.append(blank)
                            yield self._event("response.output_text.delta", **message.where, delta=blank, logprobs=[])
                    if message is not None:
                        output.append(message.item(status, self._logprobs(message.entries)))
                        yield from self._close(message, output[-1])
                    text = "".join(texts)
                    done = Completion(
                        text=text,
                        token_ids=(),
                        finish_reason=item.finish_reason,
                        usage=item.usage or Usage(),
                        tool_calls=tuple(calls),
                    )
                    body = self.finished(text, done, tokens, output)
                    kind = "response.incomplete" if body["status"] == "incomplete" else "response.completed"
                    yield self._event(kind, response=body)
                    return
            raise RuntimeError("the generation stream ended without a final event")
        except Exception as exc:  # the status is already sent: report it in the stream
            message_text = log_unexpected(exc, "response")
            status_code = status_of(exc) if isinstance(exc, ModelportError) else 500
            code = "server_error" if status_code >= 500 else "invalid_request"
            yield self._event("error", code=code, message=message_text, param=None)
            yield self._event(
                "response.failed", response=self._response("failed", [], error={"code": code, "message": message_text})
            )
        finally:
            stream.close()

    def _open(self, message: "_Message") -> Iterator[bytes]:
        yield self._event(
            "response.output_item.added",
            output_index=message.index,
            item=wire.message_item(message.id, "in_progress", []),
        )
        yield self._event("response.content_part.added", **message.where, part=wire.text_part(""))

    def _close(self, message: "_Message", item: dict[str, Any]) -> Iterator[bytes]:
        part = item["content"][0]
        yield self._event(
            "response.output_text.done", **message.where, text=part["text"], logprobs=part.get("logprobs") or []
        )
        yield self._event("response.content_part.done", **message.where, part=part)
        yield self._event("response.output_item.done", output_index=message.index, item=item)

    def _call(self, call: ToolCall, index: int, output: list[dict[str, Any]]) -> Iterator[bytes]:
        item_id = wire.new_item_id("fc")
        arguments = canonical_json_text(call.arguments)
        where = {"item_id": item_id, "output_index": index}
        yield self._event(
            "response.output_item.added",
            output_index=index,
            item=wire.function_call_item(item_id, call, "in_progress", arguments=""),
        )
        yield self._event("response.function_call_arguments.delta", **where, delta=arguments)
        yield self._event("response.function_call_arguments.done", **where, arguments=arguments)
        output.append(wire.function_call_item(item_id, call))
        yield self._event("response.output_item.done", output_index=index, item=output[-1])


class _Message:
    """A message output item being streamed: its text and its tokens so far."""

    def __init__(self, item_id: str, index: int) -> None:
        self.id, self.index = item_id, index
        self.parts: list[str] = []
        self.entries: list[logprobs.TokenLogprob] = []

    @property
    def where(self) -> dict[str, Any]:
        return {"item_id": self.id, "output_index": self.index, "content_index": 0}

    def item(self, status: str, entries: list[dict[str, Any]] | None) -> dict[str, Any]:
        return wire.message_item(self.id, status, [wire.text_part("".join(self.parts), entries)])
