"""The Falcon application: routes, middleware, error handling, and the factory
gunicorn calls.

    gunicorn 'modelport.entrypoints.http.app:get_app()'

Nothing is built at import: ``get_app()`` loads the settings and wires the services
when the worker calls it.
"""

from __future__ import annotations

import importlib.metadata
import time
from pathlib import Path

import falcon

from modelport.ports import Services

from ..bootstrap import bootstrap, start_distributed
from ..config import Settings
from . import chatpage, errors, management, native, openai_resources, resources, responses, rustllm, schemas, security
from .blobs import BlobStore
from .inference import Runner
from .lifecycle import REAP_INTERVAL_S, Reaper, clean_leftovers
from .metrics import Metrics, MetricsMiddleware
from .openapi import OpenAPI
from .schemas import Clock, Reply


class App(falcon.App):
    """A falcon app that also holds what runs beside the routes (the metrics, the
    reaper thread) and can stop it."""

    runner: Runner
    metrics: Metrics
    reaper: Reaper | None = None

    def start_reaper(self, interval: float = REAP_INTERVAL_S) -> Reaper:
        """Start the background side: first clean what killed work left in the store,
        then run the reaper."""
        if self.reaper is None:
            clean_leftovers(self.runner.services)
            self.reaper = Reaper(self.runner.services, interval).start()
        return self.reaper

    def close(self) -> None:
        """Stop the background thread (the services are the caller's to close)."""
        if self.reaper is not None:
            self.reaper.stop()
            self.reaper = None


def create_app(
    services: Services,
    settings: Settings,
    *,
    clock: Clock = time.time,
    max_body: int = resources.MAX_BODY_BYTES,
    hostname: str | None = None,
) -> App:
    """The application over ``services``, configured by ``settings`` (keep_alive
    default, queue bounds, CORS origins, API key, the bound host for the Host check).
    ``clock`` stamps answers and ``/api/ps``; bodies over ``max_body`` bytes get 413;
    ``hostname`` is this machine's name for the Host check (default: asked of the OS).
    """
    metrics = Metrics(loaded=lambda: len(services.loaded()), activity=services.activity)
    runner = Runner(services, metrics, keep_alive=settings.model_ttl)
    middleware = [
        MetricsMiddleware(metrics),
        *security.middleware(
            bind_host=settings.host, origins=settings.origins, api_key=settings.api_key, hostname=hostname
        ),
    ]
    app = App(media_type=falcon.MEDIA_JSON, middleware=middleware)
    app.runner, app.metrics = runner, metrics
    app.req_options.strip_url_path_trailing_slash = True
    errors.install(app)
    if settings.api == "rustllm":  # RustLLM's REST API at /api, instead of Ollama's
        app.add_route("/", chatpage.Root())
    else:
        _ollama_routes(app, runner, settings, clock, max_body)
    _openai_routes(app, runner, clock, max_body)
    _modelport_routes(app, runner, settings, max_body)
    rustllm.mount(app, runner, max_body=max_body)
    if settings.api == "rustllm":
        rustllm.mount(app, runner, prefix="", max_body=max_body)
    return app


def _ollama_routes(app: App, runner: Runner, settings: Settings, clock: Clock, max_body: int) -> None:
    services = runner.services
    tags = resources.Tags(services)
    blobs = BlobStore(Path(settings.home) / "blobs")
    app.add_route("/", chatpage.Root())  # the chat page for browsers, "Ollama is running" for clients
    app.add_route("/api/version", resources.Version(package_version()))
    app.add_route("/api/tags", tags)
    app.add_route("/api/show", resources.Show(services, max_body))
    app.add_route(
        "/api/generate",
        resources.Inference(runner, parse=schemas.parse_generate, shape=Reply.generate, clock=clock, max_body=max_body),
    )
    app.add_route(
        "/api/chat",
        resources.Inference(runner, parse=schemas.parse_chat, shape=Reply.chat, clock=clock, max_body=max_body),
    )
    app.add_route("/api/embed", resources.Embed(runner, max_body=max_body))
    app.add_route("/api/embeddings", resources.Embed(runner, legacy=True, max_body=max_body))
    app.add_route("/api/ps", management.Ps(services, clock))
    app.add_route("/api/pull", management.Pull(services, max_body))
    app.add_route("/api/push", management.Push())
    app.add_route("/api/create", management.Create(services, blobs, max_body, allowed=settings.allowed_folders))
    app.add_route("/api/blobs/{digest}", management.Blob(blobs))
    app.add_route("/api/copy", management.Copy(services, max_body))
    app.add_route("/api/delete", management.Delete(services, blobs, max_body))


def _openai_routes(app: App, runner: Runner, clock: Clock, max_body: int) -> None:
    models = openai_resources.Models(runner)
    app.add_route("/v1/chat/completions", openai_resources.ChatCompletions(runner, clock, max_body))
    app.add_route("/v1/completions", openai_resources.Completions(runner, clock, max_body))
    app.add_route("/v1/embeddings", openai_resources.Embeddings(runner, max_body))
    app.add_route("/v1/models", models)
    answers = responses.Responses(runner, clock, max_body=max_body)
    app.add_route("/v1/responses", answers)
    app.add_route("/v1/responses/{response_id}", answers, suffix="one")
    app.add_route("/v1/models/{model:path}", models, suffix="one")


def _modelport_routes(app: App, runner: Runner, settings: Settings, max_body: int) -> None:
    app.add_route("/health", resources.Health(runner.services, runner, settings.device))
    app.add_route("/metrics", resources.MetricsPage(runner.metrics))
    app.add_route("/openapi.json", OpenAPI(package_version()))
    app.add_route("/api/models", resources.Deprecated(resources.Tags(runner.services), "/api/tags"))
    app.add_route("/v1/generate", native.Generate(runner, stream=False, max_body=max_body))
    app.add_route("/v1/generate_stream", native.Generate(runner, stream=True, max_body=max_body))
    app.add_route("/v1/generate_batch", native.GenerateBatch(runner, max_body))


def get_app() -> App:
    """The production application, wired from the environment (for gunicorn's own
    command line); its reaper thread runs until the worker exits."""
    settings = Settings.load()
    start_distributed(settings)
    app = create_app(bootstrap(settings), settings)
    app.start_reaper()
    return app


def package_version() -> str:
    try:
        return importlib.metadata.version("modelport")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"
