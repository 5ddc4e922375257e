"""modelport's gunicorn worker: gthread, except that a connection gets a thread only
once its request has arrived.

gunicorn's gthread worker hands every new (or kept-alive, readable) connection to a
thread, which then blocks reading the request head. A few clients that send their
headers a byte at a time, or connect and send nothing, hold every thread, and then
nothing is answered, ``/health`` included. This worker reads request heads (and
bodies up to :data:`EARLY_BODY_BYTES` with a ``Content-Length``) in the worker's
main loop, without blocking, and hands a connection to a thread only when that is
in; a head not complete within :data:`HEAD_TIMEOUT_S` closes the connection.

Requests are then served on one of two lanes, so that a generation cannot make a
cheap answer wait: ``GET``, ``HEAD`` and ``OPTIONS`` (the model list, ``/health``,
``/api/ps``, ``/metrics``: nothing that computes) get :data:`QUICK_THREADS`
threads of their own; everything else gets the ``threads`` setting's pool.

    gunicorn --worker-class modelport.entrypoints.http.worker.HeadFirstWorker ...

While a thread serves a request, its socket times out after ``client_timeout``
seconds without progress (``MODELPORT_CLIENT_TIMEOUT``, default 60): a client that
stalls its upload, or stops reading a stream (which would otherwise block the
generation, and the model, on a full send buffer), is dropped and its generation
closed.

TLS (``certfile``) and HTTP/2 connections are served exactly as gthread does.
"""

from __future__ import annotations

import errno
import re
import selectors
import time
from collections import deque
from concurrent import futures
from functools import partial
from typing import Any

from gunicorn import http
from gunicorn.workers.gthread import TConn, ThreadWorker

# A client has this long, from its first byte (or its connection), to send a whole
# request head; then the connection is closed.
HEAD_TIMEOUT_S = 10.0
# A head longer than this goes to a thread as it is: gunicorn's parser refuses it.
MAX_HEAD_BYTES = 64 * 1024
# Bodies up to this size (with a Content-Length) are read in the main loop too.
EARLY_BODY_BYTES = 1024 * 1024
# Threads that serve GET, HEAD and OPTIONS, besides the ``threads`` pool.
QUICK_THREADS = 4
QUICK_METHODS = (b"GET", b"HEAD", b"OPTIONS")
# The default of MODELPORT_CLIENT_TIMEOUT.
CLIENT_TIMEOUT_S = 60.0
RECV_BYTES = 64 * 1024

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_CONTENT_LENGTH = re.compile(rb"^content-length[ \t]*:[ \t]*(\S*)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)
_EXPECT_OR_CHUNKED = re.compile(rb"^(expect|transfer-encoding)[ \t]*:", re.IGNORECASE | re.MULTILINE)


def request_arrived(data: bytes | bytearray) -> bool:
    """Whether ``data`` holds a whole request head (and, when it announces a small
    body with Content-Length and no ``Expect``, the whole body), or is so long that
    the parser must judge it."""
    end = _HEAD_END.search(data)
    if end is None:
        return len(data) > MAX_HEAD_BYTES
    head = bytes(data[: end.start()])
    if _EXPECT_OR_CHUNKED.search(head):
        return True  # 100-continue is answered by gunicorn; chunks are read by the app
    lengths = _CONTENT_LENGTH.findall(head)
    if len(lengths) != 1 or not lengths[0].isdigit():
        return True  # none, or a malformed one for the parser to refuse
    length = int(lengths[0])
    return length > EARLY_BODY_BYTES or len(data) - end.end() >= length


def client_timeout(log: Any) -> float:
    """``MODELPORT_CLIENT_TIMEOUT`` as the server's settings read it."""
    from ..config import Settings

    try:
        return Settings.load(dotenv=".env").client_timeout
    except ValueError as exc:
        log.warning("%s; using %s s", exc, CLIENT_TIMEOUT_S)
        return CLIENT_TIMEOUT_S


class HeadFirstWorker(ThreadWorker):
    """gthread with request heads read in the main loop, and a quick lane."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arriving: deque[TConn] = deque()  # oldest first: their deadlines are in order
        self.quick_pool: futures.ThreadPoolExecutor | None = None
        self.client_timeout = CLIENT_TIMEOUT_S

    def init_process(self) -> None:
        self.quick_pool = futures.ThreadPoolExecutor(max_workers=QUICK_THREADS, thread_name_prefix="modelport-quick")
        self.client_timeout = client_timeout(self.log)
        super().init_process()

    def handle_request(self, req: Any, conn: TConn) -> bool:
        """gthread's, with the socket timing out on a stalled client."""
        conn.sock.settimeout(self.client_timeout)
        try:
            return super().handle_request(req, conn)
        except TimeoutError:
            self.log.info("dropped %s: no progress for %s s", conn.client, self.client_timeout)
            return False

    def _head_first(self) -> bool:
        prior_knowledge = getattr(self.cfg, "http2_cleartext", None) in ("prior-knowledge", "both")
        return not self.cfg.is_ssl and not prior_knowledge

    # -- connections arrive, or come back from keep-alive ---------------------------------

    def accept(self, listener: Any) -> None:
        if not self._head_first():
            return super().accept(listener)
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        self._await_request(TConn(self.cfg, client_sock, client_addr, listener.getsockname()))

    def on_client_socket_readable(self, conn: TConn, client: Any) -> None:
        if not self._head_first():
            return super().on_client_socket_readable(conn, client)
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._await_request(conn)
        self._read(conn, client)  # it is readable now

    def _await_request(self, conn: TConn) -> None:
        conn.sock.setblocking(False)
        conn.arrived = bytearray()
        conn.head_deadline = time.monotonic() + HEAD_TIMEOUT_S
        self.arriving.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._read, conn))

    def _read(self, conn: TConn, client: Any) -> None:
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client left before its request was in
            self._drop(conn)
            return
        conn.arrived += data
        if request_arrived(conn.arrived):
            self._stop_waiting(conn)
            self._dispatch(conn)

    def _dispatch(self, conn: TConn) -> None:
        data = bytes(conn.arrived)
        conn.arrived = None
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
        conn.parser.unreader.unread(data)
        conn.data_ready = True  # gthread must not wait for bytes that are already here
        conn.quick = data.split(b" ", 1)[0] in QUICK_METHODS
        self.enqueue_req(conn)

    def enqueue_req(self, conn: TConn) -> None:
        if not getattr(conn, "quick", False) or self.quick_pool is None:
            return super().enqueue_req(conn)
        conn.quick = False  # a later request on this connection is judged afresh
        done = self.quick_pool.submit(self.handle, conn)
        done.add_done_callback(lambda fut: self.method_queue.defer(self.finish_request, conn, fut))

    # -- timeouts and shutdown -------------------------------------------------------------

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        while self.arriving and (self.arriving[0].head_deadline <= now):
            self._drop(self.arriving[0])
        if not self.alive:  # stopping: nobody is owed an answer for a request not begun
            for conn in [c for c in self.arriving if not c.arrived]:
                self._drop(conn)

    def run(self) -> None:
        try:
            super().run()
        finally:
            while self.arriving:
                self.arriving.popleft().close()
            if self.quick_pool is not None:
                self.quick_pool.shutdown(wait=False)

    def _stop_waiting(self, conn: TConn) -> None:
        self.arriving.remove(conn)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass

    def _drop(self, conn: TConn) -> None:
        self._stop_waiting(conn)
        self.nr_conns -= 1
        conn.close()
