"""What a training run logs to MLflow: the evaluation report, params, metrics, tags and the model.

The model directory carries four files beside the model — the data contract, the reference profile,
the evaluation report and the quality estimator (``quality_estimator.json``: calibrated probabilities
or a regressor's error bins, numbers only) — so a version is self-describing wherever it is loaded.
Called by the ``log`` step of :mod:`mloop.training.pipeline` inside the active MLflow run.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from mloop.training.run import TrainRun

__all__ = ["evaluation_report", "log_model", "log_run", "log_run_files", "run_tags"]


def git_commit(root: Path) -> str | None:
    """The commit checked out at ``root``, or None outside a git work tree."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def pip_requirements(model: Any) -> list[str]:
    """Pinned requirements of the saved model, from what is installed.

    Given explicitly because MLflow's inference of them re-loads the model in a subprocess, which
    costs seconds per training run and adds nothing: we know what the pipeline is built from.
    """
    from importlib.metadata import PackageNotFoundError, version

    wanted = ["mlflow", "scikit-learn", "skops", "numpy", "pandas", "scipy"]
    modules = {type(step).__module__.split(".")[0] for step in getattr(model, "named_steps", {}).values()}
    wanted += [pkg for mod, pkg in (("xgboost", "xgboost"), ("lightgbm", "lightgbm")) if mod in modules]
    steps = getattr(model, "named_steps", {}).values()
    if any(getattr(type(s), "_mloop_torch_step", False) for s in steps):
        wanted.append("torch")  # a PyTorch step (mloop.training.torch_net) predicts with torch alone
    pins = []
    for pkg in wanted:
        try:
            # The public version: "2.13.0+cpu" names a wheel index, not a release on PyPI.
            pins.append(f"{pkg}=={version(pkg).split('+')[0]}")
        except PackageNotFoundError:
            if pkg == "xgboost":
                pins.append(f"xgboost=={version('xgboost-cpu')}")
    return pins


def evaluation_report(run: TrainRun, importance: Any) -> dict[str, Any]:
    """The evaluation report saved with the version (``evaluation.json``)."""
    from mloop.monitoring.profile import build_profile

    ms, scored, holdout = run.settings.model, run.scored, run.holdout
    pred_frame = pd.DataFrame({"prediction": scored.predictions})
    if scored.proba is not None and scored.classes is not None and len(scored.classes) == 2:
        pred_frame["score"] = scored.proba[:, 1]
    prediction_profile = build_profile(
        pred_frame, categorical=["prediction"] if ms.task == "classification" else [], seed=ms.seed
    )
    champion = run.champion
    return {
        "task": ms.task,
        "metric": holdout.metric,
        "metrics": scored.metrics,
        "champion": {"version": champion.info.version, "metrics": run.champion_metrics} if champion else None,
        "gate": run.gate.to_dict(),
        "rows": run.rows(),
        "features": {
            "numeric": holdout.numeric,
            "categorical": holdout.categorical,
            "unused": holdout.unused,
        },
        "classes": scored.classes,
        "feature_importance": importance,
        "violations": run.checked.report.to_dict(),
        "tuning": run.tuning,
        "prediction_profile": prediction_profile.to_dict(),
    }


