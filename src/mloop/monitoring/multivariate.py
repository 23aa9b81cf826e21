"""Multivariate drift: can a classifier tell reference rows from current rows?

Per-column tests see each marginal alone, so a change in how columns relate — a correlation that
breaks, a category that stops following a number — passes every one of them. A *domain classifier*
sees whole rows: it is trained to separate a bounded sample of whole reference rows (kept in the
reference profile as :class:`JointSample`; no training set is read at monitoring time) from the
current window, and scored on rows it did not train on.

The decision is exact at any window size: the rows are split once into a training half and a test
half; under "no drift" the labels of the test half are exchangeable given the features, so the test
half's ROC AUC follows the Mann-Whitney null distribution whatever the classifier learned. The p-value
is the one-sided Mann-Whitney test of "current rows score higher" (no permutation refits needed).
Shuffling one column at a time among the held-out rows says which columns carry the difference.

A significant AUC is not enough on its own: windows that repeat the same entities (customers,
devices, shops) differ from the reference's rows by who is in them, and a classifier picks that up
with a held-out AUC of 0.54-0.56 on stable traffic of the fraud template (p < 1e-4 at 3,000 rows).
So a window drifts only when the difference is also large enough to matter: held-out AUC at least
``min_auc`` (0.6 by default), an effect floor like the distance thresholds of the per-column
large-sample tests. The broken dependencies the check exists for score 0.63-0.84 even at 100 rows.

    joint = JointSample.build(train_df, numeric={"amount": True, "merchant": False})
    result = detect_multivariate(joint, window_df)
    result.drifted, result.auc, result.p_value, result.contributions

LightGBM is the classifier (already a core dependency): it takes missing values and categories
natively and fits a few thousand rows in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mloop.errors import MonitoringError

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_MIN_AUC",
    "JOINT_ROWS",
    "MAX_WINDOW_ROWS",
    "MIN_ROWS",
    "JointSample",
    "LearnerImport",
    "MultivariateDrift",
    "detect_multivariate",
    "start_learner_import",
]

JOINT_ROWS = 5000
"""Whole reference rows kept in the profile (uniform sample): bounds the profile and the fit."""
MAX_WINDOW_ROWS = 5000
"""Current rows used per check (uniform sample of larger windows): bounds the cost at any window size."""
MIN_ROWS = 50
"""Fewest current rows for which the check runs (below: ``too_few_rows``)."""
DEFAULT_ALPHA = 0.01
#: Held-out ROC AUC a window needs, besides significance, to count as drifted (see the docstring).
DEFAULT_MIN_AUC = 0.6
"""Significance of the one-sided Mann-Whitney test on the held-out half."""
_IMPORTANCE_ROWS = 2000
"""Held-out rows used to rank the columns (one prediction per column on them)."""
_MAX_LEVELS = 255
"""Category codes per column (LightGBM's bound for categorical splits); rarer levels share one code."""


@dataclass
class JointSample:
    """A bounded uniform sample of whole reference rows, column-oriented for JSON.

    ``numeric[c]`` tells how column ``c`` is compared: as a number or as a category (text).
    Missing values are ``None``.
    """

    columns: list[str]
    numeric: list[bool]
    values: list[list[Any]]
    rows: int

    @classmethod
    def build(
        cls,
        df: pd.DataFrame,
        numeric: Mapping[str, bool],
        *,
        rows: int = JOINT_ROWS,
        seed: int = 0,
    ) -> JointSample:
        """Sample up to ``rows`` whole rows of ``df`` (columns as in ``numeric``)."""
        names = [str(c) for c in df.columns if str(c) in numeric]
        n = len(df)
        take = min(n, rows)
        rng = np.random.default_rng([seed, 7919])
        idx = np.sort(rng.choice(n, size=take, replace=False)) if take < n else np.arange(n)
        sub = df.iloc[idx]
        values: list[list[Any]] = []
        for name in names:
            col = sub[name]
            if numeric[name]:
                arr = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
                # 7 significant digits (float32's precision) halve the JSON; no tree can split on less.
                values.append([float(f"{v:.7g}") if math.isfinite(v) else None for v in arr.tolist()])
            else:
                values.append([None if pd.isna(v) else str(v) for v in col.tolist()])
        return cls(columns=names, numeric=[bool(numeric[c]) for c in names], values=values, rows=take)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JointSample:
        try:
            sample = cls(
                columns=[str(c) for c in data["columns"]],
                numeric=[bool(x) for x in data["numeric"]],
                values=[list(v) for v in data["values"]],
                rows=int(data["rows"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MonitoringError(
                "The reference profile's joint sample must have 'columns', 'numeric', 'values' and "
                f"'rows'; got keys {sorted(data) if isinstance(data, Mapping) else '-'}. Rebuild the "
                "profile with build_profile()."
            ) from exc
        if len(sample.numeric) != len(sample.columns) or len(sample.values) != len(sample.columns):
            raise MonitoringError(
                f"The reference profile's joint sample names {len(sample.columns)} columns but has "
                f"{len(sample.numeric)} kinds and {len(sample.values)} value lists; rebuild the profile."
            )
        return sample

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(dict(zip(self.columns, self.values, strict=True)))


@dataclass
class MultivariateDrift:
    """The domain classifier's verdict on one window.

    ``status`` is ``ok``, ``not_available`` (the reference profile has no joint sample: versions
    trained before mloop kept one), ``too_few_rows`` or ``no_shared_columns``. ``contributions`` maps
    each column to its share of the held-out AUC lost when that column is shuffled (sums to 1; most
    contributing first; computed when the window drifted).
    """

    status: str = "ok"
    method: str = "domain-classifier"
    auc: float | None = None
    p_value: float | None = None
    alpha: float = DEFAULT_ALPHA
    min_auc: float = DEFAULT_MIN_AUC
    drifted: bool = False
    n_reference: int = 0
    n_current: int = 0
    contributions: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def top_columns(self) -> list[str]:
        return list(self.contributions)[:3]

    def describe(self) -> str:
        """One line for terminals, alerts and events."""
        if self.status != "ok" or self.auc is None or self.p_value is None:
            return f"not evaluated ({self.status}: {'; '.join(self.notes) or '-'})"
        top = ", ".join(self.top_columns) or "-"
        if self.drifted:
            return (
                f"DRIFT: a classifier tells current rows from reference rows with AUC {self.auc:.3f} "
                f"(p {self.p_value:.2g}; drifted at p < {self.alpha:g} and AUC >= {self.min_auc:g}); "
                f"most: {top}"
            )
        if self.p_value < self.alpha:
            return (
                f"no drift that matters: AUC {self.auc:.3f} is significant (p {self.p_value:.2g}) but under "
                f"the effect floor {self.min_auc:g} (windows of repeated entities do this); most: {top}"
            )
        return f"no drift: AUC {self.auc:.3f} (p {self.p_value:.2g}, drifted at p < {self.alpha:g})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MultivariateDrift:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


def _encode(ref: pd.DataFrame, cur: pd.DataFrame, numeric: Sequence[bool]) -> tuple[np.ndarray, list[int]]:
    """Both frames as one float matrix: numbers as they are, categories as codes of the reference's
    most frequent levels (unseen and rare levels share one code, missing stays NaN)."""
    both = pd.concat([ref, cur], ignore_index=True)
    out = np.empty((len(both), len(ref.columns)), dtype=np.float64)
    categorical: list[int] = []
    for j, (name, is_num) in enumerate(zip(ref.columns, numeric, strict=True)):
        col = both[name]
        if is_num:
            arr = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            out[:, j] = _seven_digits(np.where(np.isfinite(arr), arr, np.nan))
            continue
        categorical.append(j)
        text = col.astype("string")
        levels = text.iloc[: len(ref)].value_counts().index[: _MAX_LEVELS - 1]
        codes = pd.Index(levels).get_indexer(text.to_numpy(dtype=object)).astype(np.float64)
        codes[(codes < 0) & text.notna().to_numpy()] = _MAX_LEVELS - 1  # unseen or rare
        codes[text.isna().to_numpy()] = np.nan
        out[:, j] = codes
    return out, categorical


def _seven_digits(x: np.ndarray) -> np.ndarray:
    """``x`` rounded to 7 significant digits, as the joint sample stores the reference.

    Both sides must be rounded alike: LightGBM gives each distinct value its own bin when a column
    has few of them (a few hundred customers' ages or tenures), so a window's exact 52.345678912
    against the reference's 52.34568 would be told apart by the rounding alone (held-out AUC 0.93
    on stable traffic of 150 repeated customers before this).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        magnitude = np.floor(np.log10(np.abs(x)))
    magnitude = np.where(np.isfinite(magnitude), magnitude, 0.0)
    scale = 10.0 ** (6.0 - magnitude)
    with np.errstate(over="ignore", invalid="ignore"):
        rounded = np.round(x * scale) / scale
    return np.where(np.isfinite(rounded), rounded, x)


class LearnerImport:
    """LightGBM imported on a thread of its own, started before the check needs it.

    ``import lightgbm`` imports scikit-learn and SciPy's stats package with it: about 1.5 s of a
    fresh process on a quiet machine, more than the check itself costs on a million-row window. A
    one-shot run (``mloop drift``, a script) that will run the check starts the import first
    (:func:`start_learner_import`) and reads and profiles meanwhile, and :func:`detect_drift
    <mloop.monitoring.drift.detect_drift>` starts it (if nobody did) before its per-column tests; the
    fit then finds the module imported. A process that checks every minute pays the import once.

    :meth:`wait` blocks until the import has finished. Code that may import SciPy or scikit-learn
    itself while the import runs calls it first, so that two threads never import the same packages
    at once (Python's module locks can refuse a concurrent circular import). A failed import is not
    raised here: the fit imports again and reports it where it is needed.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        if "lightgbm" not in sys.modules:
            self._thread = threading.Thread(target=self._run, name="mloop-import-lightgbm", daemon=True)
            self._thread.start()

    @staticmethod
    def _run() -> None:
        # A failure is raised again where the fit imports it, with that caller's context.
        with contextlib.suppress(Exception):
            import lightgbm  # noqa: F401

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()


_learner: LearnerImport | None = None
_learner_lock = threading.Lock()


def start_learner_import() -> LearnerImport:
    """Start importing the multivariate check's learner in the background (once per process).

    Call it at the start of a one-shot run that will check multivariate drift, before reading the
    data; nothing else is needed (see :class:`LearnerImport`).
    """
    global _learner
    with _learner_lock:
        if _learner is None:
            _learner = LearnerImport()
        return _learner


def _mann_whitney_p(cur_scores: np.ndarray, ref_scores: np.ndarray) -> tuple[float, float]:
    """ROC AUC of "current scores higher" and its one-sided Mann-Whitney p-value (ties averaged)."""
    from scipy.stats import mannwhitneyu

    n1, n2 = cur_scores.size, ref_scores.size
    res = mannwhitneyu(cur_scores, ref_scores, alternative="greater", method="asymptotic")
    auc = float(res.statistic) / (n1 * n2)
    p = float(res.pvalue)
    return auc, (p if math.isfinite(p) else 1.0)  # all scores tied: no evidence of a difference


def detect_multivariate(
    joint: JointSample | None,
    current: pd.DataFrame,
    *,
    alpha: float = DEFAULT_ALPHA,
    min_auc: float = DEFAULT_MIN_AUC,
    max_rows: int = MAX_WINDOW_ROWS,
    seed: int = 0,
) -> MultivariateDrift:
    """Whether ``current`` differs from the reference rows jointly (see the module docstring)."""
    if not 0 < alpha < 1:
        raise MonitoringError(f"alpha must be in (0, 1); got {alpha}.")
    if not 0.5 <= min_auc < 1:
        raise MonitoringError(
            f"min_auc must be in [0.5, 1) (0.5: any significant difference); got {min_auc}."
        )
    res = MultivariateDrift(alpha=alpha, min_auc=min_auc)
    if joint is None:
        res.status = "not_available"
        res.notes.append(
            "the reference profile keeps no whole reference rows (version trained before multivariate "
            "drift existed); retrain to get the check"
        )
        return res
    shared = [c for c in joint.columns if c in set(map(str, current.columns))]
    if not shared:
        res.status = "no_shared_columns"
        res.notes.append("the current window has none of the reference's columns")
        return res
    kinds = dict(zip(joint.columns, joint.numeric, strict=True))
    ref = joint.frame()[shared]
    rng = np.random.default_rng([seed, 104729])
    # Sample rows, then take the columns: a large window is never copied whole.
    cur = (
        current.iloc[np.sort(rng.choice(len(current), size=max_rows, replace=False))]
        if len(current) > max_rows
        else current
    )
    names = {str(c): c for c in cur.columns}
    cur = cur[[names[c] for c in shared]].set_axis(shared, axis=1)
    res.n_reference, res.n_current = len(ref), len(cur)
    if len(cur) < MIN_ROWS or len(ref) < MIN_ROWS:
        res.status = "too_few_rows"
        res.notes.append(f"needs at least {MIN_ROWS} rows on each side; got {len(ref)} and {len(cur)}")
        return res
    x, categorical = _encode(ref, cur, [kinds[c] for c in shared])
    y = np.concatenate([np.zeros(len(ref), dtype=np.int8), np.ones(len(cur), dtype=np.int8)])
    train = np.zeros(len(y), dtype=bool)
    for label in (0, 1):  # a stratified half of each side trains; the other half is scored
        idx = np.flatnonzero(y == label)
        train[rng.choice(idx, size=idx.size // 2, replace=False)] = True
    model = _fit(x[train], y[train], categorical, seed)
    scores = model.predict_proba(x[~train])[:, 1]
    held = y[~train]
    res.auc, res.p_value = _mann_whitney_p(scores[held == 1], scores[held == 0])
    res.drifted = res.p_value < alpha and res.auc >= min_auc
    if res.p_value < alpha:  # named even under the floor: the report says what told them apart
        res.contributions = _contributions(model, x[~train], held, res.auc, shared, rng)
    return res


def _auc(scores: np.ndarray, held: np.ndarray) -> float:
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    n1 = int(held.sum())
    n0 = held.size - n1
    return float((ranks[held == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _contributions(
    model: Any, x: np.ndarray, held: np.ndarray, auc: float, names: Sequence[str], rng: np.random.Generator
) -> dict[str, float]:
    """Each column's share of the held-out AUC lost when its values are shuffled among the held-out
    rows. Measured on rows the classifier did not train on, so a column with many categories does
    not look important just because trees can split it many ways (the bias of gain importances)."""
    if held.size > _IMPORTANCE_ROWS:  # a stratified subsample keeps the cost flat on large windows
        keep = np.sort(rng.choice(held.size, size=_IMPORTANCE_ROWS, replace=False))
        x, held = x[keep], held[keep]
        auc = _auc(model.predict_proba(x)[:, 1], held)
        if held.min() == held.max():
            return {}
    drops = np.zeros(x.shape[1])
    for j in range(x.shape[1]):
        saved = x[:, j].copy()
        x[:, j] = rng.permutation(saved)
        drops[j] = max(0.0, auc - _auc(model.predict_proba(x)[:, 1], held))
        x[:, j] = saved
    total = float(drops.sum())
    if total <= 0:
        return {}
    order = np.argsort(-drops, kind="stable")
    return {names[i]: round(float(drops[i] / total), 4) for i in order if drops[i] > 0}


def _fit(x: np.ndarray, y: np.ndarray, categorical: list[int], seed: int) -> Any:
    import lightgbm as lgb

    # Small, regularised trees: enough to find a broken dependency between two or three columns in
    # a thousand rows, cheap on a few thousand, and slow to memorise noise.
    model = lgb.LGBMClassifier(
        n_estimators=60,
        learning_rate=0.1,
        num_leaves=15,
        min_child_samples=max(10, len(y) // 200),
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.9,
        random_state=seed,
        n_jobs=1,
        verbose=-1,
    )
    model.fit(x, y, categorical_feature=categorical or "auto")
    return model
