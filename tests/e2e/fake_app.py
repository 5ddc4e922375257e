"""The HTTP application wired with fakes, for serving tests.

    gunicorn --worker-class gthread 'fake_app:get_app()'   (with this folder on PYTHONPATH)
    python fake_app.py PORT                                 (through modelport's serve())

``fake`` answers "The capital of France is Paris." one character per token;
``slow`` answers a reply of 10,000 tokens at 100 tokens a second, so a test can
tell whether a generation was cancelled; ``chatty`` answers up to 1.6 million tokens
at once, to fill a client's socket; ``embedder`` embeds; ``smollm2:135m`` (alias
``smollm2``) is ``fake`` under the bundled model's names; ``weather`` calls a
``get_weather`` tool and, once the prompt holds a tool's result, answers with that
result as the server rendered it (so a client's tool round trip can be checked).
The source has one repository to pull, ``org/tiny``, and the store "imports" any
GGUF file (it records a fake model for it), so that create works. Settings come from the environment
(MODELPORT_HOME, MODELPORT_API_KEY ...), bound to 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import os
import sys

from modelport.adapters.fake import FakeEngine, InMemoryModelStore, InMemorySessionRepository, fake_model
from modelport.adapters.fake.store import with_defaults
from modelport.domain import Capability, InvalidRequest, ModelFile, ModelFormat, ModelNotFound, PullProgress
from modelport.entrypoints.bootstrap import bootstrap
from modelport.entrypoints.config import Settings
from modelport.entrypoints.http.app import create_app
from modelport.entrypoints.http.server import serve
from modelport.ports import EngineSpec

SLOW_REPLY = "tick " * 2000


class SlowEngine(FakeEngine):
    """``slow``: 100 tokens a second; ``chatty``: as many tokens as num_ctx allows, at
    once (enough to fill a socket's buffers)."""

    name = "slow"

    def __init__(self) -> None:
        super().__init__(SLOW_REPLY, token_delay=0.01)

    def load(self, model, options):
        super().load(model, options)
        if model.name.startswith("chatty"):
            self.reply, self.token_delay = "chatter " * 200_000, 0.0


WEATHER_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'


class FakeAppEngine(FakeEngine):
    """``fake``, and ``weather`` (see the module's docstring), whose reply is chosen
    when a prompt is read: it serves one request at a time."""

    def __init__(self) -> None:
        super().__init__(token_delay=0.001)

    def prompt_tokens(self, request):
        tokens = super().prompt_tokens(request)
        if self.model is not None and self.model.name.startswith("weather"):
            last_turn = self.prompts[-1].rsplit("<|user|>", 1)[-1]
            result = last_turn.partition("<tool_response>\n")[2].partition("\n</tool_response>")[0]
            self.reply = f"Result: {result}" if result else WEATHER_CALL
        return tokens


TINY = b"GGUF" + bytes(4092)


class ImportingStore(InMemoryModelStore):
    def import_path(self, name, path, defaults=None, *, replace=False):
        with open(path, "rb") as handle:
            data = handle.read()
        if not data.startswith(b"GGUF"):
            raise InvalidRequest(f"cannot import '{path}': not a GGUF file")
        model = fake_model(name.canonical, size=len(data), digest=hashlib.sha256(data).hexdigest())
        model = with_defaults(model, defaults) if defaults is not None else model
        self.add(model)
        return model


class TinySource:
    """One repository, ``org/tiny``: a 4 KiB file sent in four progress steps."""

    def fetch(self, ref, folder, progress):
        if ref.repo_id != "org/tiny":
            raise ModelNotFound(str(ref), "the fake source only has org/tiny")
        digest = hashlib.sha256(TINY).hexdigest()
        for done in range(0, len(TINY) + 1, 1024):
            progress(
                PullProgress(
                    status=f"pulling {digest[:12]}", file="model.gguf", digest=digest, total=len(TINY), completed=done
                )
            )
        with open(os.path.join(folder, "model.gguf"), "wb") as out:
            out.write(TINY)
        return [ModelFile(path="model.gguf", size=len(TINY), sha256=digest)]

    def search(self, query, **filters):
        return []


def settings(port: int = 11434) -> Settings:
    return Settings.load({"host": "127.0.0.1", "port": port}, dotenv=None)


def store() -> InMemoryModelStore:
    return ImportingStore(
        [
            fake_model("fake:latest", aliases=("fake",)),
            fake_model(
                "embedder:latest",
                format=ModelFormat.SAFETENSORS,
                capabilities={Capability.EMBEDDING},
                embedding_length=16,
            ),
            fake_model("slow:latest", format=ModelFormat.MLX),
            fake_model("smollm2:135m", aliases=("smollm2",)),  # named like the bundled model, for llm-ollama
            fake_model("chatty:latest", format=ModelFormat.MLX),
            fake_model("weather:latest"),
        ]
    )


def engines() -> list[EngineSpec]:
    """``slow`` and ``chatty`` are the MLX models, so the registry picks the slow engine for them."""
    return [
        EngineSpec(
            name="fake",
            formats={ModelFormat.GGUF, ModelFormat.SAFETENSORS},
            factory=FakeAppEngine,
        ),
        EngineSpec(name="slow", formats={ModelFormat.MLX}, factory=SlowEngine),
    ]


def get_app():
    config = settings()
    services = bootstrap(
        config, store=store(), engines=engines(), source=TinySource(), sessions=InMemorySessionRepository()
    )
    app = create_app(services, config)
    app.start_reaper()
    return app


if __name__ == "__main__":
    serve(settings(int(sys.argv[1])), threads=4, app_factory=get_app)
