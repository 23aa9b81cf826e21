"""Tracking and registry on MLflow, the system of record.

``configure_mlflow`` points MLflow at the project's tracking store; :class:`Registry` lists versions,
moves aliases (recording each move as an event) and loads a version with the contract, reference
profile and evaluation that travel with it. Models are saved with skops and a deliberate trusted-type
policy (:mod:`mloop.tracking.model_io`).
"""

from mloop.tracking.client import configure_mlflow, experiment_id
from mloop.tracking.model_io import (
    ALLOWED_TYPES,
    NEVER_TRUSTED,
    load_sklearn_model,
    refused_types,
    trusted_types_for,
)
from mloop.tracking.registry import EventSink, LoadedModel, Registry, VersionInfo, parse_version_ref

__all__ = [
    "ALLOWED_TYPES",
    "NEVER_TRUSTED",
    "EventSink",
    "LoadedModel",
    "Registry",
    "VersionInfo",
    "configure_mlflow",
    "experiment_id",
    "load_sklearn_model",
    "parse_version_ref",
    "refused_types",
    "trusted_types_for",
]
