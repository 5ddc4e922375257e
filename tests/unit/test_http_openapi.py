"""``/openapi.json`` describes every route, and requests generated from it by
schemathesis (in process, against the WSGI app over fakes) never get a 5xx."""

from __future__ import annotations

import re
from pathlib import Path
import tempfile

import falcon.inspect
import falcon.testing
import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error

from modelport.adapters.fake import FakeEngine, InMemoryModelStore, InMemorySessionRepository, fake_model
from modelport.domain import Capability, ModelFile, ModelFormat, ModelNotFound
from modelport.entrypoints.bootstrap import bootstrap
from modelport.entrypoints.config import Settings
from modelport.entrypoints.http.app import create_app
from modelport.ports import EngineSpec

LOCAL = {"Host": "localhost"}
NOT_DOCUMENTED = {"OPTIONS"}  # CORS preflights, answered by the middleware for every path


class TinySource:
    """A model source that has one small repository, ``org/tiny``."""

    def fetch(self, ref, folder, progress) -> list[ModelFile]:
        if ref.repo_id != "org/tiny":
            raise ModelNotFound(str(ref))
        with open(f"{folder}/model.gguf", "wb") as out:
            out.write(b"GGUF")
        return [ModelFile(path="model.gguf", size=4)]

    def search(self, query, **filters) -> list:
        return []


def build_app():
    store = InMemoryModelStore(
        [
            fake_model("fake:latest", aliases=("fake",)),
            fake_model(
                "embedder:latest",
                format=ModelFormat.SAFETENSORS,
                capabilities={Capability.EMBEDDING},
                embedding_length=16,
            ),
        ]
    )
    settings = Settings(home=tempfile.mkdtemp(prefix="modelport-openapi-"))
    spec = EngineSpec(name="fake", formats=set(ModelFormat), factory=FakeEngine)
    services = bootstrap(
        settings, store=store, engines=[spec], source=TinySource(), sessions=InMemorySessionRepository()
    )
    return create_app(services, settings)


APP = build_app()


def template(path: str) -> str:
    """``/v1/models/{model:path}`` -> ``/v1/models/{model}``."""
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", path)


def test_every_route_and_method_is_documented() -> None:
    document = falcon.testing.TestClient(APP, headers=LOCAL).simulate_get("/openapi.json").json
    assert document["openapi"].startswith("3.")
    documented = {
        (path, method.upper()) for path, item in document["paths"].items() for method in item if method != "parameters"
    }
    served = {
        (template(route.path), method.method)
        for route in falcon.inspect.inspect_routes(APP)
        for method in route.methods
        if not method.internal and method.method not in NOT_DOCUMENTED
    }
    assert served - documented == set()
    assert documented - served == set()


schema = schemathesis.openapi.from_wsgi("/openapi.json", APP).exclude(path="/api/push")  # 501 by design


@pytest.mark.slow  # about 30 s for every operation together
@schema.parametrize()
@hypothesis.settings(
    max_examples=30, deadline=None, derandomize=True, database=None, suppress_health_check=list(hypothesis.HealthCheck)
)
def test_generated_requests_never_get_a_server_error(case) -> None:
    case.call_and_validate(headers=LOCAL, checks=[not_a_server_error])


def test_every_documented_path_is_in_the_http_guide() -> None:
    guide = (Path(__file__).resolve().parents[2] / "docs" / "http-api.md").read_text(encoding="utf-8")
    document = falcon.testing.TestClient(APP, headers=LOCAL).simulate_get("/openapi.json").json
    missing = [path for path in document["paths"] if f"`{path.replace('{model}', '{id}')}`" not in guide]
    assert missing == []