def log_run_files(run: TrainRun, out: Path) -> list[Path]:
    """Plots, then the contract, reference profile, evaluation report and quality estimator (files)."""
    import mlflow

    from mloop.monitoring.estimation import ESTIMATOR_FILE
    from mloop.monitoring.profile import build_profile
    from mloop.tracking.registry import CONTRACT_FILE, EVALUATION_FILE, PROFILE_FILE
    from mloop.training.onnx_export import onnx_files
    from mloop.training.plots import evaluation_plots

    ms, scored, holdout = run.settings.model, run.scored, run.holdout
    with run.timer.step("plots"):
        plots, importance = evaluation_plots(
            out / "plots",
            task=ms.task,
            model=run.model,
            x=holdout.x_test,
            y=holdout.y_test,
            y_pred=scored.predictions,
            proba=scored.proba,
            classes=scored.classes,
            seed=ms.seed,
        )
    for p in plots:
        mlflow.log_artifact(str(p), artifact_path="plots")
    with run.timer.step("profile"):
        profile = build_profile(run.clean[holdout.features], categorical=holdout.categorical, seed=ms.seed)
    files = {
        CONTRACT_FILE: run.contract.to_json(),
        PROFILE_FILE: json.dumps(profile.to_dict()),
        EVALUATION_FILE: json.dumps(evaluation_report(run, importance), default=str, indent=1),
        ESTIMATOR_FILE: json.dumps(run.quality_estimator.to_dict()),
    }
    for fname, text in files.items():
        (out / fname).write_text(text, encoding="utf-8")
        mlflow.log_artifact(str(out / fname), artifact_path="mloop")
    with run.timer.step("onnx"):  # the verified ONNX copy and its report (never fails training)
        onnx = onnx_files(run, out)
    return [out / fname for fname in files] + onnx


def run_tags(run: TrainRun) -> dict[str, str]:
    """Tags of the run and of the version: lineage (data, contract, commit, parent) and the decision."""
    from mloop.data import data_hash

    tags = {
        "mloop.data_source": run.source,
        "mloop.data_hash": data_hash(run.clean),
        "mloop.contract_hash": run.contract.hash(),
        # Versions registered before this tag said "failed"; readers treat anything but "passed" alike.
        "mloop.gate": "passed" if run.gate.passed else "rejected",
        "mloop.metric": run.holdout.metric,  # the metric the gates compared on
        "mloop.actor": run.actor,
        "mloop.reason": run.reason[:500],
        **run.data_version.tags(),  # mloop.data_version, rows, snapshot or DVC revision (data_version.py)
        **run.extra_tags,
    }
    commit = git_commit(run.settings.root)
    if commit:
        tags["mloop.git_commit"] = commit
    if run.champion is not None:
        tags["mloop.parent_champion"] = str(run.champion.info.version)
    return tags


def log_model(run: TrainRun, files: list[Path]) -> str:
    """Log the fitted pipeline (skops, signature, input example, the run files); returns its URI."""
    import mlflow
    from mlflow.models import infer_signature

    from mloop.tracking import trusted_types_for

    ms, scored = run.settings.model, run.scored
    example = run.holdout.x_test.head(5)
    with warnings.catch_warnings():
        # MLflow hints that integer columns cannot hold missing values; the data contract,
        # not the signature, decides nullability at serving time.
        warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
        output = scored.proba[:5] if scored.proba is not None else scored.predictions[:5]
        signature = infer_signature(example, output)
    with run.timer.step("log_model"):
        info = mlflow.sklearn.log_model(
            run.model,
            name="model",
            serialization_format="skops",
            skops_trusted_types=trusted_types_for(run.model, ms.trusted_types),
            signature=signature,
            input_example=example,
            extra_files=[str(f) for f in files],
            pip_requirements=pip_requirements(run.model),
            pyfunc_predict_fn="predict_proba" if ms.task == "classification" else "predict",
        )
    return str(info.model_uri)


def log_run(run: TrainRun) -> tuple[dict[str, str], str]:
    """Everything a version needs, logged to the active MLflow run; returns its tags and the model URI."""
    import mlflow

    ms = run.settings.model
    with tempfile.TemporaryDirectory(prefix="mloop-train-") as tmp:
        files = log_run_files(run, Path(tmp))
        mlflow.log_params(
            {
                **{f"model.{k}": v for k, v in run.params.items()},
                "estimator": ms.estimator,
                "task": ms.task,
                "target": ms.target,
                "split": run.settings.split.strategy,
                "features": ",".join(run.holdout.features),
            }
        )
        champion = {f"champion_{k}": v for k, v in (run.champion_metrics or {}).items()}
        mlflow.log_metrics({**run.scored.metrics, **champion})
        tags = run_tags(run)
        mlflow.set_tags(tags)
        return tags, log_model(run, files)
