"""A seeded generator of card transactions with a fraud label, and drift scenarios to test the loop.

The data is built in fixed blocks of :data:`BLOCK_ROWS` rows, each from its own random stream
(``SeedSequence([seed, scenario, block])``), so a dataset depends only on ``(rows, seed, scenario,
start, fraud_rate)``: ``generate_fraud`` and any chunking by ``iter_fraud`` give the same rows, and ten
million rows can be streamed in bounded memory. Customers (home country, age, usual spend, activity)
are drawn once per seed and shared by every block, so their history stays consistent.

The label comes from a noisy logistic rule over the features, so a good model reaches a ROC AUC near
0.9 but never 1.0. Scenarios change one thing each:

- ``covariate_shift``: amounts are higher and more transactions happen at night; the rule is unchanged.
- ``new_category``: about 20% of transactions are in ``crypto``, a category absent from ``none``.
- ``concept_drift``: features are drawn as in ``none`` but fraud follows another rule (other categories,
  domestic card testing with small amounts), so a model trained on ``none`` loses quality.
- ``missing_surge``: 20-40% of values are missing in several feature columns.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mloop.errors import DataError, did_you_mean

__all__ = ["BLOCK_ROWS", "CATEGORIES", "COLUMNS", "SCENARIOS", "generate_fraud", "iter_fraud"]

SCENARIOS = ("none", "covariate_shift", "new_category", "concept_drift", "missing_surge")
CATEGORIES = ("grocery", "electronics", "travel", "gaming", "fuel", "restaurants", "fashion", "health")
NEW_CATEGORY = "crypto"
COLUMNS = (
    "transaction_id",
    "timestamp",
    "customer_id",
    "amount",
    "merchant_category",
    "country",
    "hour",
    "device",
    "customer_age",
    "txn_count_24h",
    "avg_amount_30d",
    "account_age_days",
    "is_fraud",
)
BLOCK_ROWS = 16_384
ROWS_PER_DAY = 1_000
N_CUSTOMERS = 4_000
DEFAULT_START = datetime(2024, 1, 1)
MISSING_COLUMNS = ("customer_age", "txn_count_24h", "avg_amount_30d", "account_age_days", "device", "country")

_CATEGORY_SHARE = np.array([0.24, 0.08, 0.06, 0.07, 0.15, 0.18, 0.12, 0.10])
_ALL_CATEGORIES = np.array([*CATEGORIES, NEW_CATEGORY], dtype=object)
_SPEND = np.array([1.0, 3.0, 4.0, 0.8, 1.2, 0.9, 1.8, 1.1, 3.5])
_COUNTRIES = np.array(["US", "GB", "DE", "FR", "ES", "NL", "BR", "IN"])
_COUNTRY_SHARE = np.array([0.35, 0.15, 0.12, 0.1, 0.08, 0.06, 0.08, 0.06])
_DEVICES = np.array(["mobile", "desktop", "tablet"])
# Transactions per hour of day: quiet nights, busy evenings.
_HOUR_SHARE = np.array(
    [1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 3.5, 4, 4, 4.5, 4, 4, 4, 4.5, 5, 5.5, 5, 4, 3, 2, 1.5]
)
# Rule coefficients: category risk, and weights on (log amount ratio, night, foreign, burst, new account).
_RULES: dict[str, dict[str, Any]] = {
    "baseline": {
        "risk": {
            "grocery": -0.9,
            "electronics": 1.6,
            "travel": 1.2,
            "gaming": 1.3,
            "fuel": -0.6,
            "restaurants": -0.6,
            "fashion": 0.4,
            "health": -0.7,
            NEW_CATEGORY: 2.2,
        },
        "weights": (1.5, 1.6, 1.4, 0.4, 1.4),
        "country": {},
    },
    # Fraud moves: card testing with small domestic amounts in everyday categories, in BR and IN.
    "drifted": {
        "risk": {
            "grocery": 1.1,
            "electronics": -0.8,
            "travel": -0.8,
            "gaming": -0.6,
            "fuel": 1.0,
            "restaurants": 0.2,
            "fashion": -0.4,
            "health": 0.9,
            NEW_CATEGORY: -0.5,
        },
        "weights": (-1.0, -0.6, -1.2, 0.25, -0.4),
        "country": {"BR": 1.4, "IN": 1.2, "US": -0.5},
    },
}
_NOISE_SD = 0.4


@functools.lru_cache(maxsize=8)
def _customers(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7919]))
    n = N_CUSTOMERS
    activity = rng.gamma(1.5, 1.0, n)
    return {
        "id": np.array([f"C{i:05d}" for i in range(n)], dtype=object),
        "p": activity / activity.sum(),
        "home": rng.choice(len(_COUNTRIES), n, p=_COUNTRY_SHARE),
        "age": np.clip(np.round(18 + rng.gamma(3.0, 7.0, n)), 18, 90).astype(np.int64),
        "account_age": np.clip(np.round(rng.exponential(700.0, n)), 1, 7300).astype(np.int64),
        "spend": np.exp(rng.normal(3.4, 0.6, n)),
        "rate": 0.5 + activity / activity.mean(),
        "device": rng.choice(3, n, p=[0.6, 0.3, 0.1]),
    }


def _scenario_index(scenario: str) -> int:
    if scenario not in SCENARIOS:
        raise DataError(
            f"Unknown synthetic scenario {scenario!r}; expected one of {', '.join(SCENARIOS)}."
            + did_you_mean(scenario, SCENARIOS)
        )
    return SCENARIOS.index(scenario)


def _features(
    rng: np.random.Generator, first_row: int, n: int, seed: int, scenario: str
) -> dict[str, np.ndarray]:
    cust = _customers(seed)
    c = rng.choice(N_CUSTOMERS, n, p=cust["p"])
    hour_share = np.roll(_HOUR_SHARE, -6) if scenario == "covariate_shift" else _HOUR_SHARE
    # Time of day by inverting the hour distribution's CDF at evenly spread points: the rows of a day
    # stay in time order (timestamps increase across blocks) while hours follow ``hour_share``.
    rows = first_row + np.arange(n)
    day, k = np.divmod(rows, ROWS_PER_DAY)
    u = (k + rng.random(n)) / ROWS_PER_DAY
    knots = np.concatenate([[0.0], np.cumsum(hour_share) / hour_share.sum()])
    tod_h = np.interp(u, knots, np.arange(25.0))
    home = cust["home"][c]
    foreign = rng.random(n) < 0.07
    country = np.where(foreign, (home + rng.integers(1, len(_COUNTRIES), n)) % len(_COUNTRIES), home)
    device = np.where(rng.random(n) < 0.8, cust["device"][c], rng.integers(0, 3, n))
    cat = rng.choice(len(CATEGORIES), n, p=_CATEGORY_SHARE)
    if scenario == "new_category":
        cat = np.where(rng.random(n) < 0.2, len(CATEGORIES), cat)
    amount = cust["spend"][c] * _SPEND[cat] * np.exp(rng.normal(0.0, 0.7, n))
    if scenario == "covariate_shift":
        amount = amount * 2.2
    avg30 = cust["spend"][c] * 1.5 * np.exp(rng.normal(0.0, 0.15, n))
    return {
        "row": rows,
        "day": day,
        "tod_h": tod_h,
        "customer": c,
        "amount": np.maximum(np.round(amount, 2), 0.5),
        "cat": cat,
        "category": _ALL_CATEGORIES[cat],
        "country_idx": country,
        "country": _COUNTRIES[country],
        "foreign": foreign,
        "hour": np.minimum(tod_h.astype(np.int64), 23),
        "device": _DEVICES[device],
        "customer_age": cust["age"][c],
        "txn_count_24h": rng.poisson(cust["rate"][c]).astype(np.int64),
        "avg_amount_30d": np.round(avg30, 2),
        "account_age_days": cust["account_age"][c] + day,
    }


def _linear(f: dict[str, np.ndarray], rule: str, noise: np.ndarray) -> np.ndarray:
    spec = _RULES[rule]
    risk: dict[str, float] = spec["risk"]
    country_risk: dict[str, float] = spec["country"]
    weights: tuple[float, float, float, float, float] = spec["weights"]
    w_amount, w_night, w_foreign, w_burst, w_new = weights
    cat = np.array([risk[name] for name in _ALL_CATEGORIES])[f["cat"]]
    ctry = np.array([country_risk.get(name, 0.0) for name in _COUNTRIES])[f["country_idx"]]
    linear: np.ndarray = (
        w_amount * np.log(f["amount"] / f["avg_amount_30d"])
        + w_night * (f["hour"] < 6)
        + w_foreign * f["foreign"]
        + w_burst * np.clip(f["txn_count_24h"] - 2, 0, 8)
        + w_new * (f["account_age_days"] < 90)
        + cat
        + ctry
        + noise
    )
    return linear


@functools.lru_cache(maxsize=32)
def _intercept(rule: str, fraud_rate: float) -> float:
    """The intercept giving ``fraud_rate`` on ``none``-distributed features, found once by bisection."""
    rng = np.random.default_rng(20240101)
    f = _features(rng, 0, 4 * BLOCK_ROWS, 0, "none")
    z = _linear(f, rule, rng.normal(0.0, _NOISE_SD, len(f["amount"])))
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.mean(1.0 / (1.0 + np.exp(-(z + mid)))) > fraud_rate:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


def _ids(seed: int, rows: np.ndarray) -> pd.Series:
    """``T<seed>-<row, 10 digits>`` built in Arrow (a Python loop is most of the generator's time)."""
    digits = pc.utf8_lpad(pc.cast(pa.array(rows), pa.string()), 10, "0")
    joined = pc.binary_join_element_wise(f"T{seed}-", digits, "")
    return pd.Series(pd.array(joined, dtype=pd.StringDtype(na_value=np.nan)))


def _block(index: int, seed: int, scenario: str, start: pd.Timestamp, fraud_rate: float) -> pd.DataFrame:
    rng = np.random.default_rng(np.random.SeedSequence([seed, _scenario_index(scenario), index]))
    first = index * BLOCK_ROWS
    f = _features(rng, first, BLOCK_ROWS, seed, scenario)
    rule = "drifted" if scenario == "concept_drift" else "baseline"
    z = _linear(f, rule, rng.normal(0.0, _NOISE_SD, BLOCK_ROWS)) + _intercept(rule, fraud_rate)
    is_fraud = (rng.random(BLOCK_ROWS) < 1.0 / (1.0 + np.exp(-z))).astype(np.int64)
    seconds = f["day"] * 86_400.0 + f["tod_h"] * 3_600.0
    frame = pd.DataFrame(
        {
            "transaction_id": _ids(seed, f["row"]),
            "timestamp": start + pd.to_timedelta(np.round(seconds * 1e6).astype(np.int64), unit="us"),
            "customer_id": _customers(seed)["id"][f["customer"]],
            "amount": f["amount"],
            "merchant_category": f["category"],
            "country": f["country"],
            "hour": f["hour"],
            "device": f["device"],
            "customer_age": f["customer_age"],
            "txn_count_24h": f["txn_count_24h"],
            "avg_amount_30d": f["avg_amount_30d"],
            "account_age_days": f["account_age_days"],
            "is_fraud": is_fraud,
        }
    )
    if scenario == "missing_surge":
        rates = np.random.default_rng(np.random.SeedSequence([seed, 104729])).uniform(
            0.2, 0.4, len(MISSING_COLUMNS)
        )
        for col, rate in zip(MISSING_COLUMNS, rates, strict=True):
            mask = rng.random(BLOCK_ROWS) < rate
            if frame[col].dtype.kind in "iu":
                frame[col] = frame[col].astype("Int64")
            frame.loc[mask, col] = pd.NA if frame[col].dtype == "Int64" else np.nan
    return frame


def iter_fraud(
    rows: int,
    chunk_rows: int = 100_000,
    seed: int = 0,
    scenario: str = "none",
    *,
    start: datetime | str | None = None,
    fraud_rate: float = 0.03,
) -> Iterator[pd.DataFrame]:
    """Yield ``rows`` transactions in frames of ``chunk_rows`` (the last may be shorter).

    The concatenation equals ``generate_fraud(rows, seed=seed, scenario=scenario, ...)`` whatever
    ``chunk_rows`` is, so large datasets can be written chunk by chunk.
    """
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
        raise DataError(f"Synthetic 'rows' must be an integer >= 0; got {rows!r}.")
    if not isinstance(chunk_rows, int) or isinstance(chunk_rows, bool) or chunk_rows <= 0:
        raise DataError(f"Synthetic 'chunk_rows' must be an integer > 0; got {chunk_rows!r}.")
    if not 0.0 < float(fraud_rate) < 1.0:
        raise DataError(f"Synthetic 'fraud_rate' must be between 0 and 1 (exclusive); got {fraud_rate!r}.")
    _scenario_index(scenario)
    try:
        origin = pd.Timestamp(start if start is not None else DEFAULT_START)
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"Synthetic 'start' must be a date or datetime such as '2024-01-01'; got {start!r}."
        ) from exc
    pending: list[pd.DataFrame] = []
    have = 0
    produced = 0
    block = 0
    while produced < rows:
        take = min(BLOCK_ROWS, rows - produced - have)
        if take > 0:
            part = _block(block, seed, scenario, origin, float(fraud_rate)).iloc[:take]
            block += 1
            pending.append(part)
            have += len(part)
        while have >= chunk_rows or (have and produced + have == rows):
            joined = pd.concat(pending, ignore_index=True) if len(pending) > 1 else pending[0]
            size = min(chunk_rows, have)
            out = joined.iloc[:size].reset_index(drop=True)
            rest = joined.iloc[size:]
            pending = [rest] if len(rest) else []
            have -= size
            produced += size
            yield out


def generate_fraud(
    rows: int,
    *,
    seed: int = 0,
    scenario: str = "none",
    start: datetime | str | None = None,
    fraud_rate: float = 0.03,
) -> pd.DataFrame:
    """``rows`` synthetic card transactions with an ``is_fraud`` label (see the module docstring).

    >>> df = generate_fraud(1000, seed=1)
    >>> list(df.columns) == list(COLUMNS)
    True
    """
    chunks = list(iter_fraud(rows, max(rows, 1), seed, scenario, start=start, fraud_rate=fraud_rate))
    if chunks:
        return chunks[0]
    return (
        _block(0, seed, scenario, pd.Timestamp(start or DEFAULT_START), float(fraud_rate))
        .iloc[:0]
        .reset_index(drop=True)
    )
