"""One monitoring cycle of the served model: :func:`run_monitor`.

    result = run_monitor(settings)                       # champion, last monitoring.window_rows rows
    result = run_monitor(settings, since="1h", version=3, notify=False)
    result.drift.share_drifted, result.quality.metrics, [a.rule for a in result.alerts]

A cycle reads the current window of the prediction log for one model version, compares its features
with the version's reference profile and its outputs with the holdout's, scores the labelled rows,
estimates quality from the predictions alone (labels arrive late; :mod:`mloop.monitoring.estimation`),
feeds the alert rules (state resumed from the previous window, so cooldown and N-of-M hold whether
the cycle runs in ``mloop monitor`` from cron, in the server's background loop or in the controller),
records the window's summary as a ``monitor.window`` event and writes the HTML and JSON reports.
Cycles of one model are serialised through a store lease, so two processes never fire the same alert.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mloop.errors import ModelNotFound, MonitoringError
from mloop.monitoring.alerts import Alert, AlertEngine, AlertState
from mloop.monitoring.cycle_result import MonitorResult
from mloop.monitoring.drift import detect_drift
from mloop.monitoring.estimation import estimate_quality
from mloop.monitoring.history import latest_window, record_window, window_history
from mloop.monitoring.notifiers import Notifier
from mloop.monitoring.quality import live_quality
from mloop.monitoring.reference import ModelReference, fetch_reference
from mloop.monitoring.window import WindowSpec, parse_since, split_window
from mloop.store.leases import process_token

if TYPE_CHECKING:
    from mloop.config import Settings

__all__ = ["LEASE_TTL_S", "CycleBusy", "MonitorResult", "run_monitor"]

LEASE_TTL_S = 600.0
"""Longest one cycle may hold the model's monitoring lease (a crashed holder frees it after this)."""
HISTORY_WINDOWS = 200
"""Earlier windows shown in the over-time plots of the reports."""


class CycleBusy(MonitoringError):
    """Another process holds the model's monitoring lease: this cycle is skipped, nothing failed."""


class _ModelRecorder:
    """Records alert events with the model and version added to their data."""

    def __init__(self, store: Any, model: str, version: str, actor: str) -> None:
        self.store, self.model, self.version, self.actor = store, model, version, actor

    def record_event(
        self,
        kind: str,
        subject: str,
        reason: str,
        *,
        actor: str = "mloop",  # the monitor's own actor is recorded: it speaks for the cycle
        data: Mapping[str, Any] | None = None,
    ) -> Any:
        payload = {**(data or {}), "model": self.model, "version": self.version}
        return self.store.record_event(kind, subject, reason, actor=self.actor, data=payload)


@contextmanager
def _lease(store: Any, name: str, wait_s: float) -> Iterator[None]:
    leases = getattr(store, "leases", None)
    if leases is None:
        yield
        return
    owner = process_token("monitor-")
    deadline = time.monotonic() + wait_s
    while not leases.acquire(name, owner, LEASE_TTL_S):
        if time.monotonic() >= deadline:
            raise CycleBusy(
                f"Another monitoring cycle of {name.split(':', 1)[1]!r} is running (store lease {name!r} "
                f"held for over {wait_s:g}s). Try again shortly; a crashed holder frees it within "
                f"{LEASE_TTL_S:g}s."
            )
        time.sleep(0.5)
    try:
        yield
    finally:
        leases.release(name, owner)


def _resolve_version(settings: Settings, name: str, version: str | int | None, log: Any) -> str | None:
    """The version to monitor: as given (it must exist), else the serving alias, else the newest logged."""
    from mloop.tracking import Registry

    registry = Registry(settings, name=name)
    if version is not None:
        return str(registry.get(version).version)  # ModelNotFound names the versions and aliases there are
    try:
        return str(registry.get(f"@{settings.serving.alias}").version)
    except ModelNotFound:
        pass
    newest = log.read(model_name=name, last_n=1)
    return None if newest.empty else str(newest["model_version"].iloc[-1])


def _engine(
    settings: Settings,
    state: AlertState,
    recorder: _ModelRecorder | None,
    notify: bool,
    notifiers: Mapping[str, Sequence[Notifier]] | None,
) -> AlertEngine:
    rules: list[Mapping[str, Any]] = list(settings.monitoring.alerts)
    if not notify:
        # A dry run: evaluate on a copy of the state, send nothing, record nothing.
        return AlertEngine([{**r, "notify": []} for r in rules], state=copy.deepcopy(state))
    return AlertEngine(rules, recorder=recorder, state=state, notifiers=notifiers)


