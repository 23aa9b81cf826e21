import sys
from pathlib import Path

import pytest

from mloop.errors import TrainingError
from mloop.training import ESTIMATORS, build_estimator, search_space


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_every_builtin_builds_for_its_tasks(name: str) -> None:
    for task in ESTIMATORS[name].tasks:
        est = build_estimator(name, task, {}, seed=1)
        assert hasattr(est, "fit") and hasattr(est, "predict")
        assert search_space(name), f"{name} needs a default tuning space"


def test_unknown_estimator_suggests() -> None:
    with pytest.raises(TrainingError, match="Did you mean 'lightgbm'"):
        build_estimator("lightgbn", "classification")


def test_wrong_task() -> None:
    with pytest.raises(TrainingError, match="does not do regression"):
        build_estimator("logistic", "regression")


def test_bad_params_are_explained() -> None:
    with pytest.raises(TrainingError, match="rejected its params"):
        build_estimator("random_forest", "classification", {"n_treez": 3})


def test_user_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mymodels.py").write_text(
        "from sklearn.tree import DecisionTreeClassifier\n"
        "def build(task, seed, depth=3):\n"
        "    return DecisionTreeClassifier(max_depth=depth, random_state=seed)\n"
        "def broken():\n    return object()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    est = build_estimator("mymodels:build", "classification", {"depth": 5}, seed=3)
    assert est.max_depth == 5 and est.random_state == 3
    with pytest.raises(TrainingError, match="lacks fit, predict"):
        build_estimator("mymodels:broken", "classification")
    with pytest.raises(TrainingError, match=r"no function 'buld'\. Did you mean 'build'"):
        build_estimator("mymodels:buld", "classification")
    with pytest.raises(TrainingError, match="Cannot import module"):
        build_estimator("nosuchmodule_xyz:build", "classification")
    sys.modules.pop("mymodels", None)


@pytest.mark.parametrize("ref", [":build", "mymodels:", "..pkg:build", "a b:build", "m:f:g", "m:f()"])
def test_malformed_module_function_refs_are_explained(ref: str) -> None:
    with pytest.raises(TrainingError, match="neither a built-in nor 'module:function'"):
        build_estimator(ref, "classification")


def test_a_module_that_fails_on_import_is_a_training_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "brokenmodels.py").write_text("raise RuntimeError('no GPU here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TrainingError, match="raised RuntimeError: no GPU here"):
        build_estimator("brokenmodels:build", "classification")
    sys.modules.pop("brokenmodels", None)


def test_space_overrides() -> None:
    space = search_space(
        "random_forest",
        {
            "n_estimators": [10, 20],
            "criterion": ["gini", "entropy"],
            "max_features": {"low": 0.1, "high": 1.0, "log": True},
        },
    )
    assert space["n_estimators"] == ("int", 10, 20)
    assert space["criterion"] == ("choice", ["gini", "entropy"])
    assert space["max_features"] == ("float", 0.1, 1.0, "log")
    with pytest.raises(TrainingError, match="no default search space"):
        search_space("mod:func")
