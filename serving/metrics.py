"""Prometheus metrics of the service: requests, latency, images, queues, models loaded.

Each app owns its own :class:`prometheus_client.CollectorRegistry`, so two apps in one
process (tests) never share counters. No label takes a value a client chose freely:
routes are templates, methods come from a fixed set, so the number of series is
bounded whatever clients send.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["METHODS", "Metrics", "MetricsMiddleware", "method_label"]

# Requests range from a 1 ms health check to seconds for a sensitivity report.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: The HTTP methods that get their own ``method`` label; any other is ``OTHER``.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


def method_label(method: str) -> str:
    """``method`` if it is a standard one, else ``"OTHER"``."""
    return method if method in METHODS else "OTHER"


class _StateCollector(Collector):
    """Reads the model and queue gauges at scrape time, so they are never stale."""

    def __init__(self, loaded: Callable[[], int], failures: Callable[[], int],
                 lanes: Callable[[], Iterable]) -> None:
        self._loaded = loaded
        self._failures = failures
        self._lanes = lanes

    def collect(self):
        yield GaugeMetricFamily(
            "keras_sns_model_versions_loaded", "Model versions held in memory.", value=self._loaded()
        )
        yield CounterMetricFamily(
            "keras_sns_model_load_failures",
            "Model versions that failed to load (missing, corrupt or half-written).",
            value=self._failures(),
        )
        running = GaugeMetricFamily("keras_sns_model_calls_running",
                                    "Model calls running, by lane.", labels=["lane"])
        waiting = GaugeMetricFamily("keras_sns_model_calls_waiting",
                                    "Requests queued for a model worker, by lane.", labels=["lane"])
        abandoned = CounterMetricFamily(
            "keras_sns_model_calls_abandoned",
            "Queued requests dropped unrun because their client disconnected, by lane.",
            labels=["lane"],
        )
        for lane in self._lanes():
            running.add_metric([lane.name], lane.running)
            waiting.add_metric([lane.name], lane.waiting)
            abandoned.add_metric([lane.name], lane.abandoned)
        yield running
        yield waiting
        yield abandoned


class Metrics:
    """The service's metrics in their own registry.

    Args:
        loaded: Returns the number of model versions loaded.
        failures: Returns the number of failed loads so far.
        lanes: Returns the :class:`serving.admission.Lane` objects (queue gauges).
    """

    def __init__(self, loaded: Callable[[], int], failures: Callable[[], int],
                 lanes: Callable[[], Iterable] = tuple) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "keras_sns_http_requests", "HTTP requests by route template, method and status.",
            ["route", "method", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "keras_sns_http_request_duration_seconds", "HTTP request latency by route template.",
            ["route"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.images = Counter(
            "keras_sns_images", "Images run through a model, by endpoint.", ["endpoint"],
            registry=self.registry,
        )
        self.refused_connections = Counter(
            "keras_sns_refused_connections",
            "Connections closed before reaching the app, by reason "
            "(max_connections, header_timeout, invalid_http).",
            ["reason"], registry=self.registry,
        )
        self.registry.register(_StateCollector(loaded, failures, lanes))


class MetricsMiddleware:
    """ASGI middleware counting every HTTP request by route template and status.

    The route *template* (``/v1/models/{name}:predict``), not the raw path, labels the
    series, and the method comes from :data:`METHODS`, so a client cannot grow the
    number of series by inventing URLs or methods.
    """

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]  # if the app raises before answering

        async def send_and_record(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = getattr(scope.get("route"), "path", "<unmatched>")
            self.metrics.requests.labels(route, method_label(scope["method"]), str(status[0])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
