"""The run object that the steps of :mod:`mloop.training.pipeline` share, and what a run returns.

A :class:`TrainRun` starts with the run's inputs and collaborators (settings, store, registry, the
MLflow run id, a progress callback); each step then adds what it produced, so a step reads only what
earlier steps wrote and can be tested over a hand-made run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from mloop.config import Settings
from mloop.training.gates import GateResult
from mloop.training.metrics import Scored

if TYPE_CHECKING:
    from mloop.data import DataContract, ValidationResult
    from mloop.monitoring.estimation import QualityEstimator
    from mloop.store import Store
    from mloop.tracking import LoadedModel, Registry
    from mloop.training.data_version import DataVersion

__all__ = ["Holdout", "Progress", "Timer", "TrainResult", "TrainRun"]


class Progress(Protocol):
    """Where a run says what it is doing: a step's name, or a count within a step (``done`` of
    ``total`` tuning trials), from which a caller shows an ETA. A one-argument callable is accepted
    too (:func:`mloop.training.pipeline.train` adapts it)."""

    def __call__(self, message: str, done: int | None = None, total: int | None = None) -> None: ...


@dataclass
class TrainResult:
    """What a training run produced and decided."""

    run_id: str
    version: int | None
    metrics: dict[str, float]
    metric: str
    gate: GateResult
    aliases: list[str]
    champion_before: int | None
    timings: dict[str, float] = field(default_factory=dict)
    tuning: dict[str, Any] | None = None
    rows: dict[str, int] = field(default_factory=dict)
    violations: dict[str, Any] | None = None
    # True when the version is the same as the champion (same data hash, same holdout metrics):
    # it is registered but gets no alias.
    unchanged: bool = False
    # The data version trained on (mloop.data_version: the hash of the frame as loaded).
    data_version: str | None = None


class Timer:
    """Seconds spent per named step (a step may be timed in several pieces)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start


@dataclass
class Holdout:
    """The split: features and target of the training and holdout rows, and the metric to gate on."""

    x_train: pd.DataFrame
    y_train: pd.Series
    x_test: pd.DataFrame
    y_test: pd.Series
    numeric: list[str]
    categorical: list[str]
    unused: list[str]
    metric: str

    @property
    def features(self) -> list[str]:
        return self.numeric + self.categorical


@dataclass
class TrainRun:
    """One training run: its inputs and collaborators, then what each step adds, in step order."""

    settings: Settings
    store: Store
    registry: Registry
    run_id: str
    say: Progress
    data: pd.DataFrame | None = None
    tune_trials: int | None = None
    actor: str = "cli"
    reason: str = "manual training"
    extra_tags: dict[str, str] = field(default_factory=dict)
    data_version_ref: str | None = None  # --data-version: train on a recorded hash or DVC revision
    timer: Timer = field(default_factory=Timer)
    done: list[str] = field(default_factory=list)
    # Set by the steps (reading one before its step has run is a bug, and raises AttributeError).
    raw: pd.DataFrame = field(init=False)  # load
    source: str = field(init=False)  # load
    loaded: pd.DataFrame = field(init=False)  # load: the frame as read, before drop_columns
    data_version: DataVersion = field(init=False)  # load (its snapshot: log)
    champion: LoadedModel | None = field(init=False)  # champion
    checked: ValidationResult = field(init=False)  # validate
    contract: DataContract = field(init=False)  # validate
    holdout: Holdout = field(init=False)  # split
    params: dict[str, Any] = field(init=False)  # tune
    tuning: dict[str, Any] | None = field(init=False)  # tune
    model: Any = field(init=False)  # fit
    scored: Scored = field(init=False)  # evaluate
    champion_metrics: dict[str, float] | None = field(init=False)  # evaluate
    gate: GateResult = field(init=False)  # evaluate
    quality_estimator: QualityEstimator = field(init=False)  # calibrate
    tags: dict[str, str] = field(init=False)  # log
    model_uri: str = field(init=False)  # log
    version: int = field(init=False)  # register
    aliases: list[str] = field(default_factory=list)  # decide
    unchanged: bool = False  # decide

    @property
    def clean(self) -> pd.DataFrame:
        """The rows that passed the data contract."""
        return self.checked.data

    def rows(self) -> dict[str, int]:
        """Rows trained on, held out, and dropped by the contract."""
        dropped = int(len(self.raw) - len(self.clean))
        return {"train": len(self.holdout.x_train), "holdout": len(self.holdout.x_test), "dropped": dropped}

    def result(self) -> TrainResult:
        """The outcome returned to the caller once every step has run."""
        return TrainResult(
            run_id=self.run_id,
            version=self.version,
            metrics=self.scored.metrics,
            metric=self.holdout.metric,
            gate=self.gate,
            aliases=self.aliases,
            champion_before=self.champion.info.version if self.champion else None,
            timings=self.timer.timings,
            tuning=self.tuning,
            rows=self.rows(),
            violations=self.checked.report.to_dict(),
            unchanged=self.unchanged,
            data_version=self.data_version.hash,
        )
