"""The commands that talk to a server (ps, stop, cache, and the others with --url),
and serve/deploy themselves, through main(argv) with fakes.

The server is modelport's own Falcon application over the fake services, served on
127.0.0.1 by wsgiref in a thread, so a test sees both sides; ``serve`` itself runs in
a forked child (hence the e2e tier).
"""

from __future__ import annotations

import io
import json
import re
import multiprocessing
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from modelport.adapters.fake import InMemorySessionRepository, fake_model
from modelport.domain import EmbeddingRequest, ModelFile, ModelFormat, ModelRef, PullProgress
from modelport.entrypoints.bootstrap import bootstrap
from modelport.entrypoints.cli import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, main
from modelport.entrypoints.http.app import create_app
from modelport.ports import EngineSpec

REPLY = "The capital of France is Paris."
SERVER_WAIT_S = 20.0


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(services, *argv: str, stdin: io.StringIO | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), services=services, out=out, err=err, stdin=stdin or io.StringIO())
    return code, out.getvalue(), err.getvalue()


# -- the test server ------------------------------------------------------------------------


class Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


class TinySource:
    def fetch(self, ref, folder, progress):
        data = b"weights"
        progress(PullProgress(status="pulling", file="model.bin", completed=0, total=len(data)))
        Path(folder, "model.bin").write_bytes(data)
        progress(PullProgress(status="pulling", file="model.bin", completed=len(data), total=len(data)))
        return [ModelFile(path="model.bin", size=len(data))]

    def search(self, query, **filters):
        return []


@pytest.fixture
def server_services(settings, fake_store, engine_box):
    spec = EngineSpec(name="fake", formats=set(ModelFormat), factory=engine_box)
    return bootstrap(
        settings, store=fake_store, engines=[spec], source=TinySource(), sessions=InMemorySessionRepository()
    )


@pytest.fixture
def url(server_services, settings) -> Iterator[str]:
    app = create_app(server_services, settings)
    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        server_services.close()


def loaded(services) -> list[str]:
    return sorted(r.model.name for r in services.loaded())


# -- ps, stop, cache ------------------------------------------------------------------------


def test_preload_ps_and_stop(server_services, url) -> None:
    code, out, _ = run(None, "cache", "preload", "fake", "--url", url)
    assert code == EXIT_OK and out == "loaded 'fake'\n" and loaded(server_services) == ["fake:latest"]
    code, out, _ = run(None, "ps", "--url", url)
    header, row = out.splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "REFS", "SLOTS", "UNTIL"]
    assert row.startswith("fake:latest") and "100% CPU" in row and "minutes from now" in row
    assert re.search(r"\b4096\s+0\s+0/\d+\s", row)  # CONTEXT, REFS (no request using it), SLOTS (none busy)
    code, out, _ = run(None, "ps", "--json", "--url", url)
    assert [m["name"] for m in json.loads(out)] == ["fake:latest"]
    code, out, _ = run(None, "stop", "fake", "--url", url)
    assert code == EXIT_OK and out == "stopped 'fake'\n" and loaded(server_services) == []
    code, out, _ = run(None, "ps", "--url", url)
    assert out.splitlines()[1:] == []


def test_the_address_comes_from_modelport_host_too(server_services, url, monkeypatch) -> None:
    monkeypatch.setenv("MODELPORT_HOST", url)
    code, out, _ = run(None, "cache", "preload", "embedder")
    assert code == EXIT_OK and loaded(server_services) == ["embedder:latest"]


def test_cache_stats_evict_and_clear(server_services, url) -> None:
    for name in ("fake", "embedder"):
        assert run(None, "cache", "preload", name, "--url", url)[0] == EXIT_OK
    code, out, _ = run(None, "cache", "stats", "--url", url)
    assert code == EXIT_OK and f"server            {url}" in out and "status            ok" in out
    assert "resident          2 model(s)" in out and "embedder:latest" in out
    stats = json.loads(run(None, "cache", "stats", "--json", "--url", url)[1])
    assert stats["health"]["status"] == "ok" and len(stats["models"]) == 2
    code, out, _ = run(None, "cache", "evict", "embedder", "--url", url)
    assert code == EXIT_OK and out == "evicted 'embedder'\n" and loaded(server_services) == ["fake:latest"]
    run(None, "cache", "preload", "embedder", "--url", url)
    code, out, _ = run(None, "cache", "clear", "--url", url)
    assert code == EXIT_OK and "evicted 'fake:latest'" in out and "evicted 'embedder:latest'" in out
    assert loaded(server_services) == []
    code, out, _ = run(None, "cache", "clear", "--url", url)
    assert out == "no model was loaded\n"


def test_server_errors_become_statuses(url) -> None:
    code, _, err = run(None, "stop", "nope", "--url", url)
    assert code == EXIT_NOT_FOUND and "model 'nope' not found" in err
    code, _, err = run(None, "cache", "preload", "a//b", "--url", url)
    assert code == EXIT_USAGE and "invalid model name" in err


