"""Monitoring: drift of data and predictions against the reference profile, reports and alerts.

A model version carries a :class:`ReferenceProfile` (built by :func:`build_profile` from the
training features plus holdout predictions). :func:`detect_drift` compares a window of current rows
with it and returns a :class:`DriftReport`; :func:`write_html` / :func:`write_json` render it, and
:class:`AlertEngine` turns a history of reports into alerts sent to webhooks and email.

Live monitoring of a served version: :func:`run_monitor` runs one cycle over the current window of
the prediction log (data and prediction drift against the version's :class:`ModelReference`, live
quality from ``/feedback`` labels, alerts, a ``monitor.window`` event, HTML + JSON reports) and
returns a :class:`MonitorResult`; :class:`MonitoringGauges` exports it to Prometheus and
:class:`BackgroundMonitor` repeats it beside the server.
"""

# Names resolve on first use (PEP 562): `from mloop.monitoring import detect_drift` must not pay
# for the store, SQLAlchemy and the background monitor (about 1.3 s of imports a drift run never uses).
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mloop.monitoring.background import BackgroundMonitor
    from mloop.monitoring.cycle_result import MonitorResult
    from mloop.monitoring.drift import benjamini_hochberg, detect_drift
    from mloop.monitoring.gauges import MonitoringGauges
    from mloop.monitoring.monitor import run_monitor
    from mloop.monitoring.profile import ColumnProfile, ReferenceProfile, build_profile
    from mloop.monitoring.quality import LiveQuality, live_quality
    from mloop.monitoring.reference import ModelReference, fetch_reference
    from mloop.monitoring.results import ColumnDrift, DriftReport
    from mloop.monitoring.stattests import auto_stattest, get_stattest, register_stattest, stattest_names
    from mloop.monitoring.window import WindowSpec, parse_since

_HOMES: dict[str, str] = {
    "BackgroundMonitor": "mloop.monitoring.background",
    "MonitorResult": "mloop.monitoring.cycle_result",
    "benjamini_hochberg": "mloop.monitoring.drift",
    "detect_drift": "mloop.monitoring.drift",
    "MonitoringGauges": "mloop.monitoring.gauges",
    "run_monitor": "mloop.monitoring.monitor",
    "ColumnProfile": "mloop.monitoring.profile",
    "ReferenceProfile": "mloop.monitoring.profile",
    "build_profile": "mloop.monitoring.profile",
    "LiveQuality": "mloop.monitoring.quality",
    "live_quality": "mloop.monitoring.quality",
    "ModelReference": "mloop.monitoring.reference",
    "fetch_reference": "mloop.monitoring.reference",
    "ColumnDrift": "mloop.monitoring.results",
    "DriftReport": "mloop.monitoring.results",
    "auto_stattest": "mloop.monitoring.stattests",
    "get_stattest": "mloop.monitoring.stattests",
    "register_stattest": "mloop.monitoring.stattests",
    "stattest_names": "mloop.monitoring.stattests",
    "WindowSpec": "mloop.monitoring.window",
    "parse_since": "mloop.monitoring.window",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


__all__ = [
    "BackgroundMonitor",
    "ColumnDrift",
    "ColumnProfile",
    "DriftReport",
    "LiveQuality",
    "ModelReference",
    "MonitorResult",
    "MonitoringGauges",
    "ReferenceProfile",
    "WindowSpec",
    "auto_stattest",
    "benjamini_hochberg",
    "build_profile",
    "detect_drift",
    "fetch_reference",
    "get_stattest",
    "live_quality",
    "parse_since",
    "register_stattest",
    "run_monitor",
    "stattest_names",
]
