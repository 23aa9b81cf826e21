"""Cluster mode: a process that is one of several refuses state only its own disk can see.

With ``cluster: true`` (``MLOOP_CLUSTER=1``, set by the generated manifests) serving replicas and the
loop's leader and standby share everything through services: the store on PostgreSQL, the prediction
log on PostgreSQL or object storage, MLflow behind a tracking server whose artifacts are proxied or on
object storage. A local default left in place (a SQLite store, Parquet segments under ``.mloop``,
MLflow on SQLite) would split the cluster into processes that each see only their own state — the
loop would never see the replicas' traffic — so :func:`check_cluster` stops the process at start and
says which key to set. Whether the tracking server's artifact root is local to the server is checked
where MLflow is opened (:func:`mloop.tracking.configure_mlflow`).
"""

from __future__ import annotations

from urllib.parse import urlparse

from mloop.config.settings import Settings
from mloop.errors import ConfigError

__all__ = ["check_cluster", "cluster_problems", "is_local_uri"]

_SHARED_PREDLOG = ("postgresql", "postgresql+psycopg", "s3")


def is_local_uri(uri: str) -> bool:
    """Whether ``uri`` names this machine's disk: a plain path, ``file:``, or ``sqlite:``."""
    scheme = urlparse(uri).scheme.lower()
    return scheme in ("", "file", "sqlite") or (len(scheme) == 1 and scheme.isalpha())  # C:\\…


def cluster_problems(settings: Settings) -> list[str]:
    """What in ``settings`` only this process could see, one sentence per key (empty: all shared)."""
    problems = []
    store = settings.store_url
    if store.partition(":")[0].lower().startswith("sqlite"):
        problems.append(
            f"store.url is SQLite ({store}); set it to a shared PostgreSQL, e.g. "
            "MLOOP_STORE__URL=postgresql+psycopg://user@host/db"
        )
    predlog = settings.prediction_log_url
    if urlparse(predlog).scheme.lower() not in _SHARED_PREDLOG:
        problems.append(
            f"prediction_log.url is local ({predlog}); set it to a PostgreSQL URL or to object storage, "
            "e.g. MLOOP_PREDICTION_LOG__URL=s3://bucket/predictions"
        )
    if not settings.tracking_is_remote:
        problems.append(
            f"tracking.uri is a local MLflow ({settings.tracking_uri}); set it to the tracking server, "
            "e.g. MLOOP_TRACKING__URI=http://mlflow:5000"
        )
    artifacts = settings.tracking.artifact_location
    if artifacts and is_local_uri(artifacts):
        problems.append(
            f"tracking.artifact_location is a local directory ({artifacts}); unset it to use the tracking "
            "server's artifact root, or set it to object storage (s3://bucket/mlflow)"
        )
    return problems


def check_cluster(settings: Settings) -> None:
    """:class:`~mloop.errors.ConfigError` listing every local-only location when ``cluster`` is on."""
    if not settings.cluster:
        return
    problems = cluster_problems(settings)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(
            "cluster mode (cluster: true / MLOOP_CLUSTER=1) needs state every process can reach, but:\n"
            f"{lines}\nSee docs/deploy.md; unset MLOOP_CLUSTER to run on one machine."
        )
