"""One loaded model version ready to serve: the model, its contract validator and its batcher.

A :class:`ModelRuntime` is built from a :class:`~mloop.tracking.LoadedModel`, warmed with the input
example saved with the version, then started (its batcher runs on the event loop). Several runtimes
can live at once — the champion and any rollout arms — and the :class:`~mloop.serving.router.Router`
picks one per request. Classifiers are called once per batch through ``predict_proba``; the predicted
class is the most probable one (what ``predict`` returns for scikit-learn classifiers).

Tree-ensemble pipelines are compiled at load (:mod:`mloop.serving.fastpath`): a batch is then
answered from the validated lists without a DataFrame, with the same numbers, in about a millisecond,
and — when a full batch measured at warm-up stays under ``INLINE_MAX_S`` — on the event loop itself
(see :class:`~mloop.serving.batcher.MicroBatcher`). Other models, and batches the compiled path
declines, go through the frame below and the pipeline.

The frame handed to the model is built once per batch with the dtypes the training pipeline saw
(see :mod:`mloop.data.coerce`): ``int64``/``Int64``, ``float64``, ``bool``/``boolean``,
``datetime64`` for date-times; categories and text are plain object columns (same values as pandas'
string dtype, read faster by scikit-learn's encoders).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import sklearn
import yaml

from mloop.config.settings import ServingSettings
from mloop.data.predict import model_classes, predict_with_proba
from mloop.data.schema import ColumnSpec, DataContract
from mloop.errors import ServingError
from mloop.serving.batcher import MicroBatcher
from mloop.serving.fastpath import CompiledModel, OnnxModel, compile_model, load_onnx
from mloop.serving.metrics import ServingMetrics
from mloop.serving.stats import InferenceStats
from mloop.serving.validation import Columns, ContractValidator
from mloop.tracking import LoadedModel

__all__ = ["BatchOutput", "ModelRuntime", "build_frame"]

log = logging.getLogger(__name__)

# A compiled model whose full batch takes less than this runs on the event loop (see the batcher).
INLINE_MAX_S = 0.004


@dataclass(slots=True)
class BatchOutput:
    """The model's answer for one request's rows."""

    predictions: list[Any]
    probabilities: list[list[float]] | None
    model_seconds: float


def _column(spec: ColumnSpec, values: list[Any]) -> Any:
    has_none = None in values
    if spec.dtype == "float":
        return np.array(values, dtype="float64")  # None becomes NaN
    if spec.dtype == "int":
        return (
            pd.array(values, dtype="Int64") if has_none or spec.nullable else np.array(values, dtype="int64")
        )
    if spec.dtype == "bool":
        return (
            pd.array(values, dtype="boolean") if has_none or spec.nullable else np.array(values, dtype="bool")
        )
    if spec.dtype == "datetime":
        return pd.to_datetime(pd.Series(values, dtype="object"), utc=None, format="ISO8601")
    # Plain object columns: scikit-learn's encoders read them ~30% faster than pandas' string dtype,
    # with the same categories and the same output.
    return np.array(values, dtype=object)


def build_frame(specs: Sequence[ColumnSpec], parts: Sequence[Columns]) -> pd.DataFrame:
    """One DataFrame from the validated rows of several requests, in order, with contract dtypes."""
    data: dict[str, Any] = {}
    for spec in specs:
        if len(parts) == 1:
            values = parts[0].values[spec.name]
        else:
            values = [v for part in parts for v in part.values[spec.name]]
        data[spec.name] = _column(spec, values)
    return pd.DataFrame(data)


class ModelRuntime:
    """A loaded version with everything needed to answer requests for it."""

    def __init__(
        self,
        loaded: LoadedModel,
        settings: ServingSettings | None = None,
        *,
        metrics: ServingMetrics | None = None,
        alias: str = "champion",
    ) -> None:
        self.settings = settings or ServingSettings()
        self.loaded = loaded
        self.model = loaded.model
        if self.settings.model_threads is not None:
            _limit_threads(self.model, self.settings.model_threads)
        self.name = loaded.info.name
        self.version = str(loaded.info.version)
        self.alias = alias
        self.contract = DataContract.from_dict(loaded.contract)
        self.task = self.contract.task or (
            "classification" if hasattr(self.model, "predict_proba") else "regression"
        )
        classes = model_classes(self.model, self.task)
        self.is_classifier = classes is not None
        # Supported tree-ensemble pipelines answer through numpy tables built once here (same outputs,
        # ~10x less time per batch); anything else keeps the pipeline itself.
        self.compiled: CompiledModel | OnnxModel | None = compile_model(self.model)
        if self.compiled is not None and self.compiled.trees.is_classifier != self.is_classifier:
            self.compiled = None  # e.g. a classifier served as a regression: keep predict()'s answers
        log.info("%s v%s: %s", self.name, self.version, self.compiled or "served through scikit-learn")
        self.classes: list[Any] = classes or []
        self.class_labels = [str(c) for c in self.classes]
        # A verified ONNX copy (docs/onnx.md) takes the compiled path's place: at once under
        # serving.onnx=require, under auto only if warm() measures it faster; nothing per request.
        self.onnx = load_onnx(
            loaded,
            self.settings.onnx,
            classes=self.classes if self.is_classifier else None,
            threads=self.settings.model_threads,
        )
        self.serving_path = "compiled" if self.compiled is not None else "scikit-learn"
        """What answers batches: ``onnx``, ``compiled`` or ``scikit-learn`` (chosen at load)."""
        if self.onnx is not None and self.settings.onnx == "require":
            self.compiled, self.serving_path = self.onnx, "onnx"
        features = (loaded.evaluation or {}).get("features") or {}
        used = list(features.get("numeric", [])) + list(features.get("categorical", []))
        self.validator = ContractValidator(
            self.contract,
            required=used or None,
            unseen_category=self.settings.unseen_category,
            out_of_range=self.settings.out_of_range,
        )
        self.specs = self.validator.specs()
        self.mlflow_output = _mlflow_output(loaded)
        self.metrics = metrics
        self.loaded_at = time.time()
        self.inflight = 0
        self.stats = InferenceStats()
        """Triton-style inference statistics of this version (``/v2/models/{name}/stats``)."""
        self.batcher: MicroBatcher[Columns, BatchOutput] = MicroBatcher(
            self._run_batch,
            size=lambda c: c.n,
            max_batch_rows=self.settings.max_batch_rows,
            max_wait_ms=self.settings.max_wait_ms,
            max_queue=self.settings.max_queue,
            latency_budget_s=self.settings.latency_budget_ms / 1000.0,
            on_depth=self._depth_gauge(),
            name=f"{self.name} v{self.version}",
        )

    def __repr__(self) -> str:
        return f"ModelRuntime({self.name!r}, version={self.version}, alias={self.alias!r})"

    def _depth_gauge(self) -> Any:
        if self.metrics is None:
            return None
        return self.metrics.depth_child(self.name).set

    # -- model calls (worker thread) -------------------------------------------------------------
    def predict_frame(self, frame: pd.DataFrame) -> tuple[list[Any], list[list[float]] | None]:
        """Predictions (and class probabilities for classifiers) for a frame of contract columns."""
        # The contract validator has already refused non-finite numbers (and JSON cannot carry them),
        # so scikit-learn's per-step finiteness scans are skipped; missing values stay NaN for imputers.
        with sklearn.config_context(assume_finite=True):
            predictions, proba = predict_with_proba(
                self.compiled or self.model, frame, self.classes if self.is_classifier else None
            )
        return predictions.tolist(), None if proba is None else proba.tolist()

    def predict_columns(self, items: Sequence[Columns]) -> tuple[list[Any], list[list[float]] | None]:
        """Predictions for validated request rows, in order (one model call for all of them).

        A compiled model reads the validated lists directly; otherwise (or when the compiled path
        declines a batch) the rows become a frame for :meth:`predict_frame`.
        """
        compiled = self.compiled
        if compiled is not None and compiled.inputs is not None:
            n = sum(item.n for item in items)
            if len(items) == 1:
                values = items[0].values
            else:
                values = {k: [v for item in items for v in item.values[k]] for k in compiled.inputs}
            mean = compiled.mean_lists(values, n)
            if mean is not None:
                if self.is_classifier:
                    picked = np.asarray(self.classes, dtype=object)[mean.argmax(axis=1)]
                    return list(picked), mean.tolist()
                return mean[:, 0].tolist(), None
        return self.predict_frame(build_frame(self.specs, items))

    def _run_batch(self, items: list[Columns]) -> list[BatchOutput]:
        started = time.perf_counter()
        try:
            predictions, proba = self.predict_columns(items)
        except Exception as exc:
            rows = sum(item.n for item in items)
            raise ServingError(
                f"Model {self.name} v{self.version} failed on a batch of {rows} rows: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        seconds = time.perf_counter() - started
        self.stats.batch(len(predictions), seconds)
        self._observe(len(predictions), predictions, seconds)
        out: list[BatchOutput] = []
        start = 0
        for item in items:
            stop = start + item.n
            out.append(BatchOutput(predictions[start:stop], proba[start:stop] if proba else None, seconds))
            start = stop
        return out

    def _observe(self, rows: int, predictions: list[Any], seconds: float) -> None:
        m = self.metrics
        if m is None:
            return
        m.model_latency_child(self.name, self.version).observe(seconds)
        m.batch_child(self.name).observe(rows)
        if self.is_classifier:
            for label, count in Counter(map(str, predictions)).items():
                m.class_child(self.name, self.version, label).inc(count)
        else:
            child = m.value_child(self.name, self.version)
            for value in predictions:
                child.observe(float(value))

    # -- lifecycle -------------------------------------------------------------------------------
    def example_rows(self) -> list[dict[str, Any]]:
        """The input example saved with the version (MLflow's ``input_example.json``) as records."""
        path = self.loaded.path / "input_example.json"
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and "columns" in data and "data" in data:
                return [dict(zip(data["columns"], row, strict=False)) for row in data["data"]]
            if isinstance(data, list):
                return [r for r in data if isinstance(r, dict)]
        return [_typical_row(self.specs)]

    def warm(self) -> None:
        """Run the input example through validation and the model once (first calls are slow)."""
        columns = self.validator.from_records(self.example_rows())
        for _ in range(2):  # warm-up calls stay out of the metrics: they are not traffic
            self.predict_frame(build_frame(self.specs, [columns]))
            self.predict_columns([columns])
        if self.onnx is not None and self.settings.onnx == "auto":
            self._choose_onnx(columns)
        if self.compiled is not None:
            self.batcher.inline = self._full_batch_seconds(columns) < INLINE_MAX_S

    def _choose_onnx(self, columns: Columns) -> None:
        """Keep the ONNX copy only if it answers a full warm-up batch faster than the current path."""
        current, path = self.compiled, self.serving_path
        theirs = self._full_batch_seconds(columns)
        self.compiled = self.onnx
        ours = self._full_batch_seconds(columns)
        if ours >= theirs:
            self.compiled = current
        else:
            self.serving_path = "onnx"
        log.info(
            "%s v%s: serving through %s (ONNX Runtime %.3f ms, %s %.3f ms for %d rows)",
            self.name,
            self.version,
            self.serving_path,
            ours * 1e3,
            path,
            theirs * 1e3,
            self.settings.max_batch_rows,
        )

    def _full_batch_seconds(self, columns: Columns) -> float:
        """Best of three timings of a ``max_batch_rows`` batch made of repeated example rows."""
        rows = self.settings.max_batch_rows
        reps = -(-rows // columns.n)
        full = Columns({k: (v * reps)[:rows] for k, v in columns.values.items()}, rows, [None] * rows)
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            self.predict_columns([full])
            best = min(best, time.perf_counter() - started)
        return best

    def start(self) -> None:
        """Start the batcher on the running event loop; record the version as loaded."""
        self.batcher.start()
        if self.metrics is not None:
            self.metrics.set_loaded(self.name, self.version, self.alias, self.loaded_at)

    async def stop(self) -> None:
        """Finish queued work, then release the batcher."""
        await self.batcher.close()
        if self.metrics is not None:
            self.metrics.set_unloaded(self.name, self.version, self.alias, self.loaded_at)

    async def predict(self, columns: Columns) -> BatchOutput:
        """Predict validated rows through the batcher."""
        return await self.batcher.submit(columns)


def _limit_threads(model: Any, threads: int) -> None:
    """Set every ``n_jobs`` of the (pipeline) model, and a PyTorch step's ``threads``, to ``threads``."""
    get_params = getattr(model, "get_params", None)
    if get_params is None:
        return
    names = ("n_jobs", "threads")  # threads: mloop.training.torch_net's intra-op thread count
    keys = [k for k in get_params(deep=True) if k in names or k.endswith(tuple(f"__{n}" for n in names))]
    if keys:
        model.set_params(**dict.fromkeys(keys, threads))


def _typical_row(specs: Sequence[ColumnSpec]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for s in specs:
        if s.dtype in ("int", "float"):
            mid = ((s.min or 0.0) + (s.max if s.max is not None else (s.min or 0.0))) / 2
            row[s.name] = int(mid) if s.dtype == "int" else float(mid)
        elif s.dtype == "bool":
            row[s.name] = False
        elif s.dtype == "category":
            row[s.name] = (s.categories or ("",))[0]
        elif s.dtype == "datetime":
            row[s.name] = "2024-01-01T00:00:00"
        else:
            row[s.name] = ""
    return row


def _mlflow_output(loaded: LoadedModel) -> str:
    """What ``mlflow models serve`` returns for this model: ``predict_proba`` or ``predict`` output."""
    try:
        meta = yaml.safe_load((loaded.path / "MLmodel").read_text(encoding="utf-8"))
        fn = meta["flavors"]["python_function"].get("predict_fn", "predict")
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        fn = "predict"
    return "predict_proba" if fn == "predict_proba" else "predict"
