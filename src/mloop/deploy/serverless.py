"""What the serverless targets (``mloop deploy cloudrun``, ``mloop deploy lambda``) share.

Instances of a serverless service come and go, share no disk and may be frozen between requests, so:

* the store, MLflow and the prediction log must be shared services — the cluster-mode rules of
  :func:`mloop.config.cluster_problems`, checked when the files are generated, and again by every
  instance at start (``MLOOP_CLUSTER=1``);
* the prediction log is written synchronously (``prediction_log.durability: sync``): a prediction is
  answered once its record is committed, never while it sits in memory of a process that the platform
  may freeze or stop at any time after the answer.
"""

from __future__ import annotations

from mloop.config import Settings, cluster_problems
from mloop.deploy.values import CLUSTER_ENV
from mloop.errors import DeployError

__all__ = ["SERVERLESS_ENV", "SERVERLESS_SECRETS", "container_concurrency", "require_shared_state"]

SERVERLESS_ENV: dict[str, str] = {
    CLUSTER_ENV[0]: CLUSTER_ENV[1],
    "MLOOP_PREDICTION_LOG__DURABILITY": "sync",
}
"""Variables every serverless instance gets: cluster mode and the synchronous prediction log."""

SERVERLESS_SECRETS: dict[str, str] = {
    "store-url": "MLOOP_STORE__URL",
    "tracking-uri": "MLOOP_TRACKING__URI",
    "prediction-log-url": "MLOOP_PREDICTION_LOG__URL",
}
"""Secret (suffix of its name) -> variable: the shared state's URLs, which carry passwords."""

MAX_CONCURRENCY = 1000
"""Cloud Run's largest ``containerConcurrency``."""


def require_shared_state(settings: Settings, target: str) -> None:
    """:class:`~mloop.errors.DeployError` naming every local-only location in ``settings``."""
    problems = cluster_problems(settings)
    if not problems:
        return
    lines = "\n".join(f"  - {p}" for p in problems)
    raise DeployError(
        f"`mloop deploy {target}` needs state every instance can reach (serverless instances share no "
        f"disk and may be stopped at any time), but:\n{lines}\n"
        "Set them in mloop.yaml or as MLOOP_* variables when you run this command; the URLs are not "
        "written into the generated files (they are read from the platform's secret store). "
        "See docs/deploy.md."
    )


def container_concurrency(settings: Settings) -> int:
    """Requests one instance takes at once: one full micro-batch of one-row requests per worker.

    More concurrent requests would only wait in the instance's queue behind full batches (and be shed
    with 503 by admission control), while the platform could start another instance; fewer would keep
    batches from filling under load."""
    wanted = settings.serving.workers * settings.serving.max_batch_rows
    return max(1, min(MAX_CONCURRENCY, wanted))
