"""Monitoring: drift of data and predictions against the reference profile, reports and alerts.

A model version carries a :class:`ReferenceProfile` (built by :func:`build_profile` from the
training features plus holdout predictions). :func:`detect_drift` compares a window of current rows
with it and returns a :class:`DriftReport`; :func:`write_html` / :func:`write_json` render it, and
:class:`AlertEngine` turns a history of reports into alerts sent to webhooks and email.
"""

from mloop.monitoring.drift import benjamini_hochberg, detect_drift
from mloop.monitoring.profile import ColumnProfile, ReferenceProfile, build_profile
from mloop.monitoring.results import ColumnDrift, DriftReport
from mloop.monitoring.stattests import auto_stattest, get_stattest, register_stattest, stattest_names

__all__ = [
    "ColumnDrift",
    "ColumnProfile",
    "DriftReport",
    "ReferenceProfile",
    "auto_stattest",
    "benjamini_hochberg",
    "build_profile",
    "detect_drift",
    "get_stattest",
    "register_stattest",
    "stattest_names",
]
