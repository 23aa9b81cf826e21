"""Data and prediction drift: compare a current window with a reference profile, column by column.

    report = detect_drift(profile, window)            # profile: ReferenceProfile or a DataFrame
    report.dataset_drifted, report.share_drifted, report.column("amount").drifted

Each column gets a test from the registry (``auto`` = Evidently's default choice, decided by the
reference alone), a threshold calibrated for the window size (see :mod:`mloop.monitoring.calibration`),
a verdict, and three side signals: change of missing rate, share of unseen categories/values and
share of values outside the reference range. Columns are computed in a thread pool (numpy releases
the GIL). Bad input is reported per column (``status``); only a window that shares no column with
the reference is an error (:class:`~mloop.errors.MonitoringError`).

Beside the columns, a domain classifier looks at whole rows (:mod:`mloop.monitoring.multivariate`):
a broken relation between columns shows there even when every marginal is unchanged; its p-value
joins the columns' in the Benjamini-Hochberg dataset verdict (``multivariate_in_verdict``), with an
effect floor (``multivariate_min_auc``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from mloop.errors import MonitoringError, did_you_mean
from mloop.monitoring.calibration import calibrate as calibrate_threshold
from mloop.monitoring.multivariate import (
    DEFAULT_ALPHA,
    DEFAULT_MIN_AUC,
    MultivariateDrift,
    detect_multivariate,
    start_learner_import,
)
from mloop.monitoring.profile import (
    ColumnProfile,
    ReferenceProfile,
    build_profile,
    is_numeric_series,
    numeric_values,
)
from mloop.monitoring.results import ColumnDrift, DriftReport
from mloop.monitoring.stattests import StatTest, Window, aligned_counts, auto_stattest, get_stattest

__all__ = ["MISSING_ALPHA", "MISSING_MIN_CHANGE", "benjamini_hochberg", "detect_drift"]

MISSING_ALPHA = 0.01
"""Significance of the two-proportion test on the missing rate."""
MISSING_MIN_CHANGE = 0.01
"""Smallest absolute change of the missing rate that is reported as a change."""


def benjamini_hochberg(p_values: Sequence[float], q: float) -> list[bool]:
    """Which hypotheses the Benjamini-Hochberg step-up procedure rejects at FDR ``q``."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return []
    order = np.argsort(p, kind="stable")
    passed = np.flatnonzero(p[order] <= q * np.arange(1, p.size + 1) / p.size)
    rejected = np.zeros(p.size, dtype=bool)
    if passed.size:
        rejected[order[: passed[-1] + 1]] = True
    return rejected.tolist()


def _missing_changed(ref: ColumnProfile, n_missing: int, n_rows: int) -> bool:
    if n_rows == 0 or ref.count == 0:
        return False
    p1, p2 = ref.missing_rate, n_missing / n_rows
    if abs(p2 - p1) < MISSING_MIN_CHANGE:
        return False
    pooled = (ref.n_missing + n_missing) / (ref.count + n_rows)
    var = pooled * (1 - pooled) * (1 / ref.count + 1 / n_rows)
    return var <= 0 or bool(math.erfc(abs(p2 - p1) / math.sqrt(2 * var)) < MISSING_ALPHA)


def _prepare(ref: ColumnProfile, series: pd.Series, res: ColumnDrift) -> Window | None:
    """The window's column in the reference's terms, or None (with ``res.status`` set) if impossible."""
    cur_numeric = is_numeric_series(series)
    missing = series.isna().to_numpy()
    if missing.all():
        res.missing_rate_current = 1.0 if len(series) else None
        res.missing_rate_changed = _missing_changed(ref, int(missing.sum()), len(series))
        return Window(numeric=ref.numeric, n=0, values=np.empty(0), counts={})
    if ref.numeric and not cur_numeric:
        example = series[~missing].iloc[0]
        res.status = "dtype_mismatch"
        res.notes.append(
            f"reference is numeric; current column has dtype {series.dtype} (e.g. {example!r}). "
            "Fix the window's dtype before comparing."
        )
        return None
    if not ref.numeric and cur_numeric and not ref.source_numeric:
        res.status = "dtype_mismatch"
        res.notes.append(f"reference holds text categories; current column holds numbers ({series.dtype}).")
        return None
    if ref.numeric:
        values = numeric_values(series)
        nan = np.isnan(values)
        valid = values[~nan] if nan.any() else values
        res.missing_rate_current = float(nan.mean())
        res.missing_rate_changed = _missing_changed(ref, int(nan.sum()), len(values))
        return Window(numeric=True, n=int(valid.size), values=valid)
    counts = (series[~missing] if missing.any() else series).astype(str).value_counts()
    res.missing_rate_current = float(missing.mean())
    res.missing_rate_changed = _missing_changed(ref, int(missing.sum()), len(series))
    return Window(
        numeric=False,
        n=int(counts.sum()),
        counts=dict(zip(counts.index.astype(str), counts.to_numpy().tolist(), strict=True)),
    )


