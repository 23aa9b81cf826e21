"""Hyperparameter tuning with Optuna: TPE sampler, median pruning across CV folds, one nested MLflow
run per trial. The study lives in an RDB storage (SQLite by default, a Postgres URL for several
workers sharing one study), so a second process started on the same study adds trials to it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mloop.errors import TrainingError
from mloop.training.estimators import SpaceEntry
from mloop.training.metrics import LOWER_IS_BETTER, score_model

__all__ = ["TuningResult", "open_study", "suggest", "tune"]


@dataclass(frozen=True)
class TuningResult:
    best_params: dict[str, Any]
    best_value: float
    metric: str
    n_trials: int
    n_pruned: int
    study_name: str


def suggest(trial: Any, space: dict[str, SpaceEntry]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, entry in space.items():
        kind = entry[0]
        if kind == "int":
            params[name] = trial.suggest_int(name, int(entry[1]), int(entry[2]), log="log" in entry[3:])
        elif kind == "float":
            params[name] = trial.suggest_float(name, float(entry[1]), float(entry[2]), log="log" in entry[3:])
        elif kind == "choice":
            params[name] = trial.suggest_categorical(name, list(entry[1]))
        else:
            raise TrainingError(f"Unknown search-space kind {kind!r} for {name!r}.")
    return params


def open_study(storage: str, name: str, metric: str, seed: int) -> Any:
    """Create or join a study (``load_if_exists``): this is how several workers share one."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    optuna.logging.set_verbosity(logging.WARNING)
    if storage.startswith("postgresql://"):
        storage = "postgresql+psycopg://" + storage[len("postgresql://") :]
    last: Exception | None = None
    # Workers started together race to create Optuna's tables and the study row; the loser gets an
    # integrity error, and on retry finds what the winner created.
    for attempt in range(5):
        try:
            return optuna.create_study(
                study_name=name,
                storage=storage,
                load_if_exists=True,
                direction="minimize" if metric in LOWER_IS_BETTER else "maximize",
                sampler=optuna.samplers.TPESampler(seed=seed),
                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
            )
        except SQLAlchemyError as exc:
            last = exc
            time.sleep(0.2 * (attempt + 1))
        except (ValueError, ImportError) as exc:
            last = exc
            break
    raise TrainingError(
        f"Cannot open Optuna study {name!r} at {storage!r}: {last}. Check `tuning.storage`."
    ) from last


def tune(
    *,
    make_model: Callable[[dict[str, Any]], Any],
    space: dict[str, SpaceEntry],
    x: pd.DataFrame,
    y: pd.Series,
    task: str,
    metric: str,
    n_trials: int,
    storage: str,
    study_name: str,
    folds: int,
    seed: int,
    timeout_s: float | None = None,
    on_trial: Callable[[int, float | None, str], None] | None = None,
) -> TuningResult:
    """Run ``n_trials`` trials (more may exist in a shared study); return the study's best."""
    import mlflow
    import optuna
    from sklearn.model_selection import KFold, StratifiedKFold

    study = open_study(storage, study_name, metric, seed)
    splitter = (
        StratifiedKFold(folds, shuffle=True, random_state=seed)
        if task == "classification"
        else KFold(folds, shuffle=True, random_state=seed)
    )
    splits = list(splitter.split(x, y))

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, space)
        parent = mlflow.active_run()
        # Nested runs go to the parent's experiment, not MLflow's default one.
        experiment = parent.info.experiment_id if parent is not None else None
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True, experiment_id=experiment):
            mlflow.log_params({**params, "trial": trial.number, "study": study_name})
            scores: list[float] = []
            for step, (tr, va) in enumerate(splits):
                model = make_model(params)
                model.fit(x.iloc[tr], y.iloc[tr])
                xv, yv = x.iloc[va], y.iloc[va]
                result = score_model(model, task, xv, yv).metrics
                if metric not in result:
                    raise TrainingError(
                        f"Tuning metric {metric!r} is not available; metrics: {sorted(result)}."
                    )
                scores.append(result[metric])
                trial.report(float(np.mean(scores)), step)
                if trial.should_prune():
                    mlflow.set_tag("mloop.trial_state", "pruned")
                    mlflow.log_metrics({f"cv_{metric}": float(np.mean(scores)), "folds_done": step + 1})
                    raise optuna.TrialPruned()
            value = float(np.mean(scores))
            mlflow.log_metrics({f"cv_{metric}": value, f"cv_{metric}_std": float(np.std(scores))})
            mlflow.set_tag("mloop.trial_state", "complete")
            return value

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if on_trial is not None:
            on_trial(trial.number, trial.value, trial.state.name.lower())

    study.optimize(objective, n_trials=n_trials, timeout=timeout_s, callbacks=[callback], catch=())
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise TrainingError(
            f"No tuning trial of study {study_name!r} completed; raise `--tune` or widen the space."
        )
    pruned = sum(1 for t in study.trials if t.state == optuna.trial.TrialState.PRUNED)
    return TuningResult(
        best_params=dict(study.best_params),
        best_value=float(study.best_value),
        metric=metric,
        n_trials=len(study.trials),
        n_pruned=pruned,
        study_name=study_name,
    )
