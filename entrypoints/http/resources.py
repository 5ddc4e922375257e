"""The HTTP resources: parse the body (schemas), call a use case (Services), render.

Resources never touch an adapter and never catch a modelport error: the handlers
in :mod:`.errors` turn those into statuses.
"""

from __future__ import annotations

import functools
import glob
import json
import os
from pathlib import Path
from typing import Any, Callable

import falcon

from modelport.domain import Capability, CapabilityMissing, InvalidRequest, ModelInfo
from modelport.domain import SlotStats
from modelport.ports import Services

from . import logprobs, model_schemas, schemas, streaming
from .disconnect import watch_of
from .inference import Runner
from .schemas import Body, Call, Clock, Reply

MAX_BODY_BYTES = 16 * 1024 * 1024


def read_json(req: falcon.Request, limit: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The request body as a JSON object; 400 when missing or malformed, 413 when
    larger than ``limit`` bytes."""
    if req.content_length is not None and req.content_length > limit:
        raise _too_large(limit)
    data = read_body(body_stream(req), limit + 1)
    if len(data) > limit:
        raise _too_large(limit)
    if not data.strip():
        raise InvalidRequest("missing request body")
    try:
        body = json.loads(data)
    except ValueError as exc:
        raise InvalidRequest(f"invalid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return body


def body_stream(req: falcon.Request) -> Any:
    """The request body: ``Content-Length`` bytes, or, sent in chunks
    (``Transfer-Encoding: chunked``, as ``requests`` sends a generator and Go an
    ``io.Reader``), the server's decoded stream up to its end."""
    if req.content_length is None and "chunked" in (req.get_header("Transfer-Encoding") or "").lower():
        return req.stream
    return req.bounded_stream


def read_body(stream: Any, size: int) -> bytes:
    """Up to ``size`` bytes of the body; 408 when the client stalls sending it (the
    server's socket timed out, see worker.py)."""
    try:
        return stream.read(size)
    except TimeoutError:
        raise falcon.HTTPError(falcon.HTTP_408, description="the request body did not arrive in time") from None


def _too_large(limit: int) -> falcon.HTTPError:
    return falcon.HTTPContentTooLarge(description=f"the request body is larger than {limit} bytes")


class Root:
    """``/``: Ollama clients probe it to see whether a server is up."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "modelport is running"

    on_head = on_get


class Version:
    def __init__(self, version: str) -> None:
        self._version = version

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"version": self._version}

    on_head = on_get


class Health:
    """``/health``: the server is up; which engines can run here, on what, and what
    is loaded. Never needs the API key."""

    def __init__(self, services: Services, runner: Runner, device: str = "auto") -> None:
        self._services = services
        self._runner = runner
        self._device = device

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        activity = self._services.activity()
        resp.media = {
            "status": "ok",
            "engines": self._services.engines.status(),
            "devices": devices(self._device),
            "loaded": [running.model.name for running in self._services.loaded()],
            "queue": {
                "active": sum(s.busy for s in activity.values()),
                "waiting": sum(s.waiting for s in activity.values()),
                "max_waiting": self._services.max_queue,
            },
            "slots": {name: slots(stats) for name, stats in activity.items()},
        }

    on_head = on_get


def slots(stats: SlotStats) -> dict[str, Any]:
    return {
        "total": stats.slots,
        "busy": stats.busy,
        "free": stats.free,
        "waiting": stats.waiting,
        "tokens_per_second": round(stats.tokens_per_second, 2),
    }


def devices(requested: str) -> dict[str, Any]:
    """What the server may compute on, found without importing any engine library."""
    return {"requested": requested, "cpu_count": os.cpu_count() or 1, "gpus": list(_nvidia_gpus())}


@functools.lru_cache(maxsize=1)
def _nvidia_gpus() -> tuple[str, ...]:
    """NVIDIA GPUs the driver lists (Linux); empty elsewhere."""
    names = []
    for info in sorted(glob.glob("/proc/driver/nvidia/gpus/*/information")):
        try:
            text = Path(info).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("Model:")), "")
        names.append(model or "NVIDIA GPU")
    return tuple(names)


class Tags:
    """``/api/tags``: the installed models."""

    def __init__(self, services: Services) -> None:
        self._services = services

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = model_schemas.tags(self._services.list_models())

    on_head = on_get


class Deprecated:
    """An old path that answers like its successor, and says so in its headers."""

    def __init__(self, successor: Tags, path: str) -> None:
        self._successor = successor
        self._path = path

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._successor.on_get(req, resp)
        resp.set_header("Deprecation", "true")
        resp.set_header("Link", f'<{self._path}>; rel="successor-version"')

    on_head = on_get


class Show:
    def __init__(self, services: Services, max_body: int = MAX_BODY_BYTES) -> None:
        self._services = services
        self._max_body = max_body

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        name = schemas.parse_show(read_json(req, self._max_body))
        resp.media = model_schemas.show(self._services.show(name))


class Inference:
    """``/api/generate`` and ``/api/chat``: they differ only in how the body is
    parsed (``parse``) and how the answer is shaped (``shape``)."""

    def __init__(
        self,
        runner: Runner,
        *,
        parse: Callable[[Body, schemas.Policy], Call],
        shape: Callable[[str, Clock], Reply],
        clock: Clock,
        max_body: int = MAX_BODY_BYTES,
    ) -> None:
        self._runner = runner
        self._services = runner.services
        self._parse = parse
        self._shape = shape
        self._clock = clock
        self._max_body = max_body

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, self._max_body)
        model = self._services.show(schemas.model_name(body))  # the request's one store lookup
        call = self._parse(body, functools.partial(self._services.sampling_for, model))
        reply = self._shape(call.model, self._clock)
        if call.needs:
            raise CapabilityMissing(model.name, call.needs[0])
        if call.request is None:
            resp.media = reply.done(self._load_or_unload(call, model))
            return
        events, stream = self._runner.generate(
            call.request, model=model, keep_alive=call.keep_alive, started=getattr(req.context, "started", None)
        )
        top = call.request.logprobs
        if top is not None:
            texts = self._runner.token_texts(model)
            reply = reply.with_logprobs(lambda entries: logprobs.ollama(entries, texts, top))
        if call.stream:
            resp.content_type = streaming.NDJSON
            resp.stream = streaming.ndjson(events, stream, reply)
        else:
            resp.media = streaming.whole(events, stream, reply, watch_of(req))

    def _load_or_unload(self, call: Call, model: ModelInfo) -> str:
        if call.unloads:
            self._services.unload(model)
            return "unload"
        self._services.load(model, keep_alive=self._runner.keep_alive_for(call.keep_alive))
        return "load"


class Embed:
    """``/api/embed`` (a batch) and the legacy ``/api/embeddings`` (one prompt)."""

    def __init__(self, runner: Runner, *, legacy: bool = False, max_body: int = MAX_BODY_BYTES) -> None:
        self._runner = runner
        self._legacy = legacy
        self._max_body = max_body

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, self._max_body)
        call = model_schemas.parse_embeddings(body) if self._legacy else model_schemas.parse_embed(body)
        model = self._runner.services.show(call.model)  # the request's one store lookup
        if not call.inputs:
            resp.media = {"embedding": []} if self._legacy else {"model": call.model, "embeddings": []}
            return
        if not model.supports(Capability.EMBEDDING):
            raise CapabilityMissing(model.name, "embeddings")
        result = self._runner.embed(call.request, model=model, keep_alive=call.keep_alive)
        if self._legacy:
            resp.media = {"embedding": list(result.vectors[0])}
        else:
            resp.media = {**model_schemas.embed_reply(result, call.dimensions), "model": call.model}


class MetricsPage:
    """``/metrics``: Prometheus' text format, from this app's own registry."""

    def __init__(self, metrics: Any) -> None:
        self._metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        from prometheus_client.exposition import CONTENT_TYPE_LATEST

        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = self._metrics.exposition()
