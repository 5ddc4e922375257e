"""Searching the Hub look-alike through huggingface_hub's list_models, and the hub source
that bootstrap builds from MODELPORT_MIRROR."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
from typing import Iterator

import pytest

from modelport.adapters.filesystem import FilesystemModelStore
from modelport.adapters.hub import HubModelSource
from modelport.domain import InvalidRequest, SearchHit
from modelport.ports import EngineRegistry, Services
from support.hubserver import HubServer


@pytest.fixture
def hub(tmp_path) -> Iterator[HubServer]:
    with HubServer(tmp_path / "hub") as server:
        server.add_repo(
            "org/alpha-GGUF",
            {"README.md": b"a"},
            downloads=500,
            likes=3,
            tags=["gguf", "llama"],
            pipeline_tag="text-generation",
        )
        server.add_repo(
            "org/beta",
            {"README.md": b"b"},
            downloads=100,
            likes=50,
            tags=["transformers"],
            pipeline_tag="feature-extraction",
        )
        server.add_repo("other/alpha-mini-GGUF", {"README.md": b"c"}, downloads=900, likes=1, tags=["gguf"])
        server.add_repo("org/alpha-secret", {"README.md": b"d"}, downloads=10_000, private=True)
        yield server


@pytest.fixture
def services(tmp_path, hub) -> Services:
    source = HubModelSource(hub.url, token=False)
    return Services(
        store=FilesystemModelStore(tmp_path / "models", bundled=()), engines=EngineRegistry([]), source=source
    )


def ids(hits: list[SearchHit]) -> list[str]:
    return [hit.repo_id for hit in hits]


def test_search_shows_downloads_likes_and_the_pipeline_tag(services, hub) -> None:
    hits = services.search("alpha")
    assert ids(hits) == ["other/alpha-mini-GGUF", "org/alpha-GGUF"]  # most downloaded first
    assert hits[1] == SearchHit(
        repo_id="org/alpha-GGUF", downloads=500, likes=3, pipeline_tag="text-generation", tags=("gguf", "llama")
    )
    [request] = hub.requests(method="GET")
    assert urllib.parse.parse_qs(request.query) == {"search": ["alpha"], "sort": ["downloads"], "limit": ["20"]}


def test_search_filters_by_author_and_tag_sorts_and_limits(services, hub) -> None:
    assert ids(services.search("", author="org", filter="gguf")) == ["org/alpha-GGUF"]
    assert ids(services.search("", sort="likes")) == ["org/beta", "org/alpha-GGUF", "other/alpha-mini-GGUF"]
    assert ids(services.search("a", limit=1)) == ["other/alpha-mini-GGUF"]
    assert services.search("nothing-like-this") == []
    with pytest.raises(InvalidRequest, match="sort must be one of downloads, likes, trending"):
        services.search("a", sort="stars")
    with pytest.raises(InvalidRequest, match="limit must be between 1 and 1000"):
        services.search("a", limit=0)


BOOTSTRAP = """
import json, sys
from modelport.entrypoints.bootstrap import bootstrap
from modelport.entrypoints.config import Settings

services = bootstrap(Settings.load(dotenv=None))
imported_early = "huggingface_hub" in sys.modules
hits = services.search("alpha", filter="gguf")
print(json.dumps({"endpoint": services.source.endpoint, "imported_early": imported_early,
                  "hits": [h.repo_id for h in hits]}))
"""


def test_bootstrap_builds_the_hub_source_from_the_mirror_setting_lazily(hub, tmp_path) -> None:
    env = {**os.environ, "MODELPORT_HOME": str(tmp_path / "home"), "MODELPORT_MIRROR": hub.url + "/"}
    env.pop("HF_ENDPOINT", None)
    result = subprocess.run(
        [sys.executable, "-c", BOOTSTRAP], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "endpoint": hub.url,
        "imported_early": False,
        "hits": ["other/alpha-mini-GGUF", "org/alpha-GGUF"],
    }