def _side_signals(ref: ColumnProfile, win: Window, res: ColumnDrift) -> None:
    if win.n == 0:
        return
    if ref.numeric and win.values is not None and ref.min is not None and ref.max is not None:
        res.out_of_range_share = float(
            np.count_nonzero((win.values < ref.min) | (win.values > ref.max)) / win.n
        )
    if ref.levels:
        _, _, _, unseen = aligned_counts(ref, win)
        res.unseen_share = unseen / win.n
        if not ref.numeric and ref.other_count:
            res.notes.append(
                "reference kept only its most frequent categories; unseen share is an upper bound"
            )


_IMPORT_FREE_TESTS = frozenset({"wasserstein", "jensenshannon", "psi", "z"})
"""Built-in tests that import nothing beyond numpy while they run (see ``detect_drift``)."""


def _column(
    ref: ColumnProfile, series: pd.Series | None, test: StatTest, rows: int, calibrate: bool, seed: int
) -> ColumnDrift:
    res = ColumnDrift(
        column=ref.name,
        kind=ref.kind,
        test=test.name,
        default_threshold=test.threshold,
        n_reference=ref.n_valid,
        missing_rate_reference=ref.missing_rate,
    )
    if series is None:
        res.status = "missing_in_current"
        res.notes.append("column is absent from the current window")
        return res
    if rows == 0:
        res.status = "empty_window"
        res.notes.append("the current window has no rows")
        return res
    win = _prepare(ref, series, res)
    if win is None:
        return res
    res.n_current = win.n
    _side_signals(ref, win, res)
    if ref.n_valid == 0:
        res.status = "no_reference_values"
        res.notes.append("the reference has no non-missing values in this column")
    elif win.n == 0:
        res.status = "all_missing"
        res.notes.append("every value of this column is missing in the current window")
    elif win.n < test.min_rows:
        res.status = "too_few_rows"
        res.notes.append(f"{test.name} needs at least {test.min_rows} values; the window has {win.n}")
    if res.status != "ok":
        return res
    if ref.n_unique == 1:
        res.notes.append("reference column is constant")
    out = test.func(ref, win)
    res.statistic, res.p_value = out.statistic, out.p_value
    if test.kind == "distance" and test.null is not None:
        cal = calibrate_threshold(test, ref, win.n, out.statistic, seed=seed, apply=calibrate)
        res.threshold, res.null_quantile, res.method, res.fdr_p_value = (
            cal.threshold,
            cal.null_quantile,
            cal.method,
            cal.p_value,
        )
    else:
        res.threshold, res.method = test.threshold, out.method
        res.fdr_p_value = (
            out.p_value
            if out.p_value is not None
            else (0.0 if test.drifted(out.statistic, None, test.threshold) else 1.0)
        )
    res.drifted = test.drifted(out.statistic, out.p_value, res.threshold)
    return res


def _choose(ref: ColumnProfile, stattest: str, per_column: Mapping[str, str]) -> StatTest:
    name = per_column.get(ref.name, stattest)
    if name == "auto":
        return get_stattest(auto_stattest(ref))
    test = get_stattest(name)
    kind = "numeric" if ref.numeric else "categorical"
    if kind not in test.column_kinds:
        if ref.name in per_column:
            raise MonitoringError(
                f"Test {name!r} cannot compare column {ref.name!r}: it is {kind}, and "
                f"{name!r} accepts {sorted(test.column_kinds)} columns."
            )
        return get_stattest(auto_stattest(ref))
    return test


def _profile(
    reference: ReferenceProfile | pd.DataFrame, categorical: Sequence[str] | None
) -> ReferenceProfile:
    if isinstance(reference, ReferenceProfile):
        return reference
    if isinstance(reference, pd.DataFrame):
        return build_profile(reference, categorical=categorical)
    raise MonitoringError(
        f"The reference must be a ReferenceProfile or a pandas DataFrame; got {type(reference).__name__}."
    )


