"""The server under careless and hostile clients, on 127.0.0.1, through modelport's
``serve()`` (the real gunicorn with modelport's worker, over the fake app).

Latencies are written to the log (``-s`` or ``-rP`` shows them), never asserted:
what is asserted is that answers come while the hostile sockets are still held.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from processes import free_port, serving

pytestmark = pytest.mark.slow
log = logging.getLogger("modelport.tests.hostile")

HERE = Path(__file__).resolve().parent
TIMEOUT_S = 30
CLIENT_TIMEOUT_S = 2  # the server's MODELPORT_CLIENT_TIMEOUT here
SILENT_SOCKETS = 64
SLOW_HEADER_CLIENTS = 16
SLOW_HEAD = b"GET /api/tags HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: " + b"s" * 200 + b"\r\n\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[dict[str, Path | str]]:
    """The server's URL, its MODELPORT_HOME and the HOME it runs with."""
    port = free_port()
    home, user_home = tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("user")
    paths = [str(HERE), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        "MODELPORT_HOME": str(home),
        "HOME": str(user_home),
        "MODELPORT_CLIENT_TIMEOUT": str(CLIENT_TIMEOUT_S),
    }
    env.pop("XDG_RUNTIME_DIR", None)
    log_file = tmp_path_factory.mktemp("hostile") / "server.log"
    command = [sys.executable, str(HERE / "fake_app.py"), str(port)]  # serve(), 4 threads
    with serving(command, port, env, log_file) as address:
        yield {"url": address, "home": home, "user_home": user_home, "port": str(port)}


@pytest.fixture(scope="module")
def url(server) -> str:
    return str(server["url"])


def test_gunicorns_control_socket_is_in_modelport_home(server) -> None:
    # gunicorn's arbiter opens the socket in a thread of its own after it has forked
    # the workers, so the server may answer a moment before the socket is there.
    path = Path(server["home"]) / "run" / f"gunicorn-{server['port']}.ctl"
    deadline = time.monotonic() + TIMEOUT_S
    while not path.is_socket() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.is_socket()
    assert not (Path(server["user_home"]) / ".gunicorn").exists()


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


class Dribbler(threading.Thread):
    """Sends a request head one byte every ``interval`` seconds until stopped."""

    def __init__(self, port: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.interval = interval
        self.stopped = threading.Event()
        self.sent = 0

    def run(self) -> None:
        try:
            for byte in SLOW_HEAD[:-4]:  # never the end of the head
                if self.stopped.wait(self.interval):
                    return
                self.sock.sendall(bytes([byte]))
                self.sent += 1
        except OSError:
            return  # the server closed it (the head took too long)

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)
        self.sock.close()


def timed(call) -> tuple[float, object]:
    started = time.monotonic()
    result = call()
    return time.monotonic() - started, result


def test_silent_and_slow_header_sockets_starve_nothing(url: str) -> None:
    port = port_of(url)
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(SILENT_SOCKETS)]
    dribblers = [Dribbler(port) for _ in range(SLOW_HEADER_CLIENTS)]
    for dribbler in dribblers:
        dribbler.start()
    try:
        time.sleep(1.0)  # every hostile socket is connected and the dribblers have begun
        with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
            health_s, health = timed(lambda: client.get("/health"))
            tags_s, tags = timed(lambda: client.get("/api/tags"))
            body = {"model": "fake", "prompt": "Capital?", "stream": False, "options": {"temperature": 0}}
            generate_s, generated = timed(lambda: client.post("/api/generate", json=body))
        held = sum(dribbler.is_alive() for dribbler in dribblers)
        log.warning(
            "with %d silent and %d slow-header sockets held: /health %.3f s, /api/tags %.3f s, "
            "a generation %.3f s (%d dribblers still sending)",
            SILENT_SOCKETS,
            SLOW_HEADER_CLIENTS,
            health_s,
            tags_s,
            generate_s,
            held,
        )
        assert health.status_code == 200 and tags.status_code == 200
        assert generated.status_code == 200
        assert generated.json()["response"] == "The capital of France is Paris."
        assert held == SLOW_HEADER_CLIENTS  # the answers came while every hostile socket was held
    finally:
        for dribbler in dribblers:
            dribbler.stop()
        for sock in silent:
            sock.close()


def test_a_head_that_never_ends_is_closed(url: str) -> None:
    """A connection that never finishes its head is closed by the server (after
    worker.HEAD_TIMEOUT_S), which the client sees as the end of the stream."""
    with socket.create_connection(("127.0.0.1", port_of(url)), timeout=TIMEOUT_S) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        waited_s, data = timed(lambda: sock.recv(1024))
    log.warning("an unfinished head was closed after %.1f s", waited_s)
    assert data == b""


NON_STREAMED = [
    ("/api/generate", {"model": "slow", "prompt": "Tick?", "stream": False}),
    ("/api/chat", {"model": "slow", "messages": [{"role": "user", "content": "Tick?"}], "stream": False}),
    ("/v1/completions", {"model": "slow", "prompt": "Tick?"}),
    ("/v1/chat/completions", {"model": "slow", "messages": [{"role": "user", "content": "Tick?"}]}),
    ("/v1/generate", {"model": "slow", "prompt": "Tick?"}),
]


