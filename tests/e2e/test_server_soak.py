"""A soak: 16 clients on mixed routes for a bounded time against ``serve()`` (the
real gunicorn with modelport's worker, over the fake app), some of them careless
(they leave mid-answer, send malformed bodies or half a head). Every answer must
be the expected one and none a 5xx; the worker's RSS growth and the latencies are
reported in the log, not asserted."""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import httpx
import pytest
from processes import free_port, stop, wait_until_up

pytestmark = pytest.mark.slow
log = logging.getLogger("modelport.tests.soak")

HERE = Path(__file__).resolve().parent
CLIENTS = 16
SOAK_S = 20.0
TIMEOUT_S = 30
REPLY = "The capital of France is Paris."
USER = [{"role": "user", "content": "Capital?"}]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def worker_pid(server_pid: int) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{server_pid}/task/{server_pid}/children", encoding="ascii") as children:
            pids = [int(p) for p in children.read().split()]
        if pids:
            return pids[0]
        time.sleep(0.1)
    raise AssertionError("the server has no worker")


Action = Callable[[httpx.Client, str], None]


def expect(response: httpx.Response, status: int = 200) -> httpx.Response:
    if response.status_code != status:
        raise AssertionError(
            f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text[:200]}"
        )
    return response


def health(client, url):
    assert expect(client.get("/health")).json()["status"] == "ok"


def tags(client, url):
    assert "fake:latest" in {m["name"] for m in expect(client.get("/api/tags")).json()["models"]}


def models(client, url):
    expect(client.get("/v1/models"))


def generate_whole(client, url):
    body = {"model": "fake", "prompt": "Capital?", "stream": False, "options": {"temperature": 0}}
    assert expect(client.post("/api/generate", json=body)).json()["response"] == REPLY


def generate_streamed(client, url):
    body = {"model": "fake", "prompt": "Capital?", "options": {"temperature": 0}}
    with client.stream("POST", "/api/generate", json=body) as response:
        expect(response)
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert "".join(line["response"] for line in lines) == REPLY and lines[-1]["done"]


def chat_whole(client, url):
    body = {"model": "fake", "messages": USER, "stream": False, "options": {"temperature": 0}}
    assert expect(client.post("/api/chat", json=body)).json()["message"]["content"] == REPLY


def openai_chat(client, url):
    body = {"model": "fake", "messages": USER, "temperature": 0}
    assert expect(client.post("/v1/chat/completions", json=body)).json()["choices"][0]["message"]["content"] == REPLY


def openai_stream(client, url):
    body = {"model": "fake", "messages": USER, "temperature": 0, "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        expect(response)
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]"


def embed(client, url):
    assert (
        len(expect(client.post("/api/embed", json={"model": "embedder", "input": ["a", "b"]})).json()["embeddings"])
        == 2
    )


def show(client, url):
    expect(client.post("/api/show", json={"model": "fake"}))


def malformed(client, url):
    expect(
        client.post(
            "/api/generate", content=b'{"model": "fake", "prompt": ', headers={"Content-Type": "application/json"}
        ),
        400,
    )
    expect(client.post("/api/chat", json={"model": "fake", "messages": [{"role": "user", "images": 3}]}), 400)
    expect(client.post("/api/show", json={"model": "/etc/passwd"}), 400)


def leave_mid_stream(client, url):
    body = {"model": "fake", "prompt": "Capital?", "options": {"temperature": 0}}
    with httpx.stream("POST", f"{url}/api/generate", json=body, timeout=TIMEOUT_S) as response:
        expect(response)
        next(response.iter_lines())


def leave_before_the_answer(client, url):
    port = int(url.rsplit(":", 1)[1])
    payload = json.dumps({"model": "fake", "prompt": "Capital?", "stream": False}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
        sock.sendall(
            b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)
        )


def half_a_head(client, url):
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
        sock.sendall(b"GET /api/tags HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ")


ACTIONS: list[Action] = [
    health,
    tags,
    models,
    generate_whole,
    generate_streamed,
    chat_whole,
    openai_chat,
    openai_stream,
    embed,
    show,
    malformed,
    leave_mid_stream,
    leave_before_the_answer,
    half_a_head,
]


def test_sixteen_mixed_clients_get_every_answer(tmp_path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    paths = [str(HERE), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "MODELPORT_HOME": str(tmp_path / "home")}
    server_log = tmp_path / "server.log"
    with server_log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, str(HERE / "fake_app.py"), str(port)], env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        wait_until_up(url, process, server_log)
        pid = worker_pid(process.pid)
        with httpx.Client(base_url=url, timeout=TIMEOUT_S) as warm:
            for action in ACTIONS:
                action(warm, url)
        rss_before = rss_kib(pid)
        latencies: dict[str, list[float]] = defaultdict(list)
        failures: list[str] = []
        lock = threading.Lock()
        deadline = time.monotonic() + SOAK_S

        def client_loop(seed: int) -> None:
            rng = random.Random(seed)
            with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
                while time.monotonic() < deadline:
                    action = rng.choice(ACTIONS)
                    started = time.monotonic()
                    try:
                        action(client, url)
                    except Exception as exc:  # every failure is collected and reported
                        with lock:
                            failures.append(f"{action.__name__}: {type(exc).__name__}: {exc}")
                    with lock:
                        latencies[action.__name__].append(time.monotonic() - started)

        threads = [threading.Thread(target=client_loop, args=(seed,)) for seed in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(SOAK_S + 2 * TIMEOUT_S)
        rss_after = rss_kib(pid)
        count = sum(len(v) for v in latencies.values())
        log.warning(
            "soak: %d clients, %.0f s, %d requests, %d failures; worker RSS %d -> %d KiB (%+.1f%%)",
            CLIENTS,
            SOAK_S,
            count,
            len(failures),
            rss_before,
            rss_after,
            100 * (rss_after - rss_before) / rss_before,
        )
        for name, values in sorted(latencies.items()):
            values.sort()
            log.warning(
                "  %-24s n=%4d  p50 %.3f s  p99 %.3f s  max %.3f s",
                name,
                len(values),
                statistics.median(values),
                values[int(0.99 * (len(values) - 1))],
                values[-1],
            )
        assert failures == [], failures[:10]
        assert process.poll() is None, server_log.read_text()
        assert b"Traceback" not in server_log.read_bytes(), server_log.read_text()[-4000:]
    finally:
        stop(process)
