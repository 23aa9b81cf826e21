"""Feast feature services for mloop: the client, and the point-in-time join for training.

``serving.features`` names a Feast feature service; the feature repo is ``serving.feature_repo``
(relative to the project). Serving joins the service's online features on each micro-batch
(:mod:`mloop.serving.features`); training joins the same features point-in-time from the offline
store (:func:`join_historical`), so the model is trained on the values it will be served.

Feast cannot be installed beside mloop's core (see :mod:`mloop.data.feast_bridge` for the pins that
clash), so :class:`FeastClient` talks to a small bridge process started with the Python that has
Feast (``serving.feast_python``; by default this interpreter when it can import ``feast``, else
``.venv-feast/bin/python`` in the project or the current directory): one JSON line per request.
The online store it reads is Feast's own (Redis, ...), through Feast's own reader — mloop does not
re-implement Feast's storage layout, which changes between releases.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import select
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mloop.config import Settings
from mloop.errors import ConfigError, FeatureStoreError, did_you_mean

__all__ = ["FeastClient", "FeatureService", "feast_python", "join_historical", "join_served_features"]

log = logging.getLogger(__name__)

BRIDGE = Path(__file__).with_name("feast_bridge.py")
FEAST_VENV = ".venv-feast"
START_TIMEOUT_S = 300.0
"""Longest wait for the bridge to start (it imports Feast: seconds, more on a busy machine)."""


@dataclass(frozen=True, slots=True)
class FeatureService:
    """What a feature service serves: its features and the entity keys a row must carry."""

    name: str
    features: tuple[str, ...]
    join_keys: tuple[str, ...]
    key_types: dict[str, str] = field(default_factory=dict)
    """Feast's type of each entity key (``Int64``, ``String``, ...)."""


def feast_python(configured: str | None, root: Path) -> str | None:
    """The interpreter that runs Feast: ``configured`` (a relative path is taken from ``root``, the
    project), else None when this one imports ``feast`` (in-process), else
    ``.venv-feast/bin/python`` under ``root`` or the current directory."""
    if configured:
        # A relative path is the project's (the bridge runs inside the repo); a bare name is PATH's.
        path = Path(configured).expanduser()
        return str(root / path) if "/" in configured and not path.is_absolute() else configured
    if importlib.util.find_spec("feast") is not None:
        return None
    for base in (root, Path.cwd()):
        candidate = base / FEAST_VENV / "bin" / "python"
        if candidate.is_file():
            return str(candidate)
    raise FeatureStoreError(
        "serving.features is set but Feast is not available: this Python cannot import feast (it cannot "
        "be installed beside mloop's pandas 3) and there is no .venv-feast/bin/python in "
        f"{root} or the current directory. Run `make .venv-feast` in the mloop checkout, or set "
        "serving.feast_python to a Python with feast[redis] installed."
    )


