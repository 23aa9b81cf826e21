"""Optuna tuning: nested MLflow runs per trial, and two worker processes sharing one study on Postgres."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import mlflow
import optuna
import pytest

from mloop.data import generate_fraud
from mloop.training import build_estimator, open_study, tune
from mloop.training.preprocess import build_pipeline

NUMERIC = ["amount", "hour", "customer_age", "txn_count_24h"]
CATEGORICAL = ["merchant_category", "device"]


def _data(seed: int = 0):
    df = generate_fraud(1500, seed=seed, fraud_rate=0.1)
    return df[NUMERIC + CATEGORICAL], df["is_fraud"]


def _run_worker(storage: str, study: str, trials: int, tracking: str, seed: int) -> None:
    mlflow.set_tracking_uri(tracking)
    x, y = _data()
    with mlflow.start_run(run_name=f"worker-{seed}"):
        tune(
            make_model=lambda p: build_pipeline(
                NUMERIC,
                CATEGORICAL,
                build_estimator("random_forest", "classification", {"n_estimators": 5, **p}, 0),
            ),
            space={"max_depth": ("int", 2, 8), "min_samples_leaf": ("int", 1, 20)},
            x=x,
            y=y,
            task="classification",
            metric="roc_auc",
            n_trials=trials,
            storage=storage,
            study_name=study,
            folds=2,
            seed=seed,
        )


def test_each_trial_is_a_nested_mlflow_run(tmp_path: Path) -> None:
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    _run_worker(storage, "nested", 3, tracking, seed=1)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    parents = [r for r in runs if r.info.run_name == "worker-1"]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(trials) == 3
    assert all("max_depth" in r.data.params for r in trials)
    assert all(any(k.startswith("cv_roc_auc") for k in r.data.metrics) for r in trials)


def test_two_workers_share_one_study_on_postgres(postgres_schema_url: str, tmp_path: Path) -> None:
    study = "shared-study"
    ctx = mp.get_context("spawn")
    workers = [
        ctx.Process(
            target=_run_worker, args=(postgres_schema_url, study, 4, f"sqlite:///{tmp_path / f'm{i}.db'}", i)
        )
        for i in range(2)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=300)
        assert w.exitcode == 0
    loaded = open_study(postgres_schema_url, study, "roc_auc", seed=0)
    finished = [
        t
        for t in loaded.trials
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    assert len(finished) == 8  # both workers' trials landed in the one study
    assert sorted(t.number for t in loaded.trials) == list(range(8))
    assert loaded.best_value > 0.5


def test_bad_storage_is_explained(tmp_path: Path) -> None:
    from mloop.errors import TrainingError

    with pytest.raises(TrainingError, match=r"tuning\.storage"):
        open_study("notadb://x", "s", "roc_auc", seed=0)


def test_train_with_tuning_refits_best_and_logs_it(tmp_path: Path) -> None:
    from mloop.config import load_settings
    from mloop.project import init_project
    from mloop.training import train

    init_project(tmp_path / "p", template="fraud", rows=1500)
    settings = load_settings(tmp_path / "p" / "mloop.yaml", overrides={"tuning": {"cv_folds": 2}})
    result = train(settings, tune_trials=2)
    assert result.tuning is not None and result.tuning["trials"] == 2
    run = mlflow.get_run(result.run_id)
    for key, value in result.tuning["best_params"].items():
        assert run.data.params[f"model.{key}"] == str(value)
    children = mlflow.search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'",
        output_format="list",
    )
    assert len(children) == 2