def test_cache_max_sets_the_limit_for_the_next_server(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("MODELPORT_PORT=12000\nMODELPORT_MAX_RESIDENT_MODELS=9\n")
    code, out, _ = run(None, "cache", "max", "2")
    assert code == EXIT_OK and "keeps the limit it started with" in out
    assert "MODELPORT_MAX_RESIDENT_MODELS=2" in out and "--max-models 2" in out
    assert (tmp_path / ".env").read_text() == "MODELPORT_PORT=12000\nMODELPORT_MAX_RESIDENT_MODELS=2\n"
    settings = json.loads(run(None, "config", "--json")[1])
    assert settings["max_resident_models"] == {"value": "2", "source": ".env (MODELPORT_MAX_RESIDENT_MODELS)"}
    code, _, err = run(None, "cache", "max", "0")
    assert code == EXIT_USAGE and "max must be at least 1" in err


# -- the other commands through --url ----------------------------------------------------------


def test_list_show_and_generate_through_the_server(url, engine_box) -> None:
    code, out, _ = run(None, "list", "--url", url)
    assert code == EXIT_OK and "fake:latest" in out and "embedder:latest" in out
    info = json.loads(run(None, "show", "fake", "--json", "--url", url)[1])
    assert info["architecture"] == "fake" and info["quantization"] == "F32"
    code, out, err = run(None, "generate", "fake", "capital?", "--temperature", "0", "--url", url, "--verbose")
    assert (code, out) == (EXIT_OK, REPLY + "\n") and "eval count:           31 token(s)" in err
    assert engine_box.last.prompts[-1] == "<|user|>capital?\n<|assistant|>"
    answer = json.loads(run(None, "run", "fake", "hi", "--json", "--temperature", "0", "--url", url)[1])
    assert answer["response"] == REPLY and answer["done_reason"] == "stop"
    code, out, _ = run(
        None, "generate", "fake", "raw text", "--raw", "--max-tokens", "3", "--temperature", "0", "--url", url
    )
    assert out == "The\n" and engine_box.last.prompts[-1] == "raw text"


def test_the_models_own_defaults_apply_through_the_server(url, fake_store, engine_box) -> None:
    fake_store.add(fake_model("tuned:latest", default_options={"temperature": 0.0, "num_predict": 3}))
    code, out, _ = run(None, "generate", "tuned", "hi", "--url", url)
    assert (code, out) == (EXIT_OK, "The\n")


def test_chat_through_the_server(url, engine_box) -> None:
    code, out, _ = run(None, "chat", "fake", "--temperature", "0", "--url", url, stdin=Tty("hello\nand then?\n/bye\n"))
    assert code == EXIT_OK and out.count(REPLY) == 2
    assert engine_box.last.prompts[-1] == f"<|user|>hello\n<|assistant|>{REPLY}\n<|user|>and then?\n<|assistant|>"


def test_embed_pull_copy_and_remove_through_the_server(url, server_services, fake_store) -> None:
    code, out, _ = run(None, "embed", "embedder", "a text", "--url", url)
    local = server_services.embed(EmbeddingRequest(model=ModelRef.parse("embedder"), inputs=["a text"]))
    assert code == EXIT_OK and json.loads(out)["embeddings"] == [list(local.vectors[0])]
    code, out, err = run(None, "pull", "org/tiny", "--url", url)
    assert code == EXIT_OK and out.startswith("pulled org/tiny") and "success" in err
    code, out, _ = run(None, "cp", "org/tiny", "copied", "--url", url)
    assert code == EXIT_OK and "copied:latest" in fake_store.models
    code, out, _ = run(None, "rm", "copied", "--url", url)
    assert code == EXIT_OK and "copied:latest" not in fake_store.models


def test_errors_through_the_server(url) -> None:
    code, _, err = run(None, "generate", "nope", "hi", "--url", url)
    assert code == EXIT_NOT_FOUND and "model 'nope' not found" in err
    code, _, err = run(None, "generate", "embedder", "hi", "--url", url)
    assert code == EXIT_USAGE and "does not support" in err
    code, _, err = run(None, "generate", "fake", "hi", "--top-p", "2", "--url", url)
    assert code == EXIT_USAGE and "top_p must be in (0, 1]" in err
    code, _, err = run(None, "generate", "fake", "hi", "--engine", "gguf", "--url", url)
    assert code == EXIT_USAGE and "with --url the server decides" in err


# -- serve and deploy ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve_in_child(services, argv: list[str], log: str) -> None:
    with open(log, "w", buffering=1) as out:
        code = main(argv, services=services, out=out, err=out)
    os._exit(code)


def wait_for(url: str, process) -> dict:
    deadline = time.monotonic() + SERVER_WAIT_S
    while time.monotonic() < deadline:
        assert process.is_alive(), "the server exited"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    pytest.fail(f"nothing answered at {url}")


@pytest.mark.parametrize("command", ["serve", "deploy"])
def test_serve_and_deploy_serve_the_services_in_the_foreground(services, tmp_path, command) -> None:
    port, log = free_port(), str(tmp_path / "out.log")
    argv = [command, "--port", str(port), "--threads", "2", "--home", str(tmp_path)]
    process = multiprocessing.get_context("fork").Process(target=_serve_in_child, args=(services, argv, log))
    process.start()
    try:
        tags = wait_for(f"http://127.0.0.1:{port}/api/tags", process)
        assert {m["name"] for m in tags["models"]} == {"fake:latest", "embedder:latest"}
    finally:
        process.terminate()
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
            process.join()
    text = Path(log).read_text()
    assert f"modelport serving on http://127.0.0.1:{port}" in text
    if command == "deploy":
        assert "does not detach" in text and f"curl http://127.0.0.1:{port}/api/tags" in text
        assert f"--bind 127.0.0.1:{port}" in text and f"MODELPORT_HOME={tmp_path}" in text
        assert "--max-models 3" in text
    else:
        assert "does not detach" not in text
