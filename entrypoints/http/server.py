"""Running the HTTP API under gunicorn, from Python (``modelport serve``).

:class:`~.worker.HeadFirstWorker` workers (gthread that reads request heads in its
main loop): each worker process holds its own loaded models, and its threads serve
requests side by side (a long generation does not block ``/api/tags``; slow or silent
connections hold no thread). The application is built inside each worker, after the
fork, never in the master.

The same application runs under gunicorn's own command line:

    gunicorn --worker-class modelport.entrypoints.http.worker.HeadFirstWorker --threads 4 \
        'modelport.entrypoints.http.app:get_app()'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from gunicorn.app.base import BaseApplication

from modelport.ports import Services

from ..bootstrap import bootstrap, start_distributed
from ..config import Settings

# With gthread workers this bounds how long a worker's main loop may stay silent
# (not how long a request may take): only a worker frozen this long is restarted.
WORKER_TIMEOUT_S = 600
# How long in-flight requests get to finish after SIGTERM.
GRACEFUL_TIMEOUT_S = 30
# How long an idle kept-alive connection stays open (it holds no thread meanwhile).
KEEPALIVE_S = 5
WORKER_CLASS = "modelport.entrypoints.http.worker.HeadFirstWorker"
# A Unix socket path must fit in sun_path (108 bytes on Linux, 104 on macOS).
MAX_SOCKET_PATH = 100

WSGIApp = Callable[..., Any]


class ProductionApp:
    """Builds the application in the worker, and closes its services (unloading the
    models) when the worker exits."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._services: Services | None = None
        self._app: Any = None

    def __call__(self) -> WSGIApp:
        from .app import create_app

        start_distributed(self._settings)  # in the worker: the process that runs the engine
        self._services = bootstrap(self._settings)
        self._app = create_app(self._services, self._settings)
        self._app.start_reaper()
        return self._app

    def close(self, arbiter: object = None, worker: object = None) -> None:
        if self._app is not None:
            self._app.close()
            self._app = None
        if self._services is not None:
            self._services.close()
            self._services = None


class _Gunicorn(BaseApplication):
    def __init__(self, factory: Callable[[], WSGIApp], options: dict[str, Any]) -> None:
        self._factory = factory
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> WSGIApp:
        return self._factory()


def gunicorn_options(
    settings: Settings, *, workers: int = 1, threads: int | None = None, access_log: bool = False
) -> dict[str, Any]:
    """gunicorn's settings for ``settings``."""
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return {
        "bind": [f"{host}:{settings.port}"],
        "workers": workers,
        "worker_class": WORKER_CLASS,
        "threads": threads or settings.threads,
        "timeout": WORKER_TIMEOUT_S,
        "graceful_timeout": GRACEFUL_TIMEOUT_S,
        "keepalive": KEEPALIVE_S,
        "preload_app": False,
        "accesslog": "-" if access_log else None,
        "errorlog": "-",
        "proc_name": "modelport",
        **control_socket(settings),
    }


def control_socket(settings: Settings) -> dict[str, Any]:
    """gunicorn's control socket (for ``gunicornc``) inside ``MODELPORT_HOME``, one per
    port, never in the user's home where every server would share one; off when that
    path is too long for a Unix socket."""
    path = Path(settings.home) / "run" / f"gunicorn-{settings.port}.ctl"
    if len(str(path)) > MAX_SOCKET_PATH:
        return {"control_socket_disable": True}
    return {"control_socket": str(path)}


def serve(
    settings: Settings,
    *,
    workers: int = 1,
    threads: int | None = None,
    access_log: bool = False,
    app_factory: Callable[[], WSGIApp] | None = None,
) -> None:
    """Serve until interrupted. ``threads`` defaults to ``settings.threads``;
    ``app_factory`` (called in each worker) defaults to the production wiring."""
    options = gunicorn_options(settings, workers=workers, threads=threads, access_log=access_log)
    if app_factory is None:
        production = ProductionApp(settings)
        options["worker_exit"] = production.close
        app_factory = production
    _Gunicorn(app_factory, options).run()
