"""Quality estimated before labels arrive: :func:`estimate_quality` over a window of predictions.

Labels arrive late (fraud chargebacks take weeks) or never, and until they do the realized quality of
:mod:`mloop.monitoring.quality` knows nothing. What a model version carries instead is a
:class:`QualityEstimator` (``quality_estimator.json``, fitted on the holdout at training time by
:mod:`mloop.training.probability_calibration`, plain numbers only: the trust policy loads no code):

- **Classifiers** (confidence-based performance estimation, as NannyML's CBPE): the model's class
  probabilities, calibrated on the holdout, are the chance that each prediction is right. Summed over
  a window they give the *expected confusion matrix*, hence accuracy, precision, recall and F1 (of
  ``classes[1]`` for a binary classifier, macro averages otherwise), and the expected ROC curve, hence
  ROC AUC. The interval is where the realized metric of this window falls if the calibrated
  probabilities are right: labels are drawn from them ``samples`` times and each draw is scored
  (vectorised; ranks are computed once).
- **Regressors** (a direct loss estimate, simpler than NannyML's DLE): the holdout's absolute and
  squared errors are averaged per quantile bin of the prediction; a window's MAE and RMSE are the
  bins' averages weighted by where its predictions fall, with a normal interval from the bins'
  variances. It sees errors that depend on the predicted value, not on features the prediction ignores.
- Models without class probabilities get ``status="not_available"`` with the reason.

What no estimate can see: a change of P(y | x) with unchanged inputs (concept drift). The model is
then as confident as before and wrong; the realized quality catches it once labels arrive.

    estimator = QualityEstimator.from_dict(json.loads(text))
    est = estimate_quality(frame, estimator)       # a prediction-log frame: prediction, proba_<class>
    est.metrics["f1"], est.lower["f1"], est.upper["f1"]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property, lru_cache
from typing import Any, Literal

import numpy as np
import pandas as pd

from mloop.errors import MonitoringError
from mloop.monitoring.window import label_key

__all__ = [
    "ESTIMATOR_FILE",
    "Calibrator",
    "ErrorBins",
    "EstimatedQuality",
    "QualityEstimator",
    "estimate_classification",
    "estimate_quality",
    "estimate_regression",
    "isotonic_blocks",
]

ESTIMATOR_FILE = "quality_estimator.json"
"""The estimator's file in a version's model directory (beside ``evaluation.json``)."""
FORMAT = 1
SAMPLES = 400
"""Label draws per window for the classifier's interval (the 2.5/97.5 % points of 400 draws move by
about 0.1 of the interval's width between seeds)."""
BINARY_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
"""A binary classifier's estimated metrics (of ``classes[1]``), in the order of their draws."""
EXACT_DRAWS_MAX_ROWS = 200
"""Binary windows up to this size draw every row's label; larger ones draw the sums the metrics need
from their normal approximation (see ``_binary_draws``), which measured nominal coverage from
300 rows at 11 % positives up."""


