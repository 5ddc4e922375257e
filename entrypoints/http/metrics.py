"""Prometheus metrics for one application, on its own registry.

Each app gets its own :class:`CollectorRegistry` (never the process-wide default), so
tests and several apps in one process never clash. ``/metrics`` serves it in the
text exposition format.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Iterator, Mapping

import falcon
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest

from modelport.domain import TokenEvent
from modelport.domain import SlotStats

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
FIRST_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
UNMATCHED = "unmatched"


class Metrics:
    """The application's instruments. ``loaded`` and ``activity`` (each loaded
    model's slots, queue and decode rate) are read when ``/metrics`` is scraped."""

    def __init__(self, *, loaded: Callable[[], int], activity: Callable[[], Mapping[str, SlotStats]] = dict) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "modelport_http_requests", "HTTP requests answered.", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "modelport_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer (streams included).",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_progress = Gauge("modelport_http_requests_in_progress", "Requests being answered now.", registry=r)
        self.prompt_tokens = Counter("modelport_prompt_tokens", "Prompt tokens evaluated.", ["model"], registry=r)
        self.completion_tokens = Counter("modelport_completion_tokens", "Tokens generated.", ["model"], registry=r)
        self.first_token = Histogram(
            "modelport_time_to_first_token_seconds",
            "Time from a request's arrival to its first generated text.",
            ["model"],
            buckets=FIRST_TOKEN_BUCKETS,
            registry=r,
        )
        Gauge("modelport_loaded_models", "Models loaded in this worker.", registry=r).set_function(loaded)
        Gauge("modelport_queue_depth", "Requests waiting for a model.", registry=r).set_function(
            lambda: sum(stats.waiting for stats in activity().values())
        )
        r.register(_SlotCollector(activity))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def observe(self, events: Iterable[TokenEvent], model: str, started: float) -> Iterator[TokenEvent]:
        """Pass ``events`` through, recording the time to the first text and the
        token counts of the final event. ``started`` is a ``time.monotonic()``."""
        first = True
        for event in events:
            if first and (event.text or event.done):
                first = False
                self.first_token.labels(model).observe(time.monotonic() - started)
            if event.done and event.usage is not None:
                self.prompt_tokens.labels(model).inc(event.usage.prompt_tokens)
                self.completion_tokens.labels(model).inc(event.usage.completion_tokens)
            yield event

    def count_embedding(self, model: str, prompt_tokens: int) -> None:
        self.prompt_tokens.labels(model).inc(prompt_tokens)


class _SlotCollector:
    """Per-model gauges read from the schedulers at scrape time."""

    def __init__(self, activity: Callable[[], Mapping[str, SlotStats]]) -> None:
        self._activity = activity

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        activity = self._activity()
        slots = GaugeMetricFamily("modelport_slots", "Slots of each loaded model, by state.", labels=["model", "state"])
        waiting = GaugeMetricFamily(
            "modelport_model_queue_depth", "Requests waiting for a slot, per model.", labels=["model"]
        )
        rate = GaugeMetricFamily(
            "modelport_decode_tokens_per_second",
            "Tokens generated per second over the last 10 s, all slots of a model.",
            labels=["model"],
        )
        for name, stats in sorted(activity.items()):
            slots.add_metric([name, "busy"], stats.busy)
            slots.add_metric([name, "free"], stats.free)
            waiting.add_metric([name], stats.waiting)
            rate.add_metric([name], stats.tokens_per_second)
        yield from (slots, waiting, rate)


class MetricsMiddleware:
    """Counts every request and times it until its answer is fully sent."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.monotonic()
        self._metrics.in_progress.inc()

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool) -> None:
        started = getattr(req.context, "started", None)
        if started is None:
            return
        route = req.uri_template or UNMATCHED
        status = resp.status_code
        self._metrics.requests.labels(route, req.method, str(status)).inc()
        finish = lambda: self._finish(route, req.method, started)  # noqa: E731
        if resp.stream is not None and not hasattr(resp.stream, "read"):
            resp.stream = _Finally(resp.stream, finish)
        else:
            finish()

    def _finish(self, route: str, method: str, started: float) -> None:
        self._metrics.latency.labels(route, method).observe(time.monotonic() - started)
        self._metrics.in_progress.dec()


class _Finally:
    """A response body that runs ``done`` once, when the server closes it (after the
    last byte, or when the client went away)."""

    def __init__(self, body: Iterable[bytes], done: Callable[[], None]) -> None:
        self._body = body
        self._done: Callable[[], None] | None = done

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            if self._done is not None:
                done, self._done = self._done, None
                done()
