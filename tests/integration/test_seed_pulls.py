"""Pulls as RustLLM and Hugging Llama users make them, against the Hub look-alike on
127.0.0.1 with the real huggingface_hub client: RustLLM's registry names (resolved
through the catalog, the Hub's sha256 checked), `/api/pull` with `revision` and
`trust_remote_code`, and its `downloading` lines."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Iterator

import falcon.testing
import pytest

from modelport.adapters.fake import FakeEngine
from modelport.adapters.filesystem import FilesystemModelStore
from modelport.adapters.hub import HubModelSource, RetryPolicy
from modelport.domain import ModelFormat
from modelport.entrypoints.catalog import CATALOG, RUSTLLM_FILES, registry_source
from modelport.entrypoints.cli import EXIT_OK, main
from modelport.entrypoints.config import Settings
from modelport.entrypoints.http.app import create_app
from modelport.ports import EngineRegistry, EngineSpec, Services
from support.hubserver import HubServer
from support.modelfiles import gguf_with_data

LOCAL = {"Host": "localhost:11434"}
FAST_RETRY = RetryPolicy(attempts=2, first_delay=0.01, max_delay=0.02)
KIB = 1024


def repo_files(short: str, seed: int = 0) -> dict[str, bytes]:
    """A look-alike of the registry name's Hub repository: its 4-bit file, a bigger
    quantization beside it and a README; tiny files under the real names."""
    wanted = RUSTLLM_FILES[short]
    other = wanted.replace("Q4_K_M", "Q8_0")
    return {
        wanted: gguf_with_data(64 * KIB, seed=seed, file_type=15),
        other: gguf_with_data(96 * KIB, seed=seed + 1, file_type=7),
        "README.md": b"# look-alike\n",
    }


@pytest.fixture
def hub(tmp_path) -> Iterator[HubServer]:
    with HubServer(tmp_path / "hub") as server:
        yield server


@pytest.fixture
def services(tmp_path, hub) -> Services:
    store = FilesystemModelStore(tmp_path / "models", bundled=())
    engines = EngineRegistry([EngineSpec(name="fake", formats=set(ModelFormat), factory=FakeEngine)])
    return Services(store=store, engines=engines, source=HubModelSource(hub.url, token=False, retry=FAST_RETRY))


@pytest.fixture
def client(services, tmp_path) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(services, Settings(home=str(tmp_path / "home"))), headers=LOCAL)


def repo_of(short: str) -> str:
    return registry_source(short).split(":")[0]


def test_every_registry_name_is_a_4bit_gguf_in_the_catalog() -> None:
    for short, file in RUSTLLM_FILES.items():
        entry = next(e for e in CATALOG if e.name == short)
        assert entry.format == "gguf" and entry.quantization == "Q4_K_M" and entry.source.endswith(":Q4_K_M")
        assert "Q4_K_M" in file and file.endswith(".gguf")
    assert registry_source("phi-2:latest") == registry_source("PHI-2") == "TheBloke/phi-2-GGUF:Q4_K_M"
    assert registry_source("phi-3") is None


def test_rustllm_download_route_pulls_the_registry_file_with_its_digest_checked(client, hub) -> None:
    files = repo_files("phi-2")
    hub.add_repo(repo_of("phi-2"), files)
    result = client.simulate_post("/rustllm/api/models/phi-2", json={"force": False})
    assert result.status_code == 200, result.text
    data = result.json["data"]
    wanted = RUSTLLM_FILES["phi-2"]
    assert data["name"] == "phi-2" and data["downloaded"] is True and data["size_bytes"] >= len(files[wanted])
    fetched = {e.path.rsplit("/", 1)[-1] for e in hub.requests(method="GET")}
    assert wanted.replace("Q4_K_M", "Q8_0") not in fetched  # only the registry's file
    listed = client.simulate_get("/rustllm/api/models").json["data"]["models"]
    assert [m["name"] for m in listed] == ["phi-2"]
    shown = client.simulate_post("/api/show", json={"model": "TheBloke/phi-2-GGUF:Q4_K_M"})
    assert shown.status_code == 200
    again = client.simulate_post("/rustllm/api/models/phi-2", json={"force": False}).json["data"]
    assert again["downloaded"] is False
    forced = client.simulate_post("/rustllm/api/models/phi-2", json={"force": True}).json["data"]
    assert forced["downloaded"] is True
    reply = client.simulate_post(
        "/rustllm/api/chat",
        json={"model": "phi-2", "messages": [{"role": "user", "content": "hi"}], "temperature": 0, "max_tokens": 3},
    )
    assert reply.json["data"]["message"]["content"] == "The"
    assert client.simulate_delete("/rustllm/api/models/phi-2").json["data"]["deleted"] is True
    assert client.simulate_get("/rustllm/api/models").json["data"]["models"] == []


def test_a_damaged_download_fails_its_sha256_check(client, hub) -> None:
    hub.add_repo(repo_of("llama2-7b"), repo_files("llama2-7b"))
    hub.faults.corrupt.add(RUSTLLM_FILES["llama2-7b"])
    result = client.simulate_post("/rustllm/api/models/llama2-7b", json={})
    assert result.status_code == 502 and result.json["success"] is False
    assert "digest" in result.json["error"]
    assert client.simulate_get("/rustllm/api/models").json["data"]["models"] == []


def test_ollama_pull_streams_downloading_lines_and_takes_a_revision(client, hub) -> None:
    repo = repo_of("mistral-7b")
    hub.add_repo(repo, repo_files("mistral-7b", seed=1))
    tagged = repo_files("mistral-7b", seed=5)
    hub.add_repo(repo, tagged, revision="v2")
    result = client.simulate_post(
        "/api/pull", json={"model": "mistral-7b", "revision": "v2", "trust_remote_code": True}
    )
    assert result.status_code == 200
    lines = [json.loads(text) for text in result.text.splitlines()]
    statuses = [line["status"] for line in lines]
    assert "never runs code from a model repository" in statuses[0]
    assert statuses[1] == "pulling manifest" and statuses[-1] == "success"
    downloading = [line for line in lines if line["status"] == "downloading"]
    assert {line["path"] for line in downloading} == {RUSTLLM_FILES["mistral-7b"], "README.md"}
    first = statuses.index("downloading")
    assert lines[first + 1]["status"].startswith("pulling ")  # Ollama's own line follows
    assert client.simulate_post("/api/show", json={"model": "mistral-7b"}).status_code == 404  # not an alias
    shown = client.simulate_post("/api/show", json={"model": registry_source("mistral-7b")})
    assert shown.status_code == 200  # installed under its Hub name; the next test checks it is v2's file
    assert client.simulate_post("/api/pull", json={"model": "x", "trust_remote_code": "yes"}).status_code == 400
    assert client.simulate_post("/api/pull", json={"model": "x", "revision": 3}).status_code == 400


def test_the_v2_revision_is_what_was_installed(services, hub) -> None:
    repo = repo_of("mistral-7b")
    hub.add_repo(repo, repo_files("mistral-7b", seed=1))
    tagged = repo_files("mistral-7b", seed=5)
    hub.add_repo(repo, tagged, revision="v2")
    out, err = io.StringIO(), io.StringIO()
    code = main(["model", "pull", "mistral-7b", "--revision", "v2"], services=services, out=out, err=err)
    assert code == EXIT_OK, err.getvalue()
    info = services.show(registry_source("mistral-7b"))
    wanted = RUSTLLM_FILES["mistral-7b"]
    assert {f.path: f.sha256 for f in info.files}[wanted] == hashlib.sha256(tagged[wanted]).hexdigest()
    out = io.StringIO()
    assert main(["model", "list", "--json"], services=services, out=out) == EXIT_OK
    assert [m["name"] for m in json.loads(out.getvalue())] == [registry_source("mistral-7b")]
