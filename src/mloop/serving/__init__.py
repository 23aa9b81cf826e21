"""Serving: model runtime, micro-batcher and traffic router (the prediction log is ``mloop.predlog``).

:class:`PredictionService` is the handler layer behind ``mloop serve`` (no HTTP in it): it loads the
version the serving alias points at, validates requests against the data contract
(:class:`ContractValidator`), micro-batches them (:class:`MicroBatcher`) through a
:class:`ModelRuntime` chosen by the :class:`Router`, logs every prediction off the hot path and swaps
versions without downtime. Rollout strategies install arms with ``service.router.set_routes([...])``
using runtimes from ``await service.load_runtime(ref)``.

Each ``mloop serve`` worker process loads its own copy of the model; memory is not shared.
"""

from mloop.serving.batcher import MicroBatcher
from mloop.serving.metrics import ServingMetrics
from mloop.serving.responses import Prediction
from mloop.serving.router import Route, Router
from mloop.serving.runtime import BatchOutput, ModelRuntime, build_frame
from mloop.serving.service import PredictionService
from mloop.serving.source import ModelSource, RegistrySource, StaticSource
from mloop.serving.validation import Columns, ContractValidator

__all__ = [
    "BatchOutput",
    "Columns",
    "ContractValidator",
    "MicroBatcher",
    "ModelRuntime",
    "ModelSource",
    "Prediction",
    "PredictionService",
    "RegistrySource",
    "Route",
    "Router",
    "ServingMetrics",
    "StaticSource",
    "build_frame",
]
