"""The Prometheus metrics of ``mloop serve`` (listed in docs/serving.md, "Metrics").

Each :class:`ServingMetrics` owns its metrics in one :class:`~prometheus_client.CollectorRegistry`
(a fresh one by default, so several apps in one process — tests — do not collide). Label children
are cached per label set: ``labels()`` costs a dict lookup and a lock, which adds up on the hot path.

With several worker processes (``mloop serve --workers N``), set ``PROMETHEUS_MULTIPROC_DIR`` (the CLI
does it for you): every worker then writes its values to files in that directory and ``/metrics``
on any worker returns the sum over all workers.
"""

from __future__ import annotations

import contextlib
import os
import time
from functools import lru_cache
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["CONTENT_TYPE", "ServingMetrics", "status_class"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Bounds between whole numbers: Prometheus' histogram_quantile interpolates linearly inside a bucket,
# so the bucket (0.5, 1.5] that holds only single-row batches reads 1 at its middle (a median of
# single-row batches is 1, not the 0.5 that a first bucket of (0, 1] gives).
_BATCH_BUCKETS = (0.5, 1.5, 2.5, 4.5, 8.5, 16.5, 32.5, 64.5, 128.5, 256.5, 512.5, 1024.5, 4096.5)
_STATUS_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


def status_class(status: int) -> str:
    """The latency histogram's ``status`` label: ``2xx``, ``4xx`` or ``5xx`` (refusals are not
    mixed into the latency of answered predictions)."""
    return _STATUS_CLASSES.get(status // 100, "other")


class ServingMetrics:
    """Every serving metric (the list is in docs/serving.md, "Metrics"), on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "mloop_requests", "Requests answered.", ["model", "version", "endpoint", "status"], registry=r
        )
        self.request_latency = Histogram(
            "mloop_request_latency_seconds",
            "End-to-end request latency, by status class (2xx, 4xx, 5xx).",
            ["model", "endpoint", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.model_latency = Histogram(
            "mloop_model_latency_seconds",
            "Model call latency per batch.",
            ["model", "version"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "mloop_batch_size", "Rows per model call.", ["model"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.queue_depth = Gauge(
            "mloop_queue_depth",
            "Rows waiting for the model.",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.validation_errors = Counter(
            "mloop_validation_errors",
            "Request fields that broke the contract.",
            ["model", "field", "rule"],
            registry=r,
        )
        self.predictions = Counter(
            "mloop_predictions", "Predicted classes (classifiers).", ["model", "version", "class"], registry=r
        )
        self.prediction_value = Histogram(
            "mloop_prediction_value",
            "Predicted values (regressors).",
            ["model", "version"],
            buckets=(-1000, -100, -10, -1, 0, 1, 10, 100, 1000, 10000, 100000),
            registry=r,
        )
        self.model_info = Gauge(
            "mloop_model_info",
            "What is loaded (1 per loaded version).",
            ["model", "version", "alias", "loaded_at"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self.log_dropped = Counter(
            "mloop_prediction_log_dropped",
            "Prediction log records dropped because the buffer was full.",
            registry=r,
        )
        # Bound methods cached per label set: the hot path pays one dict lookup per metric.
        self.request_child = lru_cache(maxsize=4096)(self.requests.labels)
        self.latency_child = lru_cache(maxsize=1024)(self.request_latency.labels)
        self.model_latency_child = lru_cache(maxsize=1024)(self.model_latency.labels)
        self.batch_child = lru_cache(maxsize=1024)(self.batch_size.labels)
        self.depth_child = lru_cache(maxsize=1024)(self.queue_depth.labels)
        self.class_child = lru_cache(maxsize=8192)(self.predictions.labels)
        self.value_child = lru_cache(maxsize=1024)(self.prediction_value.labels)
        self.validation_child = lru_cache(maxsize=8192)(self.validation_errors.labels)
        # Per request: (model, version, endpoint, status) -> the request counter's and the latency
        # histogram's bound methods, found with one lookup of the arguments as given.
        self._request_observers: dict[tuple[str, str, str, int], tuple[Any, Any]] = {}

    @staticmethod
    def _stamp(loaded_at: float) -> str:
        millis = int(loaded_at * 1000) % 1000
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(loaded_at)) + f".{millis:03d}Z"

    def observe_request(self, model: str, version: str, endpoint: str, status: int, seconds: float) -> None:
        key = (model, version, endpoint, status)
        observe = self._request_observers.get(key)
        if observe is None:
            if len(self._request_observers) >= 4096:
                self._request_observers.clear()
            observe = self._request_observers[key] = (
                self.request_child(model, version, endpoint, str(status)).inc,
                self.latency_child(model, endpoint, status_class(status)).observe,
            )
        observe[0]()
        observe[1](seconds)

    def set_loaded(self, model: str, version: str, alias: str, loaded_at: float) -> None:
        self.model_info.labels(model, version, alias, self._stamp(loaded_at)).set(1)

    def set_unloaded(self, model: str, version: str, alias: str, loaded_at: float) -> None:
        with contextlib.suppress(KeyError):
            self.model_info.remove(model, version, alias, self._stamp(loaded_at))

    def render(self) -> bytes:
        """The exposition text: this process's registry, or every worker's in multiprocess mode."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            merged = CollectorRegistry()
            # prometheus_client leaves MultiProcessCollector.__init__ unannotated.
            MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged)
        return generate_latest(self.registry)

    def sample(self, name: str, labels: dict[str, str] | None = None) -> Any:
        """The current value of one sample (tests and the admin API)."""
        return self.registry.get_sample_value(name, labels or {})
