"""Every registered drift test: agreement with scipy/Evidently formulas, the auto choice, edge cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial import distance

from mloop.errors import MonitoringError
from mloop.monitoring.profile import build_profile
from mloop.monitoring.stattests import Window, auto_stattest, get_stattest, register_stattest, stattest_names
from mloop.monitoring.stattests._base import Outcome

BUILTIN = {"ks", "chisquare", "z", "wasserstein", "jensenshannon", "psi"}
rng = np.random.default_rng(3)


def _num(values: np.ndarray) -> Window:
    return Window(numeric=True, n=values.size, values=values)


def _cat(labels: list[str]) -> Window:
    counts = pd.Series(labels).value_counts()
    return Window(numeric=False, n=len(labels), counts={str(k): int(v) for k, v in counts.items()})


def test_every_registered_test_is_tested_here() -> None:
    assert set(stattest_names()) >= BUILTIN
    tested = {name for name in BUILTIN if f"test_{name}_" in Path(__file__).read_text()}
    assert tested == BUILTIN


def test_ks_matches_scipy_exactly_on_small_references() -> None:
    ref_x, cur_x = rng.normal(size=400), rng.normal(0.3, size=300)
    prof = build_profile(pd.DataFrame({"x": ref_x}))
    out = get_stattest("ks").func(prof["x"], _num(cur_x))
    expected = stats.ks_2samp(ref_x, cur_x, method="exact")
    assert out.statistic == pytest.approx(expected.statistic) and out.p_value == pytest.approx(
        expected.pvalue
    )


def test_ks_on_quantile_grid_is_close_for_large_references() -> None:
    ref_x, cur_x = rng.normal(size=50_000), rng.normal(0.05, size=20_000)
    prof = build_profile(pd.DataFrame({"x": ref_x}), sample_rows=1000)
    out = get_stattest("ks").func(prof["x"], _num(cur_x))
    assert out.statistic == pytest.approx(stats.ks_2samp(ref_x, cur_x).statistic, abs=2e-3)
    assert out.p_value < 0.05


def test_wasserstein_matches_scipy_normed_by_reference_std() -> None:
    for ref_x, cur_x in [
        (rng.normal(size=20_000), rng.normal(0.2, 1.3, 5000)),
        (rng.lognormal(size=20_000), rng.lognormal(0.1, size=5000)),
        (rng.integers(0, 4, 5000).astype(float), rng.integers(0, 5, 3000).astype(float)),
    ]:
        prof = build_profile(pd.DataFrame({"x": ref_x}))
        out = get_stattest("wasserstein").func(prof["x"], _num(cur_x))
        expected = stats.wasserstein_distance(ref_x, cur_x) / ref_x.std()
        assert out.statistic == pytest.approx(expected, rel=0.02)


def test_wasserstein_of_a_constant_reference_uses_the_norm_floor() -> None:
    prof = build_profile(pd.DataFrame({"x": np.ones(2000)}))
    out = get_stattest("wasserstein").func(prof["x"], _num(np.full(100, 1.001)))
    assert out.statistic == pytest.approx(1.0, rel=1e-6) and np.isfinite(out.statistic)


def test_jensenshannon_matches_scipy_with_evidently_zero_filling() -> None:
    ref_labels = list(rng.choice(["a", "b", "c"], 3000, p=[0.5, 0.3, 0.2]))
    cur_labels = list(rng.choice(["a", "b", "d"], 1000, p=[0.2, 0.3, 0.5]))
    prof = build_profile(pd.DataFrame({"c": ref_labels}))
    out = get_stattest("jensenshannon").func(prof["c"], _cat(cur_labels))
    keys = ["a", "b", "c", "d"]
    p = np.array([ref_labels.count(k) for k in keys]) / 3000
    q = np.array([cur_labels.count(k) for k in keys]) / 1000
    p[p == 0], q[q == 0] = 0.0001, 0.0001
    assert out.statistic == pytest.approx(distance.jensenshannon(p, q))


def test_psi_is_zero_without_change_and_grows_with_shift() -> None:
    ref_x = rng.normal(size=20_000)
    prof = build_profile(pd.DataFrame({"x": ref_x}))
    same = get_stattest("psi").func(prof["x"], _num(rng.normal(size=20_000))).statistic
    moved = get_stattest("psi").func(prof["x"], _num(rng.normal(0.5, size=20_000))).statistic
    assert same < 0.01 < 0.1 < moved


def test_chisquare_matches_scipy_contingency_and_counts_unseen_categories() -> None:
    ref_labels = ["a"] * 300 + ["b"] * 200 + ["c"] * 100
    cur_labels = ["a"] * 100 + ["b"] * 100 + ["c"] * 50 + ["new"] * 50
    prof = build_profile(pd.DataFrame({"c": ref_labels}))
    out = get_stattest("chisquare").func(prof["c"], _cat(cur_labels))
    table = np.array([[300, 200, 100, 0], [100, 100, 50, 50]])
    chi2, p, *_ = stats.chi2_contingency(table, correction=False)
    assert out.statistic == pytest.approx(chi2) and out.method == "asymptotic"
    assert out.p_value == pytest.approx(p)


def test_chisquare_uses_monte_carlo_when_expected_counts_are_small() -> None:
    prof = build_profile(pd.DataFrame({"c": ["a"] * 90 + ["b"] * 8 + ["c"] * 2}))
    out = get_stattest("chisquare").func(prof["c"], _cat(["a"] * 9 + ["b"]))
    assert out.method == "monte-carlo" and 0 < out.p_value <= 1


def test_z_matches_two_proportion_test_and_handles_non_binary_windows() -> None:
    prof = build_profile(pd.DataFrame({"b": [1] * 300 + [0] * 700}))
    out = get_stattest("z").func(prof["b"], _num(np.array([1.0] * 400 + [0.0] * 600)))
    p1, p2, pooled = 0.3, 0.4, 0.35
    z = (p2 - p1) / np.sqrt(pooled * (1 - pooled) * (1 / 1000 + 1 / 1000))
    # The reference's most frequent value is 0: its share falls from 0.7 to 0.6.
    assert out.statistic == pytest.approx(-z) and out.p_value == pytest.approx(2 * stats.norm.sf(z))
    other = get_stattest("z").func(prof["b"], _num(np.array([0.0, 1.0, 2.0] * 50)))
    assert "not binary" in other.method and other.p_value < 0.05


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (pd.DataFrame({"v": np.arange(500) % 2}), "z"),
        (pd.DataFrame({"v": np.arange(500) % 4}), "chisquare"),
        (pd.DataFrame({"v": np.arange(500.0)}), "ks"),
        (pd.DataFrame({"v": ["a", "b"] * 250}), "z"),
        (pd.DataFrame({"v": ["a", "b", "c", "d"] * 125}), "chisquare"),
        (pd.DataFrame({"v": np.arange(5000) % 5}), "jensenshannon"),
        (pd.DataFrame({"v": np.arange(5000) % 6}), "wasserstein"),
        (pd.DataFrame({"v": ["a", "b"] * 2500}), "jensenshannon"),
    ],
)
def test_auto_choice_follows_evidently_defaults(frame: pd.DataFrame, expected: str) -> None:
    assert auto_stattest(build_profile(frame)["v"]) == expected


def test_registry_rejects_unknown_names_and_duplicates() -> None:
    with pytest.raises(MonitoringError, match="Did you mean 'wasserstein'"):
        get_stattest("wasserstien")

    @register_stattest("unit_const", title="const", kind="distance", threshold=0.5)
    def const(ref: object, win: Window) -> Outcome:
        return Outcome(1.0)

    assert get_stattest("unit_const").drifted(1.0, None, 0.5)
    with pytest.raises(MonitoringError, match="already registered"):
        register_stattest("unit_const", title="x", kind="distance", threshold=0.1)(lambda r, w: Outcome(0.0))