@pytest.mark.parametrize(("path", "body"), NON_STREAMED, ids=[p for p, _ in NON_STREAMED])
def test_a_client_that_leaves_a_non_streamed_answer_frees_the_model(url: str, path: str, body: dict) -> None:
    """``slow`` needs 100 s for a whole reply and runs one generation at a time: the
    next request is answered within the client's timeout only if the first one was
    cancelled when its client left."""
    greedy = {"temperature": 0} if path.startswith("/v1/") else {"options": {"temperature": 0}}
    payload = json.dumps({**body, **greedy}).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port_of(url))) as sock:
        sock.sendall(head + payload)
        time.sleep(1.0)  # the generation runs
    left = time.monotonic()
    quick = {"model": "slow", "prompt": "Tick?", "stream": False, "options": {"temperature": 0, "num_predict": 3}}
    with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
        answer = client.post("/api/generate", json=quick)
    log.warning("%s: the next request was answered %.3f s after the first client left", path, time.monotonic() - left)
    assert answer.status_code == 200 and answer.json()["response"] == "tic"


def test_a_chunked_body_is_read(url: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "fake", "prompt": "Capital?", '
        yield b'"stream": false, "options": {"temperature": 0}}'

    answer = httpx.post(f"{url}/api/generate", content=chunks(), timeout=TIMEOUT_S)
    assert answer.status_code == 200, answer.text
    assert answer.json()["response"] == "The capital of France is Paris."


def request_bytes(path: str, body: dict) -> bytes:
    payload = json.dumps(body).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload


def test_a_client_that_stops_reading_a_stream_is_dropped_and_frees_the_model(url: str) -> None:
    """``chatty`` fills the socket of a client that reads nothing: without a send
    timeout the generation would block on it, holding the model, for as long as the
    client keeps the connection open."""
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", port_of(url)))
    try:
        body = {"model": "chatty", "prompt": "Talk.", "options": {"temperature": 0, "num_ctx": 2_000_000}}
        stalled.sendall(request_bytes("/api/generate", body))
        assert stalled.recv(12).startswith(b"HTTP/1.1 200")  # then it reads no more
        quick = {"model": "chatty", "prompt": "Talk.", "stream": False, "options": {"temperature": 0, "num_predict": 3}}
        waited_s, answer = timed(lambda: httpx.post(f"{url}/api/generate", json=quick, timeout=TIMEOUT_S))
        log.warning(
            "a request behind a client that stopped reading was answered after %.1f s (client timeout %s s)",
            waited_s,
            CLIENT_TIMEOUT_S,
        )
        assert answer.status_code == 200 and answer.json()["response"] == "cha"
    finally:
        stalled.close()


def test_stalled_uploads_are_answered_408_and_free_their_threads(url: str) -> None:
    """Bodies larger than the worker reads in its main loop are read by a thread;
    more stalled uploads than there are threads must not block everything."""
    head = (
        b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b'Content-Length: 2000000\r\n\r\n{"model": '
    )
    stalled = [socket.create_connection(("127.0.0.1", port_of(url)), timeout=TIMEOUT_S) for _ in range(6)]
    try:
        for sock in stalled:
            sock.sendall(head)
        body = {"model": "fake", "prompt": "Capital?", "stream": False, "options": {"temperature": 0}}
        waited_s, answer = timed(lambda: httpx.post(f"{url}/api/generate", json=body, timeout=TIMEOUT_S))
        log.warning("with 6 stalled uploads on 4 threads a generation was answered after %.1f s", waited_s)
        assert answer.status_code == 200
        assert stalled[0].recv(12) == b"HTTP/1.1 408"
    finally:
        for sock in stalled:
            sock.close()


def test_huge_prompts_are_refused_by_their_size_and_block_nothing(url: str) -> None:
    prompt = "word " * 3_000_000  # 15 MB: refused before anything tokenizes it
    body = json.dumps({"model": "fake", "prompt": prompt, "stream": False}).encode()

    def refuse() -> tuple[float, httpx.Response]:
        return timed(
            lambda: httpx.post(
                f"{url}/api/generate", content=body, timeout=TIMEOUT_S, headers={"Content-Type": "application/json"}
            )
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        refusals = [pool.submit(refuse) for _ in range(4)]
        time.sleep(0.2)
        tags_s, tags = timed(lambda: httpx.get(f"{url}/api/tags", timeout=TIMEOUT_S))
        answers = [future.result() for future in refusals]
    log.warning(
        "four 15 MB prompts refused in %s s; /api/tags meanwhile in %.3f s",
        ", ".join(f"{seconds:.2f}" for seconds, _ in answers),
        tags_s,
    )
    assert tags.status_code == 200
    for _, answer in answers:
        assert answer.status_code == 400 and "more than a context window" in answer.json()["error"]


def test_a_client_that_waits_for_a_long_non_streamed_answer_gets_it(url: str) -> None:
    """The disconnect watch must tell a waiting client from one that left, even when
    the answer takes longer than the server's client timeout (the socket's timeout
    must not turn a peek into a wait)."""
    body = {
        "model": "slow",
        "prompt": "Tick?",
        "stream": False,
        "options": {"temperature": 0, "num_predict": 100 * (CLIENT_TIMEOUT_S + 1)},
    }
    answer = httpx.post(f"{url}/api/generate", json=body, timeout=TIMEOUT_S)
    assert answer.status_code == 200 and answer.json()["eval_count"] == 100 * (CLIENT_TIMEOUT_S + 1)