def run_monitor(
    settings: Settings,
    *,
    window_rows: int | None = None,
    since: datetime | str | None = None,
    until: datetime | None = None,
    version: str | int | None = None,
    model_name: str | None = None,
    store: Any = None,
    notify: bool = True,
    reports: bool = True,
    json_path: str | Path | None = None,
    html_path: str | Path | None = None,
    reference: ModelReference | None = None,
    prediction_log: Any = None,
    notifiers: Mapping[str, Sequence[Notifier]] | None = None,
    actor: str = "mloop",
    lease_wait_s: float = 60.0,
) -> MonitorResult:
    """Run one monitoring cycle (see the module docstring) and return what it found."""
    mon = settings.monitoring
    since_dt = parse_since(since) if since is not None else None
    rows = window_rows if window_rows is not None else (None if since_dt is not None else mon.window_rows)
    spec = WindowSpec(rows=rows, since=since_dt, until=until)
    name = model_name or (reference.name if reference is not None else settings.model.name)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    with ExitStack() as stack:
        if prediction_log is None:
            from mloop.predlog import open_prediction_log

            prediction_log = stack.enter_context(open_prediction_log(settings.prediction_log_url))
        if store is None:
            from mloop.store import open_store

            store = stack.enter_context(open_store(settings.store_url))
        ver = (
            reference.version
            if reference is not None
            else _resolve_version(settings, name, version, prediction_log)
        )
        if ver is None:
            return MonitorResult(
                name,
                None,
                "no_traffic",
                f"Nothing to monitor: model {name!r} has no {settings.serving.alias!r} version in the "
                "registry and no predictions in the prediction log. Train with `mloop train`, then serve "
                "it with `mloop serve`.",
                spec,
                created,
            )
        frame = prediction_log.read(
            model_name=name, model_version=ver, since=spec.since, until=spec.until, last_n=spec.rows
        )
        if frame.empty:
            return MonitorResult(
                name,
                ver,
                "no_traffic",
                f"No predictions of {name!r} v{ver} in the prediction log ({spec.describe()}); nothing to "
                "compare yet. Send traffic to `mloop serve`, or widen the window (--since, --window).",
                spec,
                created,
            )
        ref = reference or fetch_reference(settings, name, ver)
        features, outputs = split_window(frame, ref.features, task=ref.task, classes=ref.classes)
        drift = detect_drift(
            ref.profile,
            features,
            fdr=mon.fdr,
            drift_share=mon.drift_share,
            multivariate=mon.multivariate,
            multivariate_alpha=mon.multivariate_alpha,
            multivariate_in_verdict=mon.multivariate_in_verdict,
            multivariate_min_auc=mon.multivariate_min_auc,
        )
        pred_drift = None
        if ref.prediction_profile is not None:
            shared = [c for c in ref.prediction_profile.columns if c in outputs.columns]
            if shared:
                pred_drift = detect_drift(
                    ref.prediction_profile,
                    outputs[shared],
                    columns=shared,
                    fdr=mon.fdr,
                    drift_share=mon.drift_share,
                    multivariate=False,
                )
        labels = store.feedback(ids=frame["prediction_id"].astype(str).tolist())
        quality = live_quality(
            frame, labels, task=ref.task, classes=ref.classes, min_labelled_rows=mon.min_labelled_rows
        )
        estimated = estimate_quality(frame, ref.estimator, min_rows=mon.estimate_min_rows)
        result = MonitorResult(
            name,
            ver,
            "ok",
            f"{len(frame):,} predictions of {name!r} v{ver} ({spec.describe()}).",
            spec,
            created,
            rows=len(frame),
            first_ts=frame["ts"].iloc[0].isoformat(),
            last_ts=frame["ts"].iloc[-1].isoformat(),
            drift=drift,
            prediction_drift=pred_drift,
            quality=quality,
            estimated=estimated,
            holdout=dict(ref.holdout),
            notified=notify,
            reference=ref,
            features_frame=features,
            outputs_frame=outputs,
        )
        with _lease(store, f"monitor:{name}", lease_wait_s):
            previous = latest_window(store, name, ver)
            state = AlertState.from_dict((previous or {}).get("alert_state") or {})
            engine = _engine(settings, state, _ModelRecorder(store, name, ver, actor), notify, notifiers)
            result.alerts = _observe(engine, result)
            result.alert_state = engine.state.to_dict() if notify else state.to_dict()
            result.history = window_history(store, name, ver, limit=HISTORY_WINDOWS)
            record_window(store, result.summary(), actor=actor)
        if reports:
            from mloop.monitoring.live_report import write_monitor_reports

            result.reports = write_monitor_reports(
                result, settings.reports_dir, json_path=json_path, html_path=html_path
            )
        return result
    raise AssertionError("unreachable")  # pragma: no cover - the with block always returns


def _observe(engine: AlertEngine, result: MonitorResult) -> list[Alert]:
    return engine.observe(result.drift, quality=result.quality.metrics or None)
