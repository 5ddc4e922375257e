"""Rendering a generation: NDJSON lines (or server-sent events) while it runs, or
one object at the end.

Either way the :class:`GenerationStream` is closed when the answer ends, however it
ends: when a client disconnects, the WSGI server closes the body iterable, the
generator below runs its ``finally`` and the generation is cancelled.
"""

from __future__ import annotations

import itertools
import json
import logging
from typing import Any, Iterator

from modelport.domain import ModelportError, TokenEvent, Usage
from modelport.ports import GenerationStream

from .disconnect import ClientWatch, fold
from .errors import message_of
from .logprobs import of_completion, of_event
from .schemas import Reply, error

NDJSON = "application/x-ndjson"
log = logging.getLogger("modelport.http")


def started(stream: GenerationStream) -> Iterator[TokenEvent]:
    """Run the generation up to its first event, so that what fails at the start
    (the prompt is too long, the engine breaks) fails with a real HTTP status."""
    first = next(stream, None)
    if first is None:
        stream.close()
        raise RuntimeError("the generation stream ended without a final event")
    return itertools.chain([first], stream)


def ndjson(events: Iterator[TokenEvent], stream: GenerationStream, reply: Reply) -> Iterator[bytes]:
    """One line per non-empty text delta, then the final line (or an error line)."""
    try:
        for event in events:
            if event.text or event.tool_calls or (reply.logprobs is not None and event.token_id is not None):
                yield line(reply.chunk(event.text, of_event(event), event.tool_calls))
            if event.finish_reason is not None:
                yield line(reply.final("", event.finish_reason, event.usage or Usage()))
                return
        raise RuntimeError("the generation stream ended without a final event")
    except Exception as exc:  # the status is already sent: report it in the stream
        yield line(error(log_unexpected(exc, "generation")))
    finally:
        stream.close()


def log_unexpected(exc: BaseException, what: str) -> str:
    """The message to send for an error met mid-stream; a bug is logged in full."""
    if not isinstance(exc, ModelportError):
        log.error("%s failed mid-stream", what, exc_info=exc)
    return message_of(exc)


def whole(
    events: Iterator[TokenEvent], stream: GenerationStream, reply: Reply, watch: ClientWatch | None = None
) -> dict[str, Any]:
    """The answer to ``"stream": false``: the whole text and the final metrics. The
    generation is cancelled if the client leaves meanwhile (``watch``)."""
    completion = fold(events, stream, watch)
    return reply.final(
        completion.text, completion.finish_reason, completion.usage, of_completion(completion), completion.tool_calls
    )


def line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


# -- server-sent events (the OpenAI routes and /v1/generate_stream) -----------------------

SSE = "text/event-stream"
SSE_DONE = b"data: [DONE]\n\n"


def event(obj: dict[str, Any]) -> bytes:
    """One SSE event carrying ``obj`` as JSON."""
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def sse_headers(resp: Any) -> None:
    resp.content_type = SSE
    resp.set_header("Cache-Control", "no-cache")
    resp.set_header("X-Accel-Buffering", "no")  # proxies: do not hold events back
