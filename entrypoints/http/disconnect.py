"""Noticing that a client went away while its non-streamed answer is computed.

A streamed answer notices by itself: the next write fails and the WSGI server closes
the body iterable. An answer folded into one object writes nothing until the end, so
:func:`fold` asks the client's socket between events (at most every
``CHECK_INTERVAL_S``): a socket that is readable and whose peek returns no bytes has
been closed by the peer (as Go's net/http and Ollama treat it too). The generation
is then closed, which cancels it at its next step and gives the model back.

gunicorn puts the socket in the WSGI environ as ``gunicorn.socket``; under other
servers (falcon's test client, wsgiref) there is none and nothing is watched.
"""

from __future__ import annotations

import errno
import select
import socket
import ssl
import time
from typing import Any, Callable, Iterable, Iterator, Mapping

import falcon

from modelport.domain import Completion, TokenEvent
from modelport.ports import GenerationStream

CHECK_INTERVAL_S = 0.1
# nginx's "client closed request": what the access log shows for an answer nobody read.
CLIENT_CLOSED_REQUEST = 499

Clock = Callable[[], float]


class ClientGone(Exception):
    """The client closed its connection before its answer was ready."""


class ClientWatch:
    """Whether the peer of ``sock`` has closed the connection, asked at most every
    ``interval`` seconds (a non-blocking peek: no byte is consumed)."""

    def __init__(
        self, sock: socket.socket, *, interval: float = CHECK_INTERVAL_S, clock: Clock = time.monotonic
    ) -> None:
        self._sock = sock
        self._interval = interval
        self._clock = clock
        self._next = clock() + interval
        self._gone = False

    @classmethod
    def of(cls, env: Mapping[str, Any], **kwargs: Any) -> "ClientWatch | None":
        """The watch for a request's WSGI environ; None when the server does not
        hand out its socket."""
        sock = env.get("gunicorn.socket")
        if not isinstance(sock, socket.socket) or isinstance(sock, ssl.SSLSocket) or not hasattr(select, "poll"):
            return None  # a TLS socket cannot be peeked without decrypting
        return cls(sock, **kwargs)

    def gone(self) -> bool:
        """True once the client has gone; cheap between checks."""
        if self._gone:
            return True
        now = self._clock()
        if now < self._next:
            return False
        self._next = now + self._interval
        self._gone = peer_closed(self._sock)
        return self._gone


def peer_closed(sock: socket.socket) -> bool:
    """Whether the peer has closed (or reset) the connection, asked without waiting.
    Bytes waiting to be read (a pipelined request) mean it is still there. ``poll``
    first (``select`` stops at descriptor 1024), so that the peek never waits, even
    on a socket with a timeout (where ``recv`` would wait for that long)."""
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        events = poller.poll(0)
    except (OSError, ValueError):  # closed (fileno -1) or unusable
        return True
    if not events:
        return False  # nothing to read: the client is waiting for its answer
    if events[0][1] & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
        return True
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (BlockingIOError, InterruptedError, TimeoutError):
        return False
    except ConnectionError:
        return True
    except OSError as exc:
        return exc.errno in (errno.EBADF, errno.ENOTCONN)


def watched(events: Iterable[TokenEvent], stream: GenerationStream, watch: ClientWatch | None) -> Iterator[TokenEvent]:
    """``events``, until the client goes: the stream is then closed (the
    generation cancelled) and :class:`ClientGone` raised."""
    for event in events:
        if watch is not None and not event.done and watch.gone():
            stream.close()
            raise ClientGone("the client closed the connection; the generation was cancelled")
        yield event


def fold(events: Iterable[TokenEvent], stream: GenerationStream, watch: ClientWatch | None) -> Completion:
    """The whole completion, the stream closed however the fold ends."""
    try:
        return Completion.fold(watched(events, stream, watch))
    finally:
        stream.close()


def watch_of(req: falcon.Request) -> ClientWatch | None:
    return ClientWatch.of(req.env)


def install(app: falcon.App) -> None:
    """Answer :class:`ClientGone` with 499 (nobody reads it; the access log shows it)."""
    app.add_error_handler(ClientGone, _client_gone)


def _client_gone(req: falcon.Request, resp: falcon.Response, error: ClientGone, params: dict[str, Any]) -> None:
    resp.status = CLIENT_CLOSED_REQUEST
    resp.content_type = falcon.MEDIA_JSON
    resp.text = '{"error": "the client closed the connection"}'
    resp.set_header("Connection", "close")
