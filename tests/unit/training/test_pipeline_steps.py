"""The training pipeline as named steps over one run object: order, the champion loaded once, resume hints."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import mlflow
import pandas as pd
import pytest

from mloop.config import Settings, load_settings
from mloop.errors import TrainingError
from mloop.project import init_project
from mloop.tracking import LoadedModel, VersionInfo
from mloop.training import train
from mloop.training.pipeline import STEPS, resume_hint
from mloop.training.run import TrainRun


def _settings(tmp: Path) -> Settings:
    init_project(tmp / "p", template="fraud", rows=800)
    fast = {"model": {"estimator": "random_forest", "params": {"n_estimators": 10}}, "tuning": {"trials": 0}}
    return load_settings(tmp / "p" / "mloop.yaml", overrides=fast)


def _info(version: int) -> VersionInfo:
    return VersionInfo(
        name="fraud-detector",
        version=version,
        run_id=None,
        aliases=("champion",),
        tags={},
        metrics={},
        created_at=0,
        status="READY",
        source="",
    )


class _Registry:
    """Serves one champion version and counts how often it is loaded."""

    def __init__(self, champion: LoadedModel | None) -> None:
        self.champion = champion
        self.loads: list[int | str] = []

    def by_alias(self, alias: str) -> VersionInfo | None:
        return self.champion.info if self.champion is not None and alias == "champion" else None

    def load(self, ref: int | str) -> LoadedModel:
        self.loads.append(ref)
        assert self.champion is not None
        return self.champion


def _run(settings: Settings, registry: _Registry, said: list[str]) -> TrainRun:
    # The steps up to "evaluate" use no store; the registry double stands in for MLflow's.
    return TrainRun(
        settings, store=cast(Any, None), registry=cast(Any, registry), run_id="r1", say=said.append
    )


def _run_until(run: TrainRun, last: str) -> None:
    for name, step in STEPS:
        step(run)
        run.done.append(name)
        if name == last:
            return


def test_steps_are_named_in_pipeline_order_with_a_docstring_each() -> None:
    names = [name for name, _ in STEPS]
    assert names == [
        "load",
        "champion",
        "validate",
        "split",
        "tune",
        "fit",
        "evaluate",
        "calibrate",
        "log",
        "register",
        "decide",
    ]
    assert all(step.__doc__ and len(step.__doc__.strip().splitlines()) == 1 for _, step in STEPS)


def test_the_champion_is_loaded_once_for_its_contract_and_its_scores(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    said: list[str] = []
    # A first run (no champion) makes the model that then serves as the champion of a second run.
    first = _run(settings, _Registry(None), said)
    _run_until(first, "evaluate")
    assert first.champion is None and first.champion_metrics is None
    champion = LoadedModel(
        info=_info(3),
        model=first.model,
        contract=first.contract.to_dict(),
        profile=None,
        evaluation=None,
        path=tmp_path,
    )
    registry = _Registry(champion)
    second = _run(settings, registry, said)
    _run_until(second, "evaluate")
    assert registry.loads == [3]
    # Same data, same seed, same model: the champion scores exactly what the new model scores.
    assert second.champion_metrics == second.scored.metrics
    beats = [c for c in second.gate.checks if c.name == "beats_champion"]
    assert len(beats) == 1 and "champion v3" in beats[0].detail
    assert "scoring champion v3 on the same holdout" in said
    assert second.rows() == {"train": 640, "holdout": 160, "dropped": 0}


def test_resume_hints_say_what_was_kept_and_what_to_run(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    run = _run(settings, _Registry(None), [])
    run.done = ["load", "champion", "validate", "split", "tune"]
    run.tuning = {"study": "fraud-detector-tuning", "trials": 12}
    hint = resume_hint(run, "fit")
    assert "Training stopped at step 'fit' (done: load, champion, validate, split, tune)" in hint
    assert "Nothing was registered and no alias moved" in hint and "mloop train" in hint
    assert "'fraud-detector-tuning' keeps its 12 trials" in hint
    run.version = 4
    assert "`mloop models promote 4`" in resume_hint(run, "decide")
    assert "MLflow run r1" in resume_hint(run, "register")


def test_a_failing_step_marks_the_run_failed_and_says_how_to_resume(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    data = pd.DataFrame({"amount": [1.0, 2.0], "hour": [1, 2]})  # no is_fraud column
    with pytest.raises(TrainingError) as caught:
        train(settings, data=data, tune_trials=0)
    message = caught.value.message
    assert "Target column 'is_fraud'" in message
    assert "Training stopped at step 'load' (done: none)" in message and "run `mloop train` again" in message
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "step 'load'" in runs[0].data.tags["mloop.error"]