def _floats(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or not np.isfinite(arr).all():
        raise MonitoringError(f"quality_estimator.json: {name} must be a list of finite numbers.")
    return arr


def isotonic_blocks(level: np.ndarray) -> np.ndarray:
    """The block of each knot of an isotonic calibration: consecutive knots of one level, numbered
    from 0 (one block is fitted on one group of holdout rows)."""
    return np.concatenate([[0], np.cumsum(level[1:] != level[:-1])]).astype(int)


@dataclass(frozen=True)
class Calibrator:
    """Maps a model's probability of one class to a calibrated one.

    ``isotonic``: piecewise linear through (``x``, ``y``), clipped at the ends (what scikit-learn's
    ``IsotonicRegression.predict`` does with ``out_of_bounds="clip"``); ``sigmoid`` (Platt):
    ``1 / (1 + exp(-(a * logit(p) + b)))``; ``identity``: the probability as it is.

    ``n`` (isotonic, optional): how many holdout rows the block of each knot was fitted on (a block:
    consecutive knots of one ``y``). The calibrated value of a block is a mean of that many 0/1
    outcomes, so it is itself uncertain by ``sqrt(y (1 - y) / n)``; the interval of an estimate adds
    that uncertainty, which matters where traffic moved to scores the holdout had few rows of.
    """

    method: Literal["isotonic", "sigmoid", "identity"]
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    a: float = 1.0
    b: float = 0.0
    n: tuple[float, ...] = ()

    @cached_property
    def _knots(self) -> tuple[np.ndarray, np.ndarray]:
        """``x`` and ``y`` as arrays, made once (a calibrator is applied to every window)."""
        return np.asarray(self.x, dtype=float), np.asarray(self.y, dtype=float)

    @cached_property
    def _block_table(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(block of each knot, standard error of each block's level), or None without counts."""
        if self.method != "isotonic" or len(self.n) != len(self.x) or not self.x:
            return None
        y = self._knots[1]
        block = isotonic_blocks(y)
        starts = np.concatenate([[True], block[1:] != block[:-1]])
        level, count = y[starts], np.maximum(np.asarray(self.n)[starts], 1.0)
        return block, np.sqrt(level * (1 - level) / count)

    def blocks(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(block of each value of ``p``, standard error of each block's calibrated value), or None
        when the calibration carries no holdout counts (Platt, identity, older versions)."""
        table = self._block_table
        if table is None:
            return None
        at = np.searchsorted(self._knots[0], np.asarray(p, dtype=float), side="right")
        return table[0][np.maximum(at - 1, 0)], table[1]

    def apply(self, p: np.ndarray) -> np.ndarray:
        p = np.minimum(np.maximum(np.asarray(p, dtype=float), 0.0), 1.0)  # np.clip, without its overhead
        if self.method == "isotonic":
            return np.asarray(np.interp(p, *self._knots), dtype=float)
        if self.method == "sigmoid":
            q = np.clip(p, 1e-12, 1 - 1e-12)
            z = self.a * np.log(q / (1 - q)) + self.b
            return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=float)
        return p

    def to_dict(self) -> dict[str, Any]:
        out = {"method": self.method, "x": list(self.x), "y": list(self.y), "a": self.a, "b": self.b}
        if self.n:
            out["n"] = list(self.n)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibrator:
        method = data.get("method")
        if method not in ("isotonic", "sigmoid", "identity"):
            raise MonitoringError(
                "quality_estimator.json: calibration method must be isotonic, sigmoid or identity; "
                f"got {method!r}."
            )
        x, y = _floats(data.get("x", []), "x"), _floats(data.get("y", []), "y")
        if method == "isotonic" and (len(x) < 1 or len(x) != len(y) or np.any(np.diff(x) < 0)):
            raise MonitoringError(
                "quality_estimator.json: an isotonic calibration needs as many x as y values, x increasing."
            )
        a, b = float(data.get("a", 1.0)), float(data.get("b", 0.0))
        if not (math.isfinite(a) and math.isfinite(b)):
            raise MonitoringError("quality_estimator.json: a sigmoid calibration needs finite a and b.")
        n = _floats(data.get("n", []), "n")
        if len(n) and (len(n) != len(x) or np.any(n < 0)):
            raise MonitoringError("quality_estimator.json: n needs one count (>= 0) per knot of x.")
        return cls(method, tuple(x.tolist()), tuple(np.clip(y, 0, 1).tolist()), a, b, tuple(n.tolist()))


@dataclass(frozen=True)
class ErrorBins:
    """A regressor's holdout errors by quantile bin of its prediction (inner ``edges``; n+1 bins)."""

    edges: tuple[float, ...]
    mean_abs: tuple[float, ...]
    var_abs: tuple[float, ...]
    mean_sq: tuple[float, ...]
    var_sq: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ErrorBins:
        parts = {k: tuple(_floats(data.get(k, []), k).tolist()) for k in cls.__dataclass_fields__}
        n = len(parts["mean_abs"])
        if (
            n == 0
            or len(parts["edges"]) != n - 1
            or any(len(v) != n for k, v in parts.items() if k != "edges")
        ):
            raise MonitoringError(
                "quality_estimator.json: error bins need one value more per statistic than edges."
            )
        return cls(**parts)


@dataclass
class EstimatedQuality:
    """A window's estimated metrics with the ``lower``/``upper`` ends of their ``confidence`` interval."""

    status: Literal["ok", "not_available"] = "not_available"
    method: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    lower: dict[str, float] = field(default_factory=dict)
    upper: dict[str, float] = field(default_factory=dict)
    rows: int = 0
    confidence: float = 0.95
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EstimatedQuality:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class QualityEstimator:
    """What a version carries to estimate its quality without labels (see the module docstring)."""

    task: str
    status: Literal["ok", "not_available"]
    reason: str = ""
    classes: list[str] = field(default_factory=list)
    """The classes as label keys, in the model's order (``proba_<key>`` columns of the log)."""
    calibrators: list[Calibrator] = field(default_factory=list)
    """Binary: one, for ``classes[1]``; more classes: one per class (one-vs-rest, renormalised)."""
    bins: ErrorBins | None = None
    holdout: dict[str, float] = field(default_factory=dict)
    """Facts of the fit: rows, Brier score or errors before and after calibration."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "task": self.task,
            "status": self.status,
            "reason": self.reason,
            "classes": list(self.classes),
            "calibrators": [c.to_dict() for c in self.calibrators],
            "bins": self.bins.to_dict() if self.bins else None,
            "holdout": dict(self.holdout),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QualityEstimator:
        if data.get("format") != FORMAT:
            raise MonitoringError(
                f"quality_estimator.json has format {data.get('format')!r}; this mloop reads format "
                f"{FORMAT}. "
                "Retrain the version with this mloop (`mloop train`)."
            )
        status = data.get("status")
        if status not in ("ok", "not_available"):
            raise MonitoringError(
                f"quality_estimator.json: status must be ok or not_available; got {status!r}."
            )
        est = cls(
            task=str(data.get("task")),
            status=status,
            reason=str(data.get("reason") or ""),
            classes=[str(c) for c in data.get("classes") or []],
            calibrators=[Calibrator.from_dict(c) for c in data.get("calibrators") or []],
            bins=ErrorBins.from_dict(data["bins"]) if data.get("bins") else None,
            holdout={
                k: float(v) for k, v in (data.get("holdout") or {}).items() if isinstance(v, int | float)
            },
        )
        if est.status == "ok" and est.task == "classification":
            wanted = 1 if len(est.classes) == 2 else len(est.classes)
            if len(est.classes) < 2 or len(est.calibrators) != wanted:
                raise MonitoringError(
                    f"quality_estimator.json: {len(est.classes)} classes need {wanted} calibrations; "
                    f"got {len(est.calibrators)}."
                )
        if est.status == "ok" and est.task == "regression" and est.bins is None:
            raise MonitoringError("quality_estimator.json: a regressor's estimator needs its error bins.")
        return est

    @classmethod
    def not_available(cls, task: str, reason: str) -> QualityEstimator:
        return cls(task=task, status="not_available", reason=reason)

    def calibrate(self, proba: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities (rows sum to one) from the model's (a column per class)."""
        if len(self.classes) == 2:
            p1 = self.calibrators[0].apply(proba[:, 1])
            return np.column_stack([1 - p1, p1])
        cal = np.column_stack([c.apply(proba[:, k]) for k, c in enumerate(self.calibrators)])
        total = cal.sum(axis=1, keepdims=True)
        # A row whose calibrated values are all 0 keeps the model's own probabilities.
        return np.where(total > 0, cal / np.where(total > 0, total, 1.0), proba)


Ranked = tuple[np.ndarray, np.ndarray, np.ndarray]
"""One sort of a score column: the order, and where each run of tied values starts and how long it is."""


def _ranked(score: np.ndarray) -> Ranked:
    order = np.argsort(score)  # ties are grouped below, so the sort need not be stable
    s = score[order]
    starts = np.concatenate([[0], np.flatnonzero(s[1:] != s[:-1]) + 1])
    counts = np.diff(np.append(starts, len(s)))
    return order, starts, counts


def _average_ranks(ranked: Ranked) -> np.ndarray:
    """1-based ranks, ties sharing their average (what ``scipy.stats.rankdata`` gives)."""
    order, starts, counts = ranked
    ranks = np.empty(len(order))
    ranks[order] = np.repeat(starts + (counts + 1) / 2.0, counts)
    return ranks


def _weighted_auc(score: np.ndarray, p: np.ndarray, ranked: Ranked | None = None) -> float:
    """Expected ROC AUC when row i is positive with probability p_i (ratio of expectations).

    E[#(pos, neg) pairs ranked right] / E[#pos · #neg], ties counting one half; pairs of a row with
    itself are left out. O(n log n): a weighted rank per row from one sort.
    """
    order, starts, counts = ranked if ranked is not None else _ranked(score)
    group = np.add.reduceat((1.0 - p)[order], starts)
    below = np.concatenate([[0.0], np.cumsum(group)[:-1]]) + 0.5 * group
    neg_rank = np.empty_like(p)
    neg_rank[order] = np.repeat(below, counts)
    numerator = float(np.sum(p * (neg_rank - 0.5 * (1.0 - p))))
    mu = float(p.sum())
    denominator = mu * (len(p) - mu) - float(np.sum(p * (1 - p)))
    return numerator / denominator if denominator > 0 else math.nan


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den`` is 0 (scikit-learn's ``zero_division=0``)."""
    out = np.zeros_like(num, dtype=float)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _confusion_metrics(conf: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics from confusion matrices ``conf[..., true, predicted]`` (expected or drawn)."""
    n = conf.sum(axis=(-2, -1))
    diag = np.diagonal(conf, axis1=-2, axis2=-1)
    out = {"accuracy": _ratio(diag.sum(axis=-1), n)}
    true_k, pred_k = conf.sum(axis=-1), conf.sum(axis=-2)
    precision, recall = _ratio(diag, pred_k), _ratio(diag, true_k)
    f1 = _ratio(2 * diag, true_k + pred_k)
    if conf.shape[-1] == 2:
        out.update(precision=precision[..., 1], recall=recall[..., 1], f1=f1[..., 1])
    else:
        out.update(
            precision_macro=precision.mean(axis=-1),
            recall_macro=recall.mean(axis=-1),
            f1_macro=f1.mean(axis=-1),
        )
    return out


def _drawn_auc(y: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of ``y`` (draws x rows, 0/1) against fixed average ranks (Mann-Whitney)."""
    n1 = y.sum(axis=1, dtype=float)
    n0 = y.shape[1] - n1
    u = y.astype(float) @ ranks - n1 * (n1 + 1) / 2.0
    return _ratio(u, n1 * n0) + np.where(n1 * n0 > 0, 0.0, np.nan)


def _draws_exact(
    cal: np.ndarray,
    onehot_pred: np.ndarray,
    proba: np.ndarray,
    classes: list[int],
    samples: int,
    rng: np.random.Generator,
    blocks: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Metrics of ``samples`` label draws from the calibrated probabilities, row by row (binary,
    with ``blocks``: each draw first moves every block's calibrated value by a draw of its error)."""
    n, k = cal.shape
    u = rng.random((samples, n))
    if k == 2:
        p1 = cal[None, :, 1]
        if blocks is not None:
            block, se = blocks
            p1 = np.clip(p1 + (rng.standard_normal((samples, len(se))) * se)[:, block], 0.0, 1.0)
        drawn = (u < p1).astype(np.int8)  # draws x rows, 1 = classes[1]
    else:
        cum = np.cumsum(cal, axis=1)
        drawn = (u[:, :, None] > cum[None, :, :-1]).sum(axis=2).astype(np.int8)
    # Confusion matrix of every draw, one true class at a time (draws x rows at most in memory).
    truth = [(drawn == t).astype(float) for t in range(k)]
    conf = np.stack([t @ onehot_pred for t in truth], axis=1)
    draws = _confusion_metrics(conf)
    aucs = np.column_stack([_drawn_auc(truth[c], _average_ranks(_ranked(proba[:, c]))) for c in classes])
    valid = np.isfinite(aucs)
    count = valid.sum(axis=1)
    # Mean over the classes that occur in the draw (NaN, without numpy's warning, when none do).
    draws["roc_auc"] = np.where(
        count > 0, np.where(valid, aucs, 0.0).sum(axis=1) / np.maximum(count, 1), np.nan
    )
    return draws


@lru_cache(maxsize=16)
def _standard_normal(seed: int, samples: int) -> np.ndarray:
    """``default_rng(seed).standard_normal((samples, 3))``, drawn once per (seed, samples) and kept
    read-only: every binary window estimated with one seed uses the same draws."""
    z = np.random.default_rng(seed).standard_normal((samples, 3))
    z.flags.writeable = False
    return z


def _binary_draws(mean: np.ndarray, cov: np.ndarray, n: int, pred_pos: float, z: np.ndarray) -> np.ndarray:
    """Binary: draws of every metric (rows in :data:`BINARY_METRICS` order, a column per row of the
    standard normal draws ``z``) from draws of the three sums they need, ``(n1, tp, r)``, from their
    normal approximation (``mean``, ``cov``).

    Every metric of a binary window is a function of the positives ``n1 = sum(y)``, the true
    positives ``tp = sum(y * predicted)`` and the positives' rank sum ``r = sum(y * rank)`` (ROC AUC
    by Mann-Whitney). With independent ``y_i ~ Bernoulli(p_i)`` they are a sum of independent
    vectors, so their mean and covariance are exact and their distribution is close enough to normal
    for the interval's ends (nominal coverage was measured from 300 rows at 11 % positives up).
    Drawing three numbers per sample instead of one per row makes the interval O(rows), not
    O(rows x samples).
    """
    # Cholesky of the 3x3 covariance (a relative jitter keeps it positive definite when p is 0/1).
    jittered = cov + (1e-9 * np.trace(cov) + 1e-12) * np.eye(3)
    n1, tp, r = (mean + z @ np.linalg.cholesky(jittered).T).T
    n1 = np.minimum(np.maximum(n1, 0.0), float(n))
    tp = np.minimum(np.maximum(tp, np.maximum(0.0, n1 - (n - pred_pos))), np.minimum(n1, pred_pos))
    fp, fn = pred_pos - tp, n1 - tp
    pairs = n1 * (n - n1)
    auc = np.minimum(np.maximum(_ratio(r - n1 * (n1 + 1) / 2.0, pairs), 0.0), 1.0)
    out = np.empty((len(BINARY_METRICS), len(z)))
    # As _confusion_metrics gives for a binary confusion matrix, without building one.
    out[0] = (n - fp - fn) / n
    out[1] = tp / pred_pos if pred_pos > 0 else 0.0
    out[2] = _ratio(tp, n1)
    out[3] = _ratio(2 * tp, 2 * tp + fp + fn)
    out[4] = np.where(pairs > 0, auc, np.nan)
    return out


def _estimate_binary(
    score: np.ndarray,
    positive: np.ndarray,
    calibrator: Calibrator,
    *,
    samples: int,
    seed: int,
) -> tuple[dict[str, float], np.ndarray]:
    """Binary point estimates and the metrics' draws (:func:`_binary_draws`), every step on the rows
    sorted by ``score`` once.

    ``score`` is the model's probability of ``classes[1]``, ``positive`` whether ``classes[1]`` was
    predicted. Sorted, the calibration's look-ups (its interpolation and the block of each row) walk
    the knots in order, tied scores are runs (for the ranks and the expected ROC curve), and no row is
    put back in its place: every quantity is a sum over rows. The calibration's own error
    (:meth:`Calibrator.blocks`) moves every row of a block with that block's error, independent
    between blocks.
    """
    n = len(score)
    order = np.argsort(score)  # ties are runs of the sorted scores, so the sort need not be stable
    s = score[order]
    p = calibrator.apply(s)  # calibrated P(classes[1]) of each row, in score order
    q = 1.0 - p
    w = p * q
    w_sum = float(w.sum())
    tied = s[1:] == s[:-1]
    if tied.any():  # a run of tied scores shares its average rank and counts one half in the AUC
        starts = np.flatnonzero(np.concatenate([[True], ~tied]))
        counts = np.diff(np.append(starts, n))
        ranks = np.repeat(starts + (counts + 1) / 2.0, counts)
        p_run, q_run = np.add.reduceat(np.stack([p, q]), starts, axis=1)
    else:
        ranks, p_run, q_run = np.arange(1.0, n + 1.0), p, q
    predicted = positive[order].astype(float)
    v = np.stack([np.ones(n), predicted, ranks])  # what the sums n1, tp and r add up per row
    mean = v @ p
    n1, tp = float(mean[0]), float(mean[1])
    pred_pos = float(np.count_nonzero(positive))
    fp, fn = pred_pos - tp, n1 - tp
    metrics = {
        "accuracy": (n - fp - fn) / n,
        "precision": tp / pred_pos if pred_pos > 0 else 0.0,
        "recall": tp / n1 if n1 > 0 else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn > 0 else 0.0,
    }
    # Expected ROC AUC (see _weighted_auc): every run of tied scores against the negatives' expected
    # weight ranked below it (the runs before it, half of its own), less the pairs of a row with itself.
    below = np.cumsum(q_run) - 0.5 * q_run
    numerator = float(below @ p_run) - 0.5 * w_sum
    denominator = n1 * (n - n1) - w_sum
    metrics["roc_auc"] = numerator / denominator if denominator > 0 else math.nan

    cov = (v * w) @ v.T
    blocks = calibrator.blocks(s)
    if blocks is not None:  # sorted rows: each block of the calibration is one run of rows
        block, se = blocks
        first = np.flatnonzero(np.concatenate([[True], block[1:] != block[:-1]]))
        per_block = np.add.reduceat(v, first, axis=1)
        cov = cov + (per_block * se[block[first]] ** 2) @ per_block.T
    draws = _binary_draws(mean, cov, n, pred_pos, _standard_normal(seed, samples))
    return metrics, draws


@lru_cache(maxsize=16)
def _percentile_points(
    m: int, percents: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Where ``percents`` fall among ``m`` sorted values (numpy's linear method): the order statistics
    below and above each, the weight of the one above, and every order statistic needed."""
    at = (m - 1) * (np.asarray(percents, dtype=float) / 100)
    below = np.minimum(np.floor(at).astype(np.intp), m - 1)
    above = np.minimum(below + 1, m - 1)
    weight = at - below
    for arr in (below, above, weight):
        arr.flags.writeable = False  # shared by every call with these arguments
    return below, above, weight, sorted({*below.tolist(), *above.tolist()})


def _percentiles(rows: np.ndarray, percents: tuple[float, float]) -> np.ndarray:
    """``np.percentile(rows, percents, axis=1).T`` (linear interpolation) of finite ``rows``, from one
    partition of the few order statistics needed instead of numpy's general machinery."""
    below, above, t, needed = _percentile_points(rows.shape[1], percents)
    part = np.partition(rows, needed, axis=1)
    a, b = part[:, below], part[:, above]
    # numpy's _lerp: from the lower neighbour below t = 0.5, from the upper one from there.
    return np.asarray(np.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t), dtype=float)


def estimate_classification(
    proba: np.ndarray,
    predicted: np.ndarray,
    estimator: QualityEstimator,
    *,
    confidence: float = 0.95,
    samples: int = SAMPLES,
    seed: int = 0,
) -> EstimatedQuality:
    """CBPE: metrics of the expected confusion matrix and ROC curve from calibrated probabilities.

    ``proba`` is the model's probabilities (rows x classes, the estimator's class order), ``predicted``
    the index of each predicted class. The interval comes from ``samples`` draws of the labels.
    """
    n, k = proba.shape
    tail = (1 - confidence) / 2 * 100
    if k == 2 and n > EXACT_DRAWS_MAX_ROWS:
        metrics, stacked = _estimate_binary(
            proba[:, 1], predicted == 1, estimator.calibrators[0], samples=samples, seed=seed
        )
        names = list(BINARY_METRICS)
    else:
        cal = estimator.calibrate(proba)
        onehot_pred = np.eye(k)[predicted]
        expected = _confusion_metrics(cal.T @ onehot_pred)
        metrics = {name: float(v) for name, v in expected.items()}
        classes = [1] if k == 2 else list(range(k))
        aucs = [_weighted_auc(proba[:, c], cal[:, c]) for c in classes]
        metrics["roc_auc"] = float(np.mean(aucs))
        blocks = estimator.calibrators[0].blocks(proba[:, 1]) if k == 2 else None
        rng = np.random.default_rng(seed)
        draws = _draws_exact(cal, onehot_pred, proba, classes, samples, rng, blocks)
        names = list(draws)
        stacked = np.stack([draws[m] for m in names])
    if np.isfinite(stacked).all():  # the usual case: one partition of every metric's draws together
        ends = _percentiles(stacked, (tail, 100 - tail))
    else:
        ends = np.array(
            [
                np.nanpercentile(v, [tail, 100 - tail]) if np.isfinite(v).any() else [np.nan] * 2
                for v in stacked
            ]
        )
    lower, upper = {}, {}
    for name, (lo, hi) in zip(names, ends, strict=True):
        if math.isfinite(lo) and math.isfinite(metrics[name]):
            # The point estimate is a ratio of expectations, not the draws' mean: keep it inside.
            lower[name], upper[name] = float(min(lo, metrics[name])), float(max(hi, metrics[name]))
    metrics = {m: v for m, v in metrics.items() if math.isfinite(v)}
    return EstimatedQuality("ok", "cbpe", metrics, lower, upper, n, confidence)


def estimate_regression(
    predictions: np.ndarray, estimator: QualityEstimator, *, confidence: float = 0.95
) -> EstimatedQuality:
    """MAE and RMSE from the holdout's errors in the bins the window's predictions fall in."""
    from scipy.stats import norm

    bins = estimator.bins
    assert bins is not None
    idx = np.searchsorted(np.asarray(bins.edges), predictions, side="right")
    n = len(predictions)
    mean_abs, var_abs = np.asarray(bins.mean_abs)[idx], np.asarray(bins.var_abs)[idx]
    mean_sq, var_sq = np.asarray(bins.mean_sq)[idx], np.asarray(bins.var_sq)[idx]
    z = float(norm.ppf(0.5 + confidence / 2))
    mae, mae_sd = float(mean_abs.mean()), math.sqrt(float(var_abs.sum())) / n
    mse, mse_sd = float(mean_sq.mean()), math.sqrt(float(var_sq.sum())) / n
    return EstimatedQuality(
        "ok",
        "error_bins",
        {"mae": mae, "rmse": math.sqrt(mse)},
        {"mae": max(mae - z * mae_sd, 0.0), "rmse": math.sqrt(max(mse - z * mse_sd, 0.0))},
        {"mae": mae + z * mae_sd, "rmse": math.sqrt(mse + z * mse_sd)},
        n,
        confidence,
    )


def _numbers(column: pd.Series) -> np.ndarray:
    """A log column as floats, NaN where it is not a number."""
    if column.dtype.kind == "f":
        return np.asarray(column.to_numpy(dtype=float), dtype=float)
    return np.asarray(
        pd.to_numeric(column, errors="coerce").to_numpy(dtype=float, na_value=np.nan), dtype=float
    )


def estimate_quality(
    frame: pd.DataFrame,
    estimator: QualityEstimator | Mapping[str, Any] | None,
    *,
    min_rows: int = 1,
    confidence: float = 0.95,
    samples: int = SAMPLES,
    seed: int = 0,
) -> EstimatedQuality:
    """Estimate the quality of a window of the prediction log (``prediction``, ``proba_<class>``).

    Rows without usable probabilities (or, for a regressor, a numeric prediction) are left out. Never
    raises on the window's content: what cannot be estimated comes back ``not_available`` with a note.
    The one function monitoring and rollouts share: a rollout arm's window works the same way.
    """
    if estimator is None:
        return EstimatedQuality(
            note="the version carries no quality estimator (quality_estimator.json); retrain it with "
            "this mloop to get estimates before labels arrive"
        )
    if not isinstance(estimator, QualityEstimator):
        estimator = QualityEstimator.from_dict(estimator)
    if estimator.status != "ok":
        return EstimatedQuality(note=estimator.reason)
    if frame.empty or "prediction" not in frame.columns:
        return EstimatedQuality(note="the window has no predictions")
    if estimator.task == "regression":
        pred = pd.to_numeric(frame["prediction"], errors="coerce").to_numpy(dtype=float)
        pred = pred[np.isfinite(pred)]
        if pred.size < max(min_rows, 1):
            return EstimatedQuality(note=f"{pred.size} numeric predictions; an estimate needs {min_rows}")
        return estimate_regression(pred, estimator, confidence=confidence)
    columns = [f"proba_{c}" for c in estimator.classes]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        return EstimatedQuality(
            note=f"the prediction log has no {', '.join(missing)} (class probabilities are needed)"
        )
    probas = [_numbers(frame[c]) for c in columns]
    position = {c: i for i, c in enumerate(estimator.classes)}
    values = frame["prediction"].to_numpy()
    if values.dtype.kind in "biu" and values.size and values.min() >= 0 and values.max() < 1024:
        # The usual log of small integer or boolean labels: a table indexed by the label itself.
        table = np.array([position.get(str(v), -1) for v in range(int(values.max()) + 1)], dtype=int)
        predicted = table[values.astype(int)]
    else:
        codes, uniques = pd.factorize(frame["prediction"])  # each distinct label once, not each row
        lookup = np.array([position.get(label_key(v) or "", -1) for v in uniques] + [-1], dtype=int)
        predicted = lookup[codes]  # code -1 (a missing prediction) takes the last entry, -1
    ok = predicted >= 0
    for column in probas:  # column by column: a row-wise all() over a few columns is far slower
        ok &= np.isfinite(column)
    proba = np.column_stack(probas)
    usable = int(np.count_nonzero(ok))
    if usable < max(min_rows, 1):
        return EstimatedQuality(
            note=f"{usable} predictions with class probabilities; an estimate needs at least "
            f"{max(min_rows, 1)} (monitoring.estimate_min_rows)"
        )
    if usable < len(ok):
        proba, predicted = proba[ok], predicted[ok]
    return estimate_classification(
        proba, predicted, estimator, confidence=confidence, samples=samples, seed=seed
    )
