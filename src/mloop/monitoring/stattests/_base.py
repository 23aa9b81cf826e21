"""The registry of per-column drift tests and the types every test shares.

A test is a function ``(reference: ColumnProfile, window: Window) -> Outcome`` registered with
:func:`register_stattest` under a name, with its default threshold and, for distance tests, a
simulator of its statistic on windows without drift (used to calibrate thresholds for the window
size, see :mod:`mloop.monitoring.calibration`)::

    @register_stattest("ks", title="Kolmogorov-Smirnov", kind="p_value", threshold=0.05,
                       column_kinds=("numeric",))
    def ks(reference: ColumnProfile, window: Window) -> Outcome:
        ...

``p_value`` tests flag drift when the p-value is below the threshold; ``distance`` tests when the
statistic is at or above it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mloop.errors import MonitoringError, did_you_mean
from mloop.monitoring.profile import ColumnProfile

__all__ = [
    "NullSampler",
    "Outcome",
    "StatTest",
    "TestFunc",
    "Window",
    "get_stattest",
    "register_stattest",
    "stattest_names",
]


@dataclass
class Window:
    """One column of the current window, prepared once and shared by every test.

    ``values`` holds the non-missing numbers of a numeric column; ``counts`` maps each label of a
    categorical column to its number of rows. ``n`` is the number of non-missing values.
    """

    numeric: bool
    n: int
    values: np.ndarray | None = None
    counts: dict[str, int] | None = None


@dataclass
class Outcome:
    """What a test measured: its statistic, a p-value when it has one, and how it was computed."""

    statistic: float
    p_value: float | None = None
    method: str = "asymptotic"


TestFunc = Callable[[ColumnProfile, Window], Outcome]
NullSampler = Callable[[ColumnProfile, int, int, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class StatTest:
    """A registered test: its function, default threshold and the column kinds it accepts."""

    name: str
    title: str
    kind: Literal["p_value", "distance"]
    threshold: float
    column_kinds: frozenset[str]
    min_rows: int
    func: TestFunc
    null: NullSampler | None = None

    def drifted(self, statistic: float, p_value: float | None, threshold: float) -> bool:
        if self.kind == "p_value":
            return p_value is not None and p_value < threshold
        return statistic >= threshold


_REGISTRY: dict[str, StatTest] = {}


def register_stattest(
    name: str,
    *,
    title: str,
    kind: Literal["p_value", "distance"],
    threshold: float,
    column_kinds: tuple[str, ...] = ("numeric", "categorical"),
    min_rows: int = 1,
    null: NullSampler | None = None,
) -> Callable[[TestFunc], TestFunc]:
    """Register a drift test under ``name`` (see the module docstring for the contract)."""
    if kind not in ("p_value", "distance"):
        raise MonitoringError(f"Test {name!r}: kind must be 'p_value' or 'distance'; got {kind!r}.")

    def decorate(func: TestFunc) -> TestFunc:
        if name in _REGISTRY and _REGISTRY[name].func is not func:
            raise MonitoringError(f"A drift test named {name!r} is already registered; pick another name.")
        _REGISTRY[name] = StatTest(
            name=name,
            title=title,
            kind=kind,
            threshold=threshold,
            column_kinds=frozenset(column_kinds),
            min_rows=min_rows,
            func=func,
            null=null,
        )
        return func

    return decorate


def get_stattest(name: str) -> StatTest:
    """The registered test called ``name``; unknown names fail with the list of known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise MonitoringError(
            f"Unknown drift test {name!r}{did_you_mean(name, _REGISTRY)}; known tests: "
            f"{', '.join(sorted(_REGISTRY))} (or 'auto')."
        ) from None


def stattest_names() -> list[str]:
    return sorted(_REGISTRY)
