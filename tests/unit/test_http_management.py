"""Ollama's management routes: pull (from a fake source), push, create, blobs, copy,
delete, and the embedding routes."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
from typing import Any

import attrs
import falcon.testing
import pytest

from modelport.adapters.fake import InMemorySessionRepository
from modelport.adapters.filesystem import FilesystemModelStore
from modelport.domain import DownloadError, ModelFile, ModelFormat, ModelNotFound, PullProgress
from modelport.entrypoints.bootstrap import bootstrap
from modelport.entrypoints.http.app import create_app
from modelport.ports import EngineSpec

LOCAL = {"Host": "localhost"}
WAIT_S = 10


class FakeSource:
    """A model source in memory: ``files`` per repository, sent in 3 progress steps each.
    ``fail_after`` raises a DownloadError after that many bytes; ``endless`` repositories
    report progress until the reporting raises (the client went away)."""

    def __init__(
        self, repos: dict[str, dict[str, bytes]], endless: tuple[str, ...] = (), fail_after: int | None = None
    ) -> None:
        self.repos = repos
        self.endless = endless
        self.fail_after = fail_after
        self.stopped = threading.Event()
        self.stopped_by: BaseException | None = None

    def fetch(self, ref, folder: str, progress) -> list[ModelFile]:
        if ref.repo_id in self.endless:
            return self._forever(progress)
        if ref.repo_id not in self.repos:
            raise ModelNotFound(str(ref), "no such repository on the fake source")
        files = []
        for name, data in self.repos[ref.repo_id].items():
            digest = hashlib.sha256(data).hexdigest()
            for done in (0, len(data) // 2, len(data)):
                if self.fail_after is not None and done > self.fail_after:
                    raise DownloadError(f"connection lost while fetching {name}")
                progress(
                    PullProgress(
                        status=f"pulling {digest[:12]}", file=name, digest=digest, total=len(data), completed=done
                    )
                )
            with open(os.path.join(folder, name), "wb") as out:
                out.write(data)
            files.append(ModelFile(path=name, size=len(data), sha256=digest))
        return files

    def _forever(self, progress) -> list[ModelFile]:
        try:
            while True:
                progress(PullProgress(status="pulling 000000000000", total=10, completed=1))
                threading.Event().wait(0.001)
        except BaseException as exc:
            self.stopped_by = exc
            self.stopped.set()
            raise

    def search(self, query: str, **filters: Any) -> list:
        return []


WEIGHTS = b"w" * 1000


@pytest.fixture
def source() -> FakeSource:
    return FakeSource({"org/tiny": {"model.gguf": WEIGHTS}}, endless=("org/endless",))


@pytest.fixture
def client(settings, fake_store, engine_box, source) -> falcon.testing.TestClient:
    spec = EngineSpec(name="fake", formats=set(ModelFormat), factory=engine_box)
    services = bootstrap(
        settings, store=fake_store, engines=[spec], source=source, sessions=InMemorySessionRepository()
    )
    return falcon.testing.TestClient(create_app(services, settings), headers=LOCAL)


def lines(result: falcon.testing.Result) -> list[dict[str, Any]]:
    assert result.headers["content-type"] == "application/x-ndjson"
    return [json.loads(line) for line in result.text.splitlines()]


def tags(client) -> list[str]:
    return sorted(m["name"] for m in client.simulate_get("/api/tags").json["models"])


# -- pull --------------------------------------------------------------------------------------


def test_pull_streams_progress_then_success(client) -> None:
    steps = lines(client.simulate_post("/api/pull", json={"model": "org/tiny"}))
    digest = hashlib.sha256(WEIGHTS).hexdigest()
    assert steps[0] == {"status": "pulling manifest"}
    assert steps[1] == {"status": "downloading", "path": "model.gguf"}  # Hugging Llama's line, once per file
    assert steps[2:5] == [
        {"status": f"pulling {digest[:12]}", "digest": f"sha256:{digest}", "total": 1000, "completed": done}
        for done in (0, 500, 1000)
    ]
    assert steps[-2:] == [{"status": "writing manifest"}, {"status": "success"}]
    assert any(name.startswith("org/tiny") for name in tags(client))


def test_pull_without_streaming_answers_success_once(client) -> None:
    result = client.simulate_post("/api/pull", json={"model": "org/tiny", "stream": False})
    assert (result.status_code, result.json) == (200, {"status": "success"})
    assert any(name.startswith("org/tiny") for name in tags(client))


def test_pulling_what_the_source_lacks(client) -> None:
    result = client.simulate_post("/api/pull", json={"model": "org/none", "stream": False})
    assert result.status_code == 404 and "org/none" in result.json["error"]
    steps = lines(client.simulate_post("/api/pull", json={"model": "org/none"}))
    assert steps[0] == {"status": "pulling manifest"} and "org/none" in steps[-1]["error"]


def test_a_download_that_fails_midway_ends_with_an_error_and_installs_nothing(settings, fake_store) -> None:
    source = FakeSource({"org/tiny": {"model.gguf": WEIGHTS}}, fail_after=600)
    services = bootstrap(settings, store=fake_store, engines=[], source=source, sessions=InMemorySessionRepository())
    client = falcon.testing.TestClient(create_app(services, settings), headers=LOCAL)
    steps = lines(client.simulate_post("/api/pull", json={"model": "org/tiny"}))
    assert steps[-1] == {"error": "connection lost while fetching model.gguf"}
    assert not any(name.startswith("org/tiny") for name in tags(client))
    result = client.simulate_post("/api/pull", json={"model": "org/tiny", "stream": False})
    assert result.status_code == 502


def test_a_client_that_leaves_stops_the_download(settings, fake_store, source) -> None:
    services = bootstrap(settings, store=fake_store, engines=[], source=source, sessions=InMemorySessionRepository())
    app = create_app(services, settings)
    environ = falcon.testing.create_environ(
        method="POST", path="/api/pull", host="localhost", body=json.dumps({"model": "org/endless"})
    )
    body = app(environ, lambda status, headers, exc_info=None: None)
    chunks = iter(body)
    assert json.loads(next(chunks)) == {"status": "pulling manifest"}
    assert json.loads(next(chunks))["status"] == "pulling 000000000000"
    body.close()
    assert source.stopped.wait(WAIT_S)
    assert "went away" in str(source.stopped_by)


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({}, 400, "model is required"),
        ({"model": "not a name"}, 400, "invalid model name"),
        ({"model": "./local.gguf"}, 400, "not by a path"),
        ({"model": "org/tiny", "stream": "no"}, 400, "stream"),
    ],
)
def test_bad_pull_requests(client, body, status, words) -> None:
    result = client.simulate_post("/api/pull", json=body)
    assert result.status_code == status and words in result.json["error"]


def test_pull_without_a_source_is_501(services, settings) -> None:
    client = falcon.testing.TestClient(create_app(services, settings), headers=LOCAL)
    result = client.simulate_post("/api/pull", json={"model": "org/tiny"})
    assert result.status_code == 501 and "modelport[hub]" in result.json["error"]


def test_push_is_501_with_a_clear_message(client) -> None:
    result = client.simulate_post("/api/push", json={"model": "fake"})
    assert result.status_code == 501 and "push is not supported" in result.json["error"]


# -- copy and delete ---------------------------------------------------------------------------


def test_copy_then_delete(client) -> None:
    result = client.simulate_post("/api/copy", json={"source": "fake", "destination": "mine:v1"})
    assert (result.status_code, result.text) == (200, "")
    assert client.simulate_post("/api/show", json={"model": "mine:v1"}).status_code == 200
    result = client.simulate_delete("/api/delete", json={"model": "mine:v1"})
    assert (result.status_code, result.text) == (200, "")
    assert "mine:v1" not in tags(client)
    assert client.simulate_delete("/api/delete", json={"model": "mine:v1"}).status_code == 404


def test_delete_unloads_a_loaded_model(client) -> None:
    client.simulate_post("/api/generate", json={"model": "fake"})
    assert client.simulate_get("/api/ps").json["models"]
    assert client.simulate_delete("/api/delete", json={"name": "fake"}).status_code == 200
    assert client.simulate_get("/api/ps").json == {"models": []}


@pytest.mark.parametrize(
    "body, status",
    [
        ({"source": "nope", "destination": "x"}, 404),
        ({"source": "fake"}, 400),
        ({"source": "fake", "destination": "bad name"}, 400),
        ({"source": 1, "destination": "x"}, 400),
    ],
)
def test_bad_copies(client, body, status) -> None:
    assert client.simulate_post("/api/copy", json=body).status_code == status


# -- blobs and create, on a real store ------------------------------------------------------


def _string(text: str) -> bytes:
    return struct.pack("<Q", len(text.encode())) + text.encode()


def tiny_gguf() -> bytes:
    """The smallest GGUF the store accepts: an architecture and one tensor."""
    out = b"GGUF" + struct.pack("<IQQ", 3, 1, 1)
    out += _string("general.architecture") + struct.pack("<I", 8) + _string("llama")
    out += _string("output_norm.weight") + struct.pack("<IQIQ", 1, 16, 0, 0)
    return out + bytes(64)


@pytest.fixture
def disk(tmp_path, settings, engine_box):
    """(client, blobs folder, store) over a filesystem store without bundled models."""
    store = FilesystemModelStore(tmp_path / "models", bundled=())
    (tmp_path / "imports").mkdir()
    settings = attrs.evolve(settings, allowed_paths=str(tmp_path / "imports"))
    spec = EngineSpec(name="fake", formats=set(ModelFormat), factory=engine_box)
    services = bootstrap(settings, store=store, engines=[spec], sessions=InMemorySessionRepository())
    client = falcon.testing.TestClient(create_app(services, settings), headers=LOCAL)
    return client, os.path.join(settings.home, "blobs"), store


def upload(client, data: bytes, digest: str | None = None) -> tuple[str, falcon.testing.Result]:
    digest = digest or f"sha256:{hashlib.sha256(data).hexdigest()}"
    return digest, client.simulate_post(
        f"/api/blobs/{digest}", body=data, headers={"Content-Type": "application/octet-stream"}
    )


def test_a_blob_is_stored_under_its_digest(disk) -> None:
    client, blobs, _ = disk
    digest = f"sha256:{hashlib.sha256(b'abc').hexdigest()}"
    assert client.simulate_head(f"/api/blobs/{digest}").status_code == 404
    _, result = upload(client, b"abc")
    assert result.status_code == 201
    assert client.simulate_head(f"/api/blobs/{digest}").status_code == 200
    assert os.listdir(blobs) == [digest.replace(":", "-")]
    assert upload(client, b"abc")[1].status_code == 200  # already there


def test_a_blob_with_the_wrong_digest_is_refused_and_not_kept(disk) -> None:
    client, blobs, _ = disk
    wrong = "sha256:" + "0" * 64
    _, result = upload(client, b"abc", wrong)
    assert result.status_code == 400 and "digest mismatch" in result.json["error"]
    assert os.listdir(blobs) == []
    assert client.simulate_head(f"/api/blobs/{wrong}").status_code == 404


@pytest.mark.parametrize("digest", ["abc", "sha256:xyz", "md5:" + "0" * 32, "sha256:" + "A" * 64])
def test_a_malformed_digest_is_400(disk, digest) -> None:
    client, _, _ = disk
    assert client.simulate_post(f"/api/blobs/{digest}", body=b"x").status_code == 400
    assert client.simulate_head(f"/api/blobs/{digest}").status_code == 400


def test_create_from_an_uploaded_gguf(disk) -> None:
    client, blobs, store = disk
    digest, _ = upload(client, tiny_gguf())
    result = client.simulate_post("/api/create", json={"model": "tiny:q", "files": {"tiny.gguf": digest}})
    assert lines(result) == [
        {"status": f"using existing layer {digest}"},
        {"status": "writing manifest"},
        {"status": "success"},
    ]
    shown = client.simulate_post("/api/show", json={"model": "tiny:q"}).json
    assert shown["details"]["format"] == "gguf" and shown["model_info"]["general.architecture"] == "llama"
    assert sorted(os.listdir(blobs)) == [".used.json", digest.replace(":", "-")]  # no leftovers
    generated = client.simulate_post(
        "/api/generate", json={"model": "tiny:q", "prompt": "hi", "raw": True, "stream": False}
    )
    assert generated.status_code == 200


def test_create_from_blobs_refuses_a_folder_no_engine_could_load(disk) -> None:
    client, _, _ = disk
    config, _ = upload(client, b"hello")
    result = client.simulate_post("/api/create", json={"model": "broken", "files": {"config.json": config}})
    assert result.status_code == 400 and "config.json is not valid JSON" in result.json["error"]
    good_config, _ = upload(client, json.dumps({"model_type": "llama"}).encode())
    weights, _ = upload(client, b"not safetensors")
    result = client.simulate_post(
        "/api/create", json={"model": "broken", "files": {"config.json": good_config, "model.safetensors": weights}}
    )
    assert result.status_code == 400 and "not a safetensors file" in result.json["error"]
    assert "broken:latest" not in tags(client)


def test_create_from_a_local_file_and_from_an_installed_model(disk, tmp_path) -> None:
    client, _, _ = disk
    path = tmp_path / "imports" / "local.gguf"
    path.write_bytes(tiny_gguf())
    result = client.simulate_post("/api/create", json={"model": "local", "from": str(path), "stream": False})
    assert (result.status_code, result.json) == (200, {"status": "success"})
    result = client.simulate_post("/api/create", json={"model": "again", "from": "local", "stream": False})
    assert result.status_code == 200
    assert {"local:latest", "again:latest"} <= set(tags(client))


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"model": "x"}, 400, "needs 'from'"),
        ({"model": "x", "from": "fake", "quantize": "q4_K_M"}, 400, "quantize"),
        ({"model": "x", "from": "fake", "adapters": {"a.gguf": "sha256:" + "1" * 64}}, 400, "adapters"),
        ({"model": "x", "from": "fake", "parameters": {"mirostat": 1}}, 400, "parameter 'mirostat' is not supported"),
        ({"model": "x", "from": "fake", "parameters": {"wibble": 1}}, 400, "unknown parameter 'wibble'"),
        ({"model": "x", "from": "fake", "parameters": {"temperature": "hot"}}, 400, "temperature"),
        ({"model": "x", "from": "fake", "template": "{{ .Tools }}"}, 400, ".Tools"),
        ({"model": "x", "from": "fake", "template": "{% if %}"}, 400, "does not compile"),
        ({"model": "x", "from": "fake", "messages": [{"content": "hi"}]}, 400, "role"),
        ({"model": "x", "modelfile": "FROM fake\nADAPTER ./lora.gguf"}, 400, "ADAPTER"),
        ({"model": "x", "modelfile": "SYSTEM hi"}, 400, "FROM"),
        ({"model": "x", "files": {"m.gguf": "sha256:" + "1" * 64}}, 400, "not found; upload it first"),
        ({"model": "x", "files": {"m.gguf": "nope"}}, 400, "sha256"),
        ({"model": "x", "from": "/no/such/file.gguf"}, 403, "MODELPORT_ALLOWED_PATHS"),
        ({"model": "x", "from": "absent"}, 404, "not found"),
        ({"from": "fake"}, 400, "model is required"),
    ],
)
def test_bad_creates(disk, body, status, words) -> None:
    client, _, _ = disk
    result = client.simulate_post("/api/create", json=body)
    assert result.status_code == status and words in result.json["error"], result.text


def test_paths_outside_the_allowed_folders_get_one_answer_whether_or_not_they_exist(disk, tmp_path) -> None:
    client, _, _ = disk
    real = tmp_path / "secret.gguf"
    real.write_bytes(tiny_gguf())
    escape = tmp_path / "imports" / "link.gguf"
    escape.symlink_to(real)
    answers = set()
    for source in (
        str(real),
        str(tmp_path / "absent.gguf"),
        str(escape),
        str(tmp_path / "imports/../secret.gguf"),
        "/etc/passwd",
        "/etc/absent",
    ):
        result = client.simulate_post("/api/create", json={"model": "x", "from": source, "stream": False})
        assert result.status_code == 403, result.text
        answers.add(result.json["error"].replace(source, "SOURCE"))
    assert len(answers) == 1 and "x:latest" not in tags(client)
    inside = client.simulate_post("/api/create", json={"model": "x", "from": str(tmp_path / "imports/absent.gguf")})
    assert inside.status_code == 400 and "cannot import" in inside.json["error"]


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("POST", "/api/show", {"model": "/etc/passwd"}),
        ("POST", "/api/show", {"model": "/etc/absent"}),
        ("POST", "/api/generate", {"model": "/etc/passwd", "prompt": "hi"}),
        ("POST", "/api/chat", {"model": "./model.gguf", "messages": [{"role": "user", "content": "hi"}]}),
        ("POST", "/api/embed", {"model": "/etc/passwd", "input": "hi"}),
        ("POST", "/api/copy", {"source": "/etc/passwd", "destination": "mine"}),
        ("DELETE", "/api/delete", {"model": "../models/x.gguf"}),
        ("POST", "/api/create", {"model": "/tmp/x.gguf", "from": "fake"}),
        ("POST", "/v1/chat/completions", {"model": "/etc/passwd", "messages": [{"role": "user", "content": "hi"}]}),
        ("POST", "/v1/completions", {"model": "~/x.gguf", "prompt": "hi"}),
        ("POST", "/v1/embeddings", {"model": "/etc/passwd", "input": "hi"}),
        ("POST", "/v1/generate", {"model": "/etc/passwd", "prompt": "hi"}),
        ("GET", "/v1/models//etc/passwd", None),
    ],
)
def test_a_model_over_http_is_a_store_name_never_a_path(disk, method, path, body) -> None:
    client, _, _ = disk
    result = client.simulate_request(method, path, json=body)
    assert result.status_code == 400, result.text
    message = result.json["error"]["message"] if path.startswith("/v1/") else result.json["error"]
    assert "not by a path on the server" in message


def test_create_refuses_file_names_that_leave_the_folder(disk) -> None:
    client, _, _ = disk
    digest, _ = upload(client, tiny_gguf())
    for name in ("../evil.gguf", "/abs.gguf", "a/../../b.gguf"):
        result = client.simulate_post("/api/create", json={"model": "x", "files": {name: digest}})
        assert result.status_code == 400 and "invalid file name" in result.json["error"]


def test_create_replaces_a_model_of_the_same_name_as_ollama_does(disk, tmp_path) -> None:
    """Editing a Modelfile and creating again is Ollama's workflow: the second create
    replaces the first (the store's tests check that a bundled model's name is refused)."""
    client, _, _ = disk
    path = tmp_path / "imports" / "local.gguf"
    path.write_bytes(tiny_gguf())
    body = {"model": "local", "from": str(path), "stream": False, "system": "first"}
    assert client.simulate_post("/api/create", json=body).status_code == 200
    again = client.simulate_post("/api/create", json={**body, "system": "second"})
    assert again.status_code == 200, again.text
    assert client.simulate_post("/api/show", json={"model": "local"}).json["system"] == "second"
    copied = client.simulate_post("/api/create", json={"model": "local", "from": "local", "system": "third"})
    assert copied.status_code == 200, copied.text
    assert client.simulate_post("/api/show", json={"model": "local"}).json["system"] == "third"
    tags = [m["name"] for m in client.simulate_get("/api/tags").json["models"]]
    assert tags.count("local:latest") == 1
    plain = client.simulate_post("/api/create", json={"model": "plain", "from": str(path)})
    assert plain.status_code == 200, plain.text
    digests = {m["name"]: m["digest"] for m in client.simulate_get("/api/tags").json["models"]}
    assert digests["local:latest"] != digests["plain:latest"]  # same files, other defaults


# -- embeddings --------------------------------------------------------------------------------


def test_embed_answers_one_vector_per_input(client) -> None:
    body = client.simulate_post("/api/embed", json={"model": "embedder", "input": ["a", "b"]}).json
    assert body["model"] == "embedder" and len(body["embeddings"]) == 2
    assert all(len(v) == 16 for v in body["embeddings"])
    assert body["prompt_eval_count"] == 2 and body["total_duration"] > 0 and "load_duration" in body
    single = client.simulate_post("/api/embed", json={"model": "embedder", "input": "a"}).json
    assert single["embeddings"] == body["embeddings"][:1]


def test_legacy_embeddings_answers_one_vector(client) -> None:
    body = client.simulate_post("/api/embeddings", json={"model": "embedder", "prompt": "a"}).json
    embed = client.simulate_post("/api/embed", json={"model": "embedder", "input": "a"}).json
    assert body == {"embedding": embed["embeddings"][0]}


def test_empty_inputs_give_empty_answers(client) -> None:
    assert client.simulate_post("/api/embed", json={"model": "embedder", "input": []}).json == {
        "model": "embedder",
        "embeddings": [],
    }
    assert client.simulate_post("/api/embeddings", json={"model": "embedder", "prompt": ""}).json == {"embedding": []}


@pytest.mark.parametrize(
    "path, body, status, words",
    [
        ("/api/embed", {"model": "embedder", "input": 5}, 400, "invalid input type"),
        ("/api/embed", {"model": "embedder", "input": ["a", 1]}, 400, "invalid input type"),
        ("/api/embed", {"model": "embedder", "input": "a", "dimensions": 0}, 400, "dimensions"),
        ("/api/embed", {"model": "fake", "input": "a"}, 400, "does not support embeddings"),
        ("/api/embed", {"model": "nope", "input": "a"}, 404, "not found"),
        ("/api/embeddings", {"model": "fake", "prompt": "a"}, 400, "does not support embeddings"),
        ("/api/embeddings", {"model": "embedder", "prompt": 3}, 400, "prompt"),
    ],
)
def test_bad_embedding_requests(client, path, body, status, words) -> None:
    result = client.simulate_post(path, json=body)
    assert result.status_code == status and words in result.json["error"], result.text


def test_deleting_the_last_model_that_uses_a_blob_removes_the_blob(disk) -> None:
    client, blobs, _ = disk
    digest, _ = upload(client, tiny_gguf())
    spare, _ = upload(client, b"not used by any model")
    blob = os.path.join(blobs, digest.replace(":", "-"))
    assert (
        client.simulate_post(
            "/api/create", json={"model": "one", "files": {"m.gguf": digest}, "stream": False}
        ).status_code
        == 200
    )
    assert client.simulate_post("/api/copy", json={"source": "one", "destination": "two"}).status_code == 200
    assert client.simulate_delete("/api/delete", json={"model": "one"}).status_code == 200
    assert os.path.exists(blob)  # "two" still uses it
    assert client.simulate_delete("/api/delete", json={"model": "two"}).status_code == 200
    assert not os.path.exists(blob)
    assert client.simulate_head(f"/api/blobs/{digest}").status_code == 404
    assert client.simulate_head(f"/api/blobs/{spare}").status_code == 200  # uploaded, never used: kept


def test_replacing_the_last_model_that_uses_a_blob_removes_the_blob(disk, tmp_path) -> None:
    client, blobs, _ = disk
    digest, _ = upload(client, tiny_gguf())
    blob = os.path.join(blobs, digest.replace(":", "-"))
    body = {"model": "one", "files": {"m.gguf": digest}, "stream": False}
    assert client.simulate_post("/api/create", json=body).status_code == 200
    path = tmp_path / "imports" / "other.gguf"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(tiny_gguf())
    again = client.simulate_post("/api/create", json={"model": "one", "from": str(path), "stream": False})
    assert again.status_code == 200, again.text
    assert not os.path.exists(blob)


def test_create_with_a_modelfiles_defaults_then_show_and_chat(disk, tmp_path, engine_box) -> None:
    client, _, _ = disk
    path = tmp_path / "imports" / "base.gguf"  # inside MODELPORT_ALLOWED_PATHS
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(tiny_gguf())
    assert (
        client.simulate_post("/api/create", json={"model": "base", "from": str(path), "stream": False}).status_code
        == 200
    )
    body = {
        "model": "mario",
        "from": "base",
        "system": "You are Mario.",
        "stream": False,
        "parameters": {"temperature": 0, "stop": ["<|end|>", "User:"], "num_ctx": 2048},
        "template": "{{ if .System }}S:{{ .System }}\n{{ end }}U:{{ .Prompt }}\nA:{{ .Response }}\n",
        "messages": [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "Mario!"}],
        "license": ["MIT", "and more"],
    }
    result = client.simulate_post("/api/create", json=body)
    assert result.status_code == 200, result.text
    shown = client.simulate_post("/api/show", json={"model": "mario"}).json
    assert shown["system"] == "You are Mario." and shown["template"] == body["template"]
    assert shown["license"] == "MIT\n\nand more" and shown["messages"] == body["messages"]
    lines = set(shown["parameters"].splitlines())
    assert {"temperature 0.0", 'stop "<|end|>"', 'stop "User:"', "num_ctx 2048"} <= lines
    assert 'SYSTEM "You are Mario."' in shown["modelfile"] and 'MESSAGE assistant "Mario!"' in shown["modelfile"]
    answer = client.simulate_post(
        "/api/chat", json={"model": "mario", "stream": False, "messages": [{"role": "user", "content": "Hi"}]}
    ).json
    assert answer["message"]["content"] == "The capital of France is Paris."
    assert engine_box.last.prompts[-1] == "S:You are Mario.\nU:Who are you?\nA:Mario!\nU:Hi\nA:"
    assert engine_box.last.options.num_ctx == 2048
    client.simulate_post(
        "/api/chat",
        json={
            "model": "mario",
            "stream": False,
            "messages": [{"role": "system", "content": "You are Luigi."}, {"role": "user", "content": "Hi"}],
        },
    )
    assert engine_box.last.prompts[-1].startswith("S:You are Luigi.\nU:Who are you?")
    derived = client.simulate_post(
        "/api/create", json={"model": "luigi", "from": "mario", "stream": False, "system": "You are Luigi."}
    )
    assert derived.status_code == 200
    again = client.simulate_post("/api/show", json={"model": "luigi"}).json
    assert again["system"] == "You are Luigi." and again["template"] == body["template"]
    assert "num_ctx 2048" in again["parameters"].splitlines()


def test_create_from_a_modelfile_text(disk, tmp_path, engine_box) -> None:
    client, _, _ = disk
    path = tmp_path / "imports" / "base.gguf"  # inside MODELPORT_ALLOWED_PATHS
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(tiny_gguf())
    text = (
        f'FROM {path}\nSYSTEM """Be brief."""\nPARAMETER temperature 0\nMESSAGE user hello\n'
        'TEMPLATE """{{- range .Messages }}<{{ .Role }}>{{ .Content }}\n{{ end }}<assistant>"""\n'
    )
    assert (
        client.simulate_post("/api/create", json={"model": "brief", "modelfile": text, "stream": False}).status_code
        == 200
    )
    client.simulate_post(
        "/api/chat", json={"model": "brief", "stream": False, "messages": [{"role": "user", "content": "Hi"}]}
    )
    assert engine_box.last.prompts[-1] == "<system>Be brief.\n<user>hello\n<user>Hi\n<assistant>"