def detect_drift(
    reference: ReferenceProfile | pd.DataFrame,
    current: pd.DataFrame,
    *,
    columns: Sequence[str] | None = None,
    stattest: str = "auto",
    per_column_stattest: Mapping[str, str] | None = None,
    fdr: float = 0.05,
    drift_share: float = 0.5,
    calibrate: bool = True,
    categorical: Sequence[str] | None = None,
    seed: int = 0,
    multivariate: bool = True,
    multivariate_alpha: float = DEFAULT_ALPHA,
    multivariate_in_verdict: bool = True,
    multivariate_min_auc: float = DEFAULT_MIN_AUC,
) -> DriftReport:
    """Compare ``current`` with ``reference`` (see the module docstring).

    ``multivariate`` adds the domain-classifier check on the compared columns; ``multivariate_alpha``
    is its own significance and ``multivariate_min_auc`` its effect floor (its ``drifted`` needs both).
    With ``multivariate_in_verdict`` (the default) the dataset verdict takes its p-value into the
    Benjamini-Hochberg procedure at ``fdr`` with the columns', and counts it as drifted only at the
    floor: on traffic whose rows cluster (the same customers in a window) the classifier tells a
    window from the reference by who is in it, with a small AUC, without any drift that matters.
    """
    if not isinstance(current, pd.DataFrame):
        raise MonitoringError(f"The current window must be a pandas DataFrame; got {type(current).__name__}.")
    if not 0 < fdr < 1 or not 0 < drift_share <= 1:
        raise MonitoringError(
            f"fdr must be in (0, 1) and drift_share in (0, 1]; got {fdr} and {drift_share}."
        )
    profile = _profile(reference, categorical)
    per_column = dict(per_column_stattest or {})
    wanted = list(columns) if columns is not None else list(profile.columns)
    for name in [*wanted, *per_column]:
        if name not in profile.columns:
            raise MonitoringError(
                f"Column {name!r} is not in the reference{did_you_mean(name, profile.columns)}; "
                f"reference columns: {list(profile.columns)}."
            )
    tests = {name: _choose(profile[name], stattest, per_column) for name in wanted}
    current_names = {str(c): c for c in current.columns}
    if len(current.columns) and wanted and not set(wanted) & set(current_names):
        raise MonitoringError(
            f"The current window shares no column with the reference: it has {list(current_names)[:10]}, "
            f"the reference has {wanted[:10]}. Check that both files describe the same model's inputs."
        )
    rows = len(current)
    # The classifier's learner imports while the column tests run; a test that may import SciPy
    # itself waits for that import first (two threads never import the same packages at once).
    learner = start_learner_import() if multivariate and profile.joint is not None else None

    def one(name: str) -> ColumnDrift:
        if learner is not None and learner.running and tests[name].name not in _IMPORT_FREE_TESTS:
            learner.wait()
        series = current[current_names[name]] if name in current_names else None
        return _column(profile[name], series, tests[name], rows, calibrate, seed)

    workers = max(1, min(len(wanted), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, wanted))
    multi = (
        _multivariate(profile, current, wanted, multivariate_alpha, multivariate_min_auc, seed)
        if multivariate
        else None
    )
    tested = [r for r in results if r.status == "ok"]
    p_values = [1.0 if r.fdr_p_value is None else r.fdr_p_value for r in tested]
    multi_ran = (
        multivariate_in_verdict and multi is not None and multi.status == "ok" and multi.p_value is not None
    )
    if multi_ran and multi is not None and multi.p_value is not None:
        p_values.append(multi.p_value)
    rejections = benjamini_hochberg(p_values, fdr)
    for res, rejected in zip(tested, rejections[: len(tested)], strict=True):
        res.fdr_rejected = rejected
    # The classifier's p-value counts in the multiple-testing correction whenever it ran; it turns the
    # verdict only with an effect at the floor (see mloop.monitoring.multivariate).
    multi_rejected = (
        multi_ran and bool(rejections[-1]) and multi is not None and (multi.auc or 0.0) >= multi.min_auc
    )
    n_drifted = sum(r.drifted for r in tested)
    share = n_drifted / len(tested) if tested else 0.0
    return DriftReport(
        columns=results,
        rows_reference=profile.rows,
        rows_current=rows,
        dataset_drifted=any(r.fdr_rejected for r in tested) or multi_rejected,
        share_drifted=share,
        share_rule_drifted=bool(tested) and share >= drift_share,
        n_tested=len(tested),
        n_drifted=n_drifted,
        fdr=fdr,
        drift_share=drift_share,
        calibrated=calibrate,
        extra_columns=[c for c in current_names if c not in profile.columns],
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        multivariate=multi,
    )


def _multivariate(
    profile: ReferenceProfile,
    current: pd.DataFrame,
    wanted: Sequence[str],
    alpha: float,
    min_auc: float,
    seed: int,
) -> MultivariateDrift:
    """The domain classifier on the compared columns (never fails the per-column report)."""
    joint = profile.joint
    if joint is not None and set(wanted) != set(joint.columns):
        keep = [i for i, c in enumerate(joint.columns) if c in set(wanted)]
        joint = type(joint)(
            columns=[joint.columns[i] for i in keep],
            numeric=[joint.numeric[i] for i in keep],
            values=[joint.values[i] for i in keep],
            rows=joint.rows,
        )
    try:
        return detect_multivariate(joint, current, alpha=alpha, min_auc=min_auc, seed=seed)
    except (ValueError, TypeError, MemoryError) as exc:  # bad rows: say so, keep the column verdicts
        return MultivariateDrift(
            status="failed", alpha=alpha, min_auc=min_auc, notes=[f"{type(exc).__name__}: {exc}"]
        )
