"""What a model version is monitored against: the artifacts saved with it, never the training set.

:class:`ModelReference` gathers, for one registered version, the reference profile of the training
features, the profile of the holdout's outputs (``prediction`` and, for binary classifiers, ``score``),
the task, classes, holdout metrics, and the quality estimator that estimates quality before labels
arrive. It is built from a loaded version (the server already has one)
or fetched from the registry by :func:`fetch_reference`, which downloads the version's artifacts once
per process (versions never change) and does not load the model itself.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mloop.errors import MonitoringError
from mloop.monitoring.estimation import ESTIMATOR_FILE, QualityEstimator
from mloop.monitoring.profile import ReferenceProfile

if TYPE_CHECKING:
    from mloop.config import Settings

__all__ = ["ModelReference", "fetch_reference"]

_CACHE: dict[tuple[str, str, str], ModelReference] = {}
_CACHE_LOCK = threading.Lock()


@dataclass
class ModelReference:
    """One version's monitoring reference (see the module docstring)."""

    name: str
    version: str
    profile: ReferenceProfile
    prediction_profile: ReferenceProfile | None = None
    task: str | None = None
    classes: list[Any] | None = None
    holdout: dict[str, float] = field(default_factory=dict)
    metric: str | None = None
    """The metric the version was gated on (``evaluation.json``'s ``metric``)."""
    estimator: QualityEstimator | None = None
    """Estimates quality before labels arrive (``quality_estimator.json``; None for older versions)."""

    @property
    def features(self) -> list[str]:
        return list(self.profile.columns)

    @classmethod
    def from_artifacts(
        cls,
        name: str,
        version: str | int,
        profile: dict[str, Any] | None,
        evaluation: dict[str, Any] | None,
        estimator: dict[str, Any] | None = None,
    ) -> ModelReference:
        """From the dicts of a version's ``profile.json``, ``evaluation.json``, ``quality_estimator.json``."""
        if not profile:
            raise MonitoringError(
                f"Model {name!r} version {version} carries no reference profile (profile.json), so its "
                "traffic cannot be compared with its training data. Retrain it with `mloop train`."
            )
        evaluation = evaluation or {}
        pred = evaluation.get("prediction_profile")
        metrics = evaluation.get("metrics") or {}
        return cls(
            name=name,
            version=str(version),
            profile=ReferenceProfile.from_dict(profile),
            prediction_profile=ReferenceProfile.from_dict(pred) if pred else None,
            task=evaluation.get("task"),
            classes=evaluation.get("classes"),
            holdout={k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
            metric=evaluation.get("metric"),
            estimator=_estimator(estimator, evaluation.get("task")),
        )

    @classmethod
    def from_loaded(cls, loaded: Any) -> ModelReference:
        """From a :class:`~mloop.tracking.LoadedModel` (what the server holds)."""
        path = getattr(loaded, "path", None)
        estimator = _read(Path(path), ESTIMATOR_FILE) if path is not None else None
        return cls.from_artifacts(
            loaded.info.name, loaded.info.version, loaded.profile, loaded.evaluation, estimator
        )


def _estimator(data: dict[str, Any] | None, task: str | None) -> QualityEstimator | None:
    """The version's estimator; a broken one is "not available" (drift and labels still work)."""
    if not data:
        return None
    try:
        return QualityEstimator.from_dict(data)
    except MonitoringError as exc:
        return QualityEstimator.not_available(str(task), exc.message)


def _read(model_dir: Path, name: str) -> dict[str, Any] | None:
    for path in (model_dir / "extra_files" / name, model_dir / "artifacts" / name, model_dir / name):
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else None
    return None


def fetch_reference(settings: Settings, name: str, version: str | int) -> ModelReference:
    """The reference of ``name`` version ``version`` from the registry (cached per process)."""
    key = (settings.tracking_uri, name, str(version))
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
    if cached is not None:
        return cached
    import tempfile

    from mloop.tracking import Registry

    registry = Registry(settings, name=name)
    with tempfile.TemporaryDirectory(prefix="mloop-monitor-") as tmp:
        info, path = registry.download(version, Path(tmp))
        ref = ModelReference.from_artifacts(
            name,
            info.version,
            _read(path, "profile.json"),
            _read(path, "evaluation.json"),
            _read(path, ESTIMATOR_FILE),
        )
    with _CACHE_LOCK:
        _CACHE[key] = ref
    return ref
