"""The Falcon application: routes, error handling, and the factory gunicorn calls.

    gunicorn 'modelport.entrypoints.http.app:get_app()'

Nothing is built at import: ``get_app()`` loads the settings and wires the services
when the worker calls it.
"""

from __future__ import annotations

import importlib.metadata
import time

import falcon

from modelport.ports import Services

from ..bootstrap import bootstrap
from ..config import Settings
from . import errors, resources, schemas
from .schemas import Clock, Reply


def create_app(
    services: Services,
    settings: Settings,
    *,
    clock: Clock = time.time,
    max_body: int = resources.MAX_BODY_BYTES,
) -> falcon.App:
    """The application over ``services``. ``settings`` is the server's
    configuration (kept for options such as allowed origins); ``clock`` stamps
    ``created_at``; bodies over ``max_body`` bytes are refused with 413."""
    app = falcon.App(media_type=falcon.MEDIA_JSON)
    app.req_options.strip_url_path_trailing_slash = True
    errors.install(app)
    tags = resources.Tags(services)
    app.add_route("/", resources.Root())
    app.add_route("/health", resources.Health(services))
    app.add_route("/api/version", resources.Version(package_version()))
    app.add_route("/api/tags", tags)
    app.add_route("/api/models", resources.Deprecated(tags, "/api/tags"))
    app.add_route("/api/show", resources.Show(services, max_body))
    app.add_route("/api/generate", resources.Inference(
        services, parse=schemas.parse_generate, shape=Reply.generate, clock=clock, max_body=max_body))
    app.add_route("/api/chat", resources.Inference(
        services, parse=schemas.parse_chat, shape=Reply.chat, clock=clock, max_body=max_body))
    return app


def get_app() -> falcon.App:
    """The production application, wired from the environment (for gunicorn)."""
    settings = Settings.load()
    return create_app(bootstrap(settings), settings)


def package_version() -> str:
    try:
        return importlib.metadata.version("modelport")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"
