"""The HTTP application wired with fakes, for serving tests.

    gunicorn --worker-class gthread 'fake_app:get_app()'   (with this folder on PYTHONPATH)
    python fake_app.py PORT                                 (through modelport's serve())

``fake`` answers "The capital of France is Paris." one character per token;
``slow`` answers a reply of 10,000 tokens at 100 tokens a second, so a test can
tell whether a generation was cancelled.
"""

from __future__ import annotations

import os
import sys
import tempfile

from modelport.adapters.fake import FakeEngine, InMemoryModelStore, InMemorySessionRepository, fake_model
from modelport.domain import Capability, ModelFormat
from modelport.entrypoints.bootstrap import bootstrap
from modelport.entrypoints.config import Settings
from modelport.entrypoints.http.app import create_app
from modelport.entrypoints.http.server import serve
from modelport.ports import EngineSpec

SLOW_REPLY = "tick " * 2000


class SlowEngine(FakeEngine):
    name = "slow"

    def __init__(self) -> None:
        super().__init__(SLOW_REPLY, token_delay=0.01)


def settings(port: int = 11434) -> Settings:
    home = os.environ.get("MODELPORT_HOME") or tempfile.gettempdir()
    return Settings(home=home, host="127.0.0.1", port=port)


def store() -> InMemoryModelStore:
    return InMemoryModelStore([
        fake_model("fake:latest", aliases=("fake",)),
        fake_model("embedder:latest", format=ModelFormat.SAFETENSORS,
                   capabilities={Capability.EMBEDDING}, embedding_length=16),
        fake_model("slow:latest", format=ModelFormat.MLX),
    ])


def engines() -> list[EngineSpec]:
    """``slow`` is the only MLX model, so the registry picks the slow engine for it."""
    return [
        EngineSpec(name="fake", formats={ModelFormat.GGUF, ModelFormat.SAFETENSORS},
                   factory=lambda: FakeEngine(token_delay=0.001)),
        EngineSpec(name="slow", formats={ModelFormat.MLX},
                   factory=SlowEngine),
    ]


def get_app():
    config = settings()
    services = bootstrap(config, store=store(), engines=engines(), sessions=InMemorySessionRepository())
    return create_app(services, config)


if __name__ == "__main__":
    serve(settings(int(sys.argv[1])), threads=4, app_factory=get_app)