class FeastClient:
    """Requests to Feast over one feature repo, in-process or through the bridge process.

    Thread-safe: requests are serialised (one bridge process answers one line at a time). A bridge
    that died is started again on the next request.
    """

    def __init__(self, repo: Path, *, python: str | None = None, timeout_s: float = 10.0) -> None:
        if not (repo / "feature_store.yaml").is_file():
            raise ConfigError(
                f"serving.feature_repo {str(repo)!r} is not a Feast feature repo (no feature_store.yaml); "
                "point it at the folder where `feast apply` runs."
            )
        self.repo = repo.resolve()  # the bridge runs in the repo: a relative path would not resolve
        if python is not None and "/" in python:  # the bridge runs in the repo: no relative paths
            python = str(Path(python).expanduser().absolute())
        self.python = python
        self.timeout_s = timeout_s
        """Longest wait for an online lookup's answer; the bridge is then stopped (a late answer must
        not be read as the next request's) and started again on the next request."""
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._store: Any = None
        self.calls = 0
        """Requests sent (every kind): the micro-batching test counts online lookups with it."""

    # -- transport -------------------------------------------------------------------------------
    def request(self, payload: dict[str, Any], *, timeout_s: float | None = None) -> dict[str, Any]:
        """Send one request; the answer, or :class:`FeatureStoreError` with Feast's message
        (``timeout_s``: longest wait for the bridge's answer, None for no limit)."""
        with self._lock:
            self.calls += 1
            bridged = self.python is not None
            answer = self._bridged(payload, timeout_s) if bridged else self._in_process(payload)
        if not answer.get("ok"):
            raise FeatureStoreError(
                f"Feast ({self.repo}) refused {payload.get('op')!r} for feature service "
                f"{payload.get('service')!r}: {answer.get('error')}"
            )
        return answer

    def _in_process(self, payload: dict[str, Any]) -> dict[str, Any]:
        from mloop.data import feast_bridge

        if self._store is None:
            try:
                self._store = feast_bridge.open_store(str(self.repo))
            except Exception as exc:
                raise FeatureStoreError(f"Could not open the Feast repo {self.repo}: {exc}") from exc
        return feast_bridge.handle(self._store, payload)

    def _start(self) -> subprocess.Popen[str]:
        assert self.python is not None
        try:
            proc = subprocess.Popen(
                [self.python, str(BRIDGE), str(self.repo)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=None,  # Feast's own log lines go to this process's stderr
                text=True,
                cwd=self.repo,
            )
        except OSError as exc:
            raise FeatureStoreError(
                f"Could not start Feast's Python {self.python!r}: {exc}. Set serving.feast_python to a "
                "Python with feast[redis] installed (`make .venv-feast`)."
            ) from exc
        hello = self._read(proc, START_TIMEOUT_S)
        if not hello.get("ok"):
            proc.wait(timeout=5)
            raise FeatureStoreError(f"Feast could not open the repo {self.repo}: {hello.get('error')}")
        return proc

    def _read(self, proc: subprocess.Popen[str], timeout_s: float | None) -> dict[str, Any]:
        assert proc.stdout is not None
        if timeout_s is not None:
            ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
            if not ready:
                self._proc = None
                proc.kill()
                proc.wait()
                raise FeatureStoreError(
                    f"Feast ({self.repo}) did not answer within {timeout_s:g}s; is its online store "
                    "reachable? The bridge process was stopped and starts again on the next request."
                )
        line = proc.stdout.readline()
        if not line:
            code = proc.poll()
            self._proc = None
            raise FeatureStoreError(
                f"Feast's bridge process ({self.python}) exited (code {code}); its error is in the log above."
            )
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _bridged(self, payload: dict[str, Any], timeout_s: float | None) -> dict[str, Any]:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            proc = self._proc = self._start()
        assert proc.stdin is not None
        try:
            proc.stdin.write(json.dumps(payload, default=str) + "\n")
            proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            self._proc = None
            raise FeatureStoreError(f"Feast's bridge process went away: {exc}; retry.") from exc
        return self._read(proc, timeout_s)

    def close(self) -> None:
        """Stop the bridge process (the next request starts a new one)."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # -- operations ------------------------------------------------------------------------------
    def describe(self, service: str) -> FeatureService:
        """The features and entity keys of feature service ``service``."""
        answer = self.request({"op": "describe", "service": service}, timeout_s=START_TIMEOUT_S)
        return FeatureService(
            service,
            tuple(f["name"] for f in answer["features"]),
            tuple(answer["join_keys"]),
            dict(answer.get("key_types") or {}),
        )

    def online(self, service: str, entities: dict[str, list[Any]]) -> tuple[dict[str, list[Any]], list[bool]]:
        """Online features for rows of entity keys: (feature → values per row, found per row)."""
        answer = self.request(
            {"op": "online", "service": service, "entities": entities}, timeout_s=self.timeout_s
        )
        return answer["values"], answer["found"]

    def historical(self, service: str, entities: pd.DataFrame, timestamp_column: str) -> pd.DataFrame:
        """Point-in-time features for ``entities`` (entity keys + ``timestamp_column``), row for row."""
        with tempfile.TemporaryDirectory(prefix="mloop-feast-") as tmp:
            src, out = Path(tmp) / "entities.parquet", Path(tmp) / "features.parquet"
            entities.to_parquet(src, index=False)
            self.request(
                {
                    "op": "historical",
                    "service": service,
                    "entities_path": str(src),
                    "out_path": str(out),
                    "timestamp_column": timestamp_column,
                }
            )
            return pd.read_parquet(out)


def join_historical(
    frame: pd.DataFrame,
    client: FeastClient,
    service: str,
    timestamp_column: str,
    described: FeatureService | None = None,
) -> pd.DataFrame:
    """``frame`` with the feature service's features as of each row's ``timestamp_column`` (Feast's
    point-in-time join on the offline store: no value from after the row's time leaks in)."""
    described = described or client.describe(service)
    needed = [*described.join_keys, timestamp_column]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        hint = did_you_mean(missing[0], [str(c) for c in frame.columns])
        raise FeatureStoreError(
            f"Feature service {service!r} joins on {', '.join(described.join_keys)} as of "
            f"{timestamp_column!r} (source.event_timestamp_column), but the training data lacks "
            f"{', '.join(map(repr, missing))}.{hint} Columns: {', '.join(map(str, frame.columns))}."
        )
    features = client.historical(service, frame[needed].reset_index(drop=True), timestamp_column)
    if len(features) != len(frame):
        raise FeatureStoreError(
            f"Feast returned {len(features)} rows of historical features for {len(frame)} entity rows."
        )
    base = frame.drop(columns=[c for c in described.features if c in frame.columns]).reset_index(drop=True)
    return pd.concat([base, features[list(described.features)]], axis=1)


def join_served_features(
    settings: Settings, frame: pd.DataFrame, *, keep_present: bool = False
) -> pd.DataFrame:
    """Training data with ``serving.features`` joined point-in-time (as of
    ``source.event_timestamp_column``); columns of the same names in ``frame`` are replaced. With
    ``keep_present``, a frame that already carries every served feature (rows given to ``train``,
    e.g. recent rows from the prediction log, which records the joined row) is returned as it is."""
    service = settings.serving.features
    if not service:
        return frame
    client = FeastClient(
        settings.root / settings.serving.feature_repo,
        python=feast_python(settings.serving.feast_python, settings.root),
    )
    try:
        described = client.describe(service)
        if keep_present and all(name in frame.columns for name in described.features):
            return frame
        log.info("Joining %s point-in-time onto %d training rows", service, len(frame))
        return join_historical(frame, client, service, settings.source.event_timestamp_column, described)
    finally:
        client.close()
