"""Point MLflow at the project's tracking store and experiment.

MLflow is the system of record: by default a SQLite tracking store at ``.mloop/mlflow.db`` with
artifacts under ``.mloop/artifacts``, so ``mlflow ui --backend-store-uri sqlite:///.mloop/mlflow.db``
opens the same runs and versions. With a tracking server, new experiments take the server's artifact
root (proxied ``mlflow-artifacts:/`` or its object storage) unless ``tracking.artifact_location`` says
otherwise; in cluster mode a root on one machine's disk is refused, as no other process could read it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mloop.config import Settings
from mloop.config.cluster import is_local_uri
from mloop.errors import TrackingError

__all__ = ["configure_mlflow", "experiment_id"]

_log = logging.getLogger(__name__)


def _quiet_mlflow() -> None:
    # MLflow logs alembic migrations and "registered model" chatter at INFO on every first use;
    # the CLI prints its own progress, so keep theirs for --verbose.
    if os.environ.get("MLOOP_VERBOSE") != "1":
        for name in ("mlflow", "alembic", "mlflow.store.db.utils"):
            logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false")


def configure_mlflow(settings: Settings) -> str:
    """Set MLflow's tracking and registry URIs from the settings; return the experiment id."""
    import mlflow

    _quiet_mlflow()
    if settings.tracking.uri is None:
        Path(settings.home_dir).mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return experiment_id(settings)


def experiment_id(settings: Settings) -> str:
    """The id of the project's experiment, created (with the artifact location) if missing."""
    import mlflow
    from mlflow.exceptions import MlflowException

    name = settings.experiment_name
    try:
        exp = mlflow.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                raise TrackingError(
                    f"MLflow experiment {name!r} is deleted. Restore it in the MLflow UI or set "
                    "`tracking.experiment` to another name."
                )
            _check_shared_root(settings, exp.artifact_location)
            return str(exp.experiment_id)
        created = str(mlflow.create_experiment(name, artifact_location=settings.artifact_location))
        if settings.cluster:
            _check_shared_root(settings, mlflow.get_experiment(created).artifact_location)
        return created
    except MlflowException as exc:
        raise TrackingError(
            f"MLflow at {settings.tracking_uri!r} refused to open experiment {name!r}: {exc.message}. "
            "Check `tracking.uri` in mloop.yaml."
        ) from exc
    except OSError as exc:
        raise TrackingError(f"Cannot reach MLflow at {settings.tracking_uri!r}: {exc}.") from exc


def _check_shared_root(settings: Settings, root: str | None) -> None:
    """In cluster mode, refuse an experiment whose artifacts would land on one machine's disk."""
    if settings.cluster and root and is_local_uri(root):
        raise TrackingError(
            f"MLflow experiment {settings.experiment_name!r} keeps its artifacts at {root!r}, a directory "
            "on one machine, which other processes of the cluster cannot read. Start the tracking server "
            "with --serve-artifacts (artifacts proxied as mlflow-artifacts:/) or an S3 "
            "--default-artifact-root, and use a new experiment (tracking.experiment): an experiment's "
            "root cannot be changed."
        )
