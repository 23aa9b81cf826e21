"""detect_drift: verdicts, side signals, bad input reported per column, dataset-level rules."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mloop.errors import MonitoringError
from mloop.monitoring import DriftReport, benjamini_hochberg, build_profile, detect_drift


def _frame(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x": rng.normal(shift, 1, n),
            "c": rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2]),
            "b": rng.integers(0, 2, n),
        }
    )


@pytest.fixture(scope="module")
def profile():
    return build_profile(_frame(3000, 0))


def test_no_drift_and_clear_drift(profile) -> None:
    calm = detect_drift(profile, _frame(2000, 1))
    assert not calm.dataset_drifted and calm.share_drifted == 0.0 and calm.n_tested == 3
    assert [c.test for c in calm.columns] == ["wasserstein", "jensenshannon", "jensenshannon"]
    moved = detect_drift(profile, _frame(2000, 2, shift=0.8))
    x = moved.column("x")
    assert x.drifted and x.fdr_rejected and x.statistic > x.threshold and moved.dataset_drifted
    assert moved.drifted_columns == ["x"] and moved.share_drifted == pytest.approx(1 / 3)
    assert (
        not moved.share_rule_drifted
        and detect_drift(profile, _frame(2000, 2, 0.8), drift_share=0.3).share_rule_drifted
    )


def test_reference_may_be_a_dataframe_and_columns_can_be_chosen() -> None:
    report = detect_drift(_frame(500, 0), _frame(300, 1, shift=1.0), columns=["x"])
    assert [c.column for c in report.columns] == ["x"] and report.columns[0].test == "ks"
    assert report.columns[0].drifted and report.columns[0].method in ("exact", "asymptotic")


def test_small_windows_get_calibrated_thresholds_and_evidently_defaults_without(profile) -> None:
    window = _frame(30, 5)
    on = detect_drift(profile, window).column("c")
    off = detect_drift(profile, window, calibrate=False).column("c")
    assert on.method == "calibrated" and on.threshold > 0.1 and on.null_quantile == on.threshold
    assert off.method == "default" and off.threshold == 0.1


def test_missing_extra_and_mistyped_columns_are_reported_not_fatal(profile) -> None:
    window = _frame(500, 1).drop(columns=["b"]).assign(x=lambda d: d.x.astype(str), extra=1)
    report = detect_drift(profile, window)
    assert report.column("b").status == "missing_in_current" and not report.column("b").drifted
    assert report.column("x").status == "dtype_mismatch" and "numeric" in report.column("x").notes[0]
    assert report.column("c").status == "ok" and report.extra_columns == ["extra"]
    assert report.n_tested == 1


def test_categorical_reference_rejects_numbers_unless_it_was_built_from_numbers() -> None:
    prof = build_profile(pd.DataFrame({"c": ["1", "2"] * 600, "z": [1, 2] * 600}), categorical=["z"])
    report = detect_drift(prof, pd.DataFrame({"c": [1, 2] * 50, "z": [1, 2] * 50}))
    assert report.column("c").status == "dtype_mismatch"
    assert report.column("z").status == "ok" and not report.column("z").drifted


def test_empty_all_missing_and_constant_columns_have_defined_results(profile) -> None:
    empty = detect_drift(profile, _frame(0, 1))
    assert {c.status for c in empty.columns} == {"empty_window"}
    assert not empty.dataset_drifted and empty.share_drifted == 0.0 and not empty.share_rule_drifted
    nothing = _frame(200, 1).assign(x=np.nan)
    col = detect_drift(profile, nothing).column("x")
    assert col.status == "all_missing" and col.missing_rate_current == 1.0 and col.missing_rate_changed
    assert col.drifted is False
    const = build_profile(pd.DataFrame({"k": np.full(2000, 3.0)}))
    same = detect_drift(const, pd.DataFrame({"k": np.full(50, 3.0)})).column("k")
    moved = detect_drift(const, pd.DataFrame({"k": np.full(50, 4.0)})).column("k")
    assert same.status == "ok" and not same.drifted and "constant" in same.notes[0]
    assert moved.drifted and moved.out_of_range_share == 1.0
    json.dumps(detect_drift(const, pd.DataFrame({"k": np.full(50, 4.0)})).to_dict(), allow_nan=False)


def test_side_signals_missing_unseen_and_out_of_range(profile) -> None:
    window = _frame(1000, 7)
    window.loc[:199, "x"] = np.nan
    window.loc[:99, "c"] = "brand-new"
    window.loc[200:299, "x"] = 1e6
    report = detect_drift(profile, window)
    x, c = report.column("x"), report.column("c")
    assert x.missing_rate_current == pytest.approx(0.2) and x.missing_rate_changed
    assert x.out_of_range_share == pytest.approx(100 / 800)
    assert c.unseen_share == pytest.approx(0.1) and c.drifted
    assert not report.column("b").missing_rate_changed


def test_mismatched_inputs_raise_monitoring_error(profile) -> None:
    with pytest.raises(MonitoringError, match="shares no column"):
        detect_drift(profile, pd.DataFrame({"other": [1, 2, 3]}))
    with pytest.raises(MonitoringError, match="Did you mean 'x'"):
        detect_drift(profile, _frame(10, 1), per_column_stattest={"xx": "ks"})
    with pytest.raises(MonitoringError, match="cannot compare column 'c'"):
        detect_drift(profile, _frame(10, 1), per_column_stattest={"c": "ks"})
    with pytest.raises(MonitoringError, match="Unknown drift test"):
        detect_drift(profile, _frame(10, 1), stattest="nope")
    with pytest.raises(MonitoringError, match="DataFrame"):
        detect_drift(profile, [1, 2, 3])


def test_per_column_and_global_tests(profile) -> None:
    report = detect_drift(profile, _frame(800, 3, shift=0.5), stattest="psi", per_column_stattest={"x": "ks"})
    assert report.column("x").test == "ks" and report.column("c").test == "psi"
    ks_everywhere = detect_drift(profile, _frame(800, 3), stattest="ks")
    assert ks_everywhere.column("c").test == "jensenshannon"  # ks does not apply to categories: auto


def test_benjamini_hochberg_step_up() -> None:
    assert benjamini_hochberg([], 0.05) == []
    # 0.03 misses its own bound (0.025) but 0.036 meets 0.0375: step-up rejects both.
    assert benjamini_hochberg([0.01, 0.036, 0.03, 0.5], 0.05) == [True, True, True, False]
    assert benjamini_hochberg([0.01, 0.04, 0.03, 0.5], 0.05) == [True, False, False, False]
    assert benjamini_hochberg([0.02, 0.2, 0.3], 0.05) == [False, False, False]


def test_report_round_trips_through_json(profile) -> None:
    report = detect_drift(profile, _frame(500, 4, shift=1.0))
    again = DriftReport.from_dict(json.loads(report.to_json()))
    assert again.to_dict() == report.to_dict()
