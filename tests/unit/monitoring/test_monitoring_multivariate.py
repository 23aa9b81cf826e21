"""The multivariate drift check: a broken relation between columns that no single column shows."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from mloop.errors import MonitoringError
from mloop.monitoring import detect_drift
from mloop.monitoring.alerts import AlertEngine, AlertState, parse_rules
from mloop.monitoring.multivariate import JointSample, MultivariateDrift, detect_multivariate
from mloop.monitoring.profile import ReferenceProfile, build_profile
from mloop.monitoring.report import render_html


def _rows(n: int, rng: np.random.Generator, *, corr: bool = True, cat_follows: bool = True) -> pd.DataFrame:
    """x1, x2 ~ N(0, 1) correlated 0.9 (or not); ``sign`` follows x3 (or not); marginals never change."""
    z = rng.standard_normal((n, 3))
    x2 = 0.9 * z[:, 0] + np.sqrt(1 - 0.81) * z[:, 1] if corr else z[:, 1]
    sign = np.where(z[:, 2] > 0, "pos", "neg") if cat_follows else rng.choice(["pos", "neg"], n)
    return pd.DataFrame(
        {
            "x1": z[:, 0],
            "x2": x2,
            "x3": z[:, 2],
            "sign": sign,
            "noise": rng.exponential(size=n),
            "tag": rng.choice(list("abcde"), n),
        }
    )


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    return build_profile(_rows(20_000, np.random.default_rng(0)))


def test_marginal_tests_miss_what_the_domain_classifier_sees(profile: ReferenceProfile) -> None:
    rng = np.random.default_rng(1)
    window = _rows(1000, rng, corr=False)
    report = detect_drift(profile, window, multivariate=False)
    assert not report.dataset_drifted  # the blind spot: every marginal is N(0, 1) as before
    report = detect_drift(profile, window, multivariate_in_verdict=False)
    assert report.multivariate is not None and report.multivariate.drifted
    assert not report.dataset_drifted  # reported and alertable, kept out of the verdict when asked
    report = detect_drift(profile, window)
    assert report.multivariate is not None and report.multivariate.drifted
    assert report.dataset_drifted and report.drifted_columns == []
    assert report.multivariate.auc is not None and report.multivariate.auc > 0.6
    assert set(report.multivariate.top_columns[:2]) == {"x1", "x2"}


@pytest.mark.parametrize("rows", [1000, 10_000])
@pytest.mark.parametrize("scenario", ["correlation", "categorical"])
def test_broken_dependencies_are_detected(profile: ReferenceProfile, rows: int, scenario: str) -> None:
    rng = np.random.default_rng(rows)
    hits = 0
    for rep in range(10):
        window = _rows(rows, rng, corr=scenario != "correlation", cat_follows=scenario != "categorical")
        result = detect_multivariate(profile.joint, window, seed=rep)
        hits += result.drifted
        if scenario == "categorical" and result.drifted:
            assert {"sign", "x3"} & set(result.top_columns)
    assert hits >= 9


@pytest.mark.parametrize("rows", [100, 1000])
def test_false_alarm_rate_is_at_most_alpha_under_no_drift(profile: ReferenceProfile, rows: int) -> None:
    """Exact null of the held-out AUC: 40 no-drift windows at alpha 0.05 give few alarms (seeded)."""
    rng = np.random.default_rng(100 + rows)
    results = [detect_multivariate(profile.joint, _rows(rows, rng), alpha=0.05, seed=i) for i in range(40)]
    assert all(r.status == "ok" for r in results)
    assert sum(r.drifted for r in results) <= 5  # P(X > 5 | Bin(40, 0.05)) < 0.02
    p_values = np.array([r.p_value for r in results], dtype=float)
    assert 0.25 < float(np.median(p_values)) < 0.8  # roughly uniform, not piled near 0


def test_old_profiles_say_not_available(profile: ReferenceProfile) -> None:
    data = json.loads(profile.to_json())
    data.pop("joint")
    old = ReferenceProfile.from_dict(data)
    assert old.joint is None
    report = detect_drift(old, _rows(500, np.random.default_rng(2), corr=False))
    assert report.multivariate is not None and report.multivariate.status == "not_available"
    assert not report.multivariate.drifted
    assert "not evaluated (not_available" in report.multivariate.describe()


def test_joint_sample_round_trips_and_is_bounded(profile: ReferenceProfile) -> None:
    again = ReferenceProfile.from_dict(json.loads(profile.to_json()))
    assert again.joint is not None and profile.joint is not None
    assert again.joint.rows == 5000 and again.joint.columns == profile.joint.columns
    assert again.joint.numeric == [True, True, True, False, True, False]
    with pytest.raises(MonitoringError, match="joint sample"):
        JointSample.from_dict({"columns": ["a"]})


def test_too_few_rows_and_missing_values_do_not_fail(profile: ReferenceProfile) -> None:
    small = detect_multivariate(profile.joint, _rows(20, np.random.default_rng(3)))
    assert small.status == "too_few_rows" and not small.drifted
    window = _rows(600, np.random.default_rng(4))
    window.loc[::3, "x1"] = np.nan
    window.loc[::5, "sign"] = None
    window.loc[::7, "tag"] = "never-seen"
    result = detect_multivariate(profile.joint, window)
    assert result.status == "ok" and result.drifted  # a third of x1 missing is a real change
    assert "x1" in result.top_columns


def test_report_json_html_and_alert_rule(profile: ReferenceProfile) -> None:
    window = _rows(1000, np.random.default_rng(5), corr=False)
    report = detect_drift(profile, window)
    data = json.loads(report.to_json())
    assert data["multivariate"]["drifted"] is True
    from mloop.monitoring.results import DriftReport

    back = DriftReport.from_dict(data)
    assert (
        isinstance(back.multivariate, MultivariateDrift) and back.multivariate.auc == report.multivariate.auc
    )
    page = render_html(report, reference=profile, current=window)
    assert "Multivariate drift" in page and "x1 against x2" in page
    rules = parse_rules([{"name": "joint", "when": "multivariate_drift"}])
    engine = AlertEngine(rules, state=AlertState())
    fired = engine.observe(report)
    assert [a.rule for a in fired] == ["joint"]
    assert "AUC" in fired[0].message and "x1" in fired[0].message


def test_prometheus_gauges_carry_the_multivariate_verdict(profile: ReferenceProfile) -> None:
    from mloop.monitoring.cycle_result import drift_summary
    from mloop.monitoring.gauges import MonitoringGauges

    report = detect_drift(profile, _rows(800, np.random.default_rng(6), cat_follows=False))
    summary = drift_summary(report)
    assert summary is not None and summary["multivariate"]["drifted"] is True
    gauges = MonitoringGauges()
    gauges.update({"model": "m", "version": "1", "drift": summary})
    auc = gauges.sample("mloop_multivariate_drift_auc", {"model": "m"})
    assert auc is not None and auc > 0.6
    assert gauges.sample("mloop_multivariate_drift_detected", {"model": "m"}) == 1.0


def _entity_rows(population: np.ndarray, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """``n`` transactions of a fixed pool of customers, each with its own age, tenure and country."""
    idx = rng.choice(len(population), n)
    country = np.where(population[idx, 2] > 0.7, "fr", np.where(population[idx, 2] > 0.3, "de", "es"))
    return pd.DataFrame(
        {
            "age": population[idx, 0],
            "tenure": population[idx, 1],
            "country": country,
            "amount": rng.lognormal(3, 1, n),
        }
    )


def test_repeated_customers_are_not_told_apart_by_the_reference_rounding() -> None:
    """The joint sample keeps 7 significant digits; a window's exact values of the same 150 customers
    must not be separable by that rounding alone (held-out AUC 0.90-0.95 before both were rounded)."""
    rng = np.random.default_rng(5)
    population = rng.uniform(size=(150, 3)) * [60, 3000, 1]
    prof = build_profile(_entity_rows(population, 20_000, rng))
    for seed in range(3):
        multi = detect_multivariate(prof.joint, _entity_rows(population, 3000, rng), seed=seed)
        assert multi.auc is not None and multi.auc < 0.55 and not multi.drifted, multi.describe()


def test_a_small_significant_difference_stays_under_the_effect_floor(profile: ReferenceProfile) -> None:
    """Correlation 0.9 -> 0.8 on 5,000 rows: significant, but a classifier barely tells the rows apart."""
    rng = np.random.default_rng(3)
    for seed in range(3):
        window = _rows(5000, rng)
        window["x2"] = 0.8 * window["x1"] + 0.6 * rng.standard_normal(len(window))
        report = detect_drift(profile, window, seed=seed)
        multi = report.multivariate
        assert multi is not None and multi.auc is not None and multi.p_value is not None
        assert multi.p_value < multi.alpha and multi.auc < multi.min_auc == 0.6
        assert not multi.drifted and not report.dataset_drifted
        assert "under the effect floor" in multi.describe()
        assert detect_multivariate(profile.joint, window, min_auc=0.5, seed=seed).drifted
    with pytest.raises(MonitoringError, match="min_auc"):
        detect_multivariate(profile.joint, window, min_auc=0.4)


def test_the_learner_imports_in_the_background_once_per_process() -> None:
    """A fresh interpreter: the import runs on its own thread and the fit finds the module there."""
    code = (
        "import sys, threading\n"
        "from mloop.monitoring.multivariate import start_learner_import\n"
        "assert 'lightgbm' not in sys.modules\n"
        "first = start_learner_import()\n"
        "assert start_learner_import() is first\n"
        "names = {t.name for t in threading.enumerate()}\n"
        "assert 'mloop-import-lightgbm' in names or 'lightgbm' in sys.modules\n"
        "first.wait()\n"
        "assert 'lightgbm' in sys.modules and not first.running\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_column_tests_that_may_import_wait_for_the_learner_import(
    profile: ReferenceProfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While LightGBM's import runs, a test that imports SciPy (KS, chi-squared) waits for it first;
    numpy-only tests (Wasserstein, Jensen-Shannon, PSI, z) do not."""
    from mloop.monitoring import drift as drift_module

    calls: list[str] = []

    class Running:
        running = True

        def wait(self) -> None:
            calls.append("wait")

    monkeypatch.setattr(drift_module, "start_learner_import", lambda: Running())
    window = _rows(300, np.random.default_rng(5))
    detect_drift(profile, window, per_column_stattest={"x1": "ks", "x2": "wasserstein"}, columns=["x1", "x2"])
    assert calls == ["wait"]  # once: for x1's KS test, not for x2's Wasserstein
    calls.clear()
    detect_drift(profile, window, stattest="wasserstein", columns=["x1", "x2"])
    assert calls == []
    detect_drift(profile, window, stattest="ks", columns=["x1", "x2"], multivariate=False)
    assert calls == []  # no check, no import to wait for
