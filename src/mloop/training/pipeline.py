"""The training pipeline: load → validate → split → tune → fit → evaluate → gate → register.

One call, :func:`train`, runs it inside one MLflow run. Everything a later step needs is logged:
params and metrics (in batches), tags (git commit, data hash, contract hash, data source), the
model (skops, with signature and input example), and three artifacts carried inside the model
directory — the data contract, the reference profile and the evaluation report. The gate decides
whether the new version gets ``challenger`` (or ``champion``, for the first one); every decision is
an event in the platform store. A failure marks the MLflow run FAILED and moves no alias.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mloop.config import Settings
from mloop.errors import MloopError, TrainingError, did_you_mean
from mloop.training.estimators import build_estimator, search_space
from mloop.training.gates import GateResult, evaluate_gates
from mloop.training.metrics import default_metric, evaluate
from mloop.training.plots import evaluation_plots
from mloop.training.preprocess import build_pipeline, feature_kinds
from mloop.training.split import split_frame

__all__ = ["TrainResult", "train"]

Progress = Callable[[str], None]


@dataclass
class TrainResult:
    """What a training run produced and decided."""

    run_id: str
    version: int | None
    metrics: dict[str, float]
    metric: str
    gate: GateResult
    aliases: list[str]
    champion_before: int | None
    timings: dict[str, float] = field(default_factory=dict)
    tuning: dict[str, Any] | None = None
    rows: dict[str, int] = field(default_factory=dict)
    violations: dict[str, Any] | None = None


class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start


def _git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _pip_requirements(model: Any) -> list[str]:
    """Pinned requirements of the saved model, from what is installed.

    Given explicitly because MLflow's inference of them re-loads the model in a subprocess, which
    costs seconds per training run and adds nothing: we know what the pipeline is built from.
    """
    from importlib.metadata import PackageNotFoundError, version

    wanted = ["mlflow", "scikit-learn", "skops", "numpy", "pandas", "scipy"]
    modules = {type(step).__module__.split(".")[0] for step in getattr(model, "named_steps", {}).values()}
    wanted += [pkg for mod, pkg in (("xgboost", "xgboost"), ("lightgbm", "lightgbm")) if mod in modules]
    pins = []
    for pkg in wanted:
        try:
            pins.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            if pkg == "xgboost":
                pins.append(f"xgboost=={version('xgboost-cpu')}")
    return pins


def _champion_contract(registry: Any) -> dict[str, Any] | None:
    champion = registry.by_alias("champion")
    if champion is None:
        return None
    return registry.load(champion.version).contract  # type: ignore[no-any-return]


def train(
    settings: Settings,
    *,
    tune_trials: int | None = None,
    data: pd.DataFrame | None = None,
    progress: Progress | None = None,
    actor: str = "cli",
    reason: str = "manual training",
    extra_tags: dict[str, str] | None = None,
) -> TrainResult:
    """Train, evaluate, log, register and gate one model version. See the module docstring."""
    import mlflow

    from mloop.data import DataContract, data_hash, describe_source, infer_contract, load_source, validate
    from mloop.monitoring.profile import build_profile
    from mloop.store import open_store
    from mloop.tracking import Registry, configure_mlflow, trusted_types_for
    from mloop.tracking.registry import CONTRACT_FILE, EVALUATION_FILE, PROFILE_FILE

    say = progress or (lambda _msg: None)
    timer = _Timer()
    ms = settings.model
    if str(settings.root) not in sys.path:
        sys.path.insert(0, str(settings.root))  # so `model.estimator: train:build` finds train.py

    experiment_id = configure_mlflow(settings)
    store = open_store(settings.store_url)
    registry = Registry(settings, events=store)
    subject = f"model:{ms.name}"
    run = mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{time.strftime('%Y%m%d-%H%M%S')}")
    run_id = run.info.run_id
    try:
        # ---- load ------------------------------------------------------------------------------
        say("loading data")
        with timer.step("load"):
            raw = data if data is not None else load_source(settings.source, root=settings.root)
        source_desc = "dataframe" if data is not None else describe_source(settings.source, settings.root)
        if ms.target not in raw.columns:
            raise TrainingError(
                f"Target column {ms.target!r} (model.target) is not in the data from {source_desc}."
                f"{did_you_mean(ms.target, [str(c) for c in raw.columns])} "
                f"Columns: {', '.join(map(str, raw.columns))}."
            )
        # Columns named in model.drop_columns are never features: leave them out of the contract
        # (the time column of a time split stays, it is needed to cut the holdout).
        unused_cols = [c for c in ms.drop_columns if c in raw.columns and c != settings.split.time_column]
        raw = raw.drop(columns=unused_cols)
        # ---- validate --------------------------------------------------------------------------
        say("validating against the data contract")
        with timer.step("validate"):
            previous_contract = None
            if settings.contract.path:
                previous_contract = DataContract.load(settings.resolve_path(settings.contract.path))
            else:
                champion_contract = _champion_contract(registry)
                if champion_contract is not None:
                    previous_contract = DataContract.from_dict(champion_contract)
            enforce = previous_contract or infer_contract(
                raw,
                target=ms.target,
                task=ms.task,
                drop_columns=(),
                max_categories=settings.contract.max_categories,
            )
            checked = validate(raw, enforce, settings.contract, require_target=True)
            clean = checked.data
            # The new version's contract: the enforced columns and types, with ranges and categories
            # from the data it was actually trained on.
            contract = infer_contract(
                clean,
                target=ms.target,
                task=ms.task,
                drop_columns=(),
                max_categories=settings.contract.max_categories,
            )
        if clean[ms.target].isna().any():
            raise TrainingError(f"Target column {ms.target!r} has missing values; drop or label those rows.")
        # ---- split -----------------------------------------------------------------------------
        say("splitting")
        with timer.step("split"):
            train_df, test_df = split_frame(clean, ms.target, settings.split, task=ms.task, seed=ms.seed)
        candidates = ms.features or [c for c in contract.feature_columns if c not in ms.drop_columns]
        missing = [c for c in candidates if c not in clean.columns]
        if missing:
            raise TrainingError(f"model.features names columns not in the data: {', '.join(missing)}.")
        numeric, categorical, unused = feature_kinds([(c, contract.column(c).dtype) for c in candidates])
        if settings.split.time_column in numeric + categorical:
            numeric = [c for c in numeric if c != settings.split.time_column]
        features = numeric + categorical
        if not features:
            raise TrainingError(
                "No usable feature columns (numeric or category) remain; "
                "check model.features and model.drop_columns."
            )
        x_train, y_train = train_df[features], train_df[ms.target]
        x_test, y_test = test_df[features], test_df[ms.target]
        n_classes = int(y_train.nunique()) if ms.task == "classification" else 0
        if ms.task == "classification" and n_classes < 2:
            raise TrainingError(
                f"Target {ms.target!r} has a single class in the training split; a classifier needs two."
            )
        metric = settings.tuning.metric or default_metric(ms.task, n_classes)

        # ---- tune ------------------------------------------------------------------------------
        params = dict(ms.params)
        trials = settings.tuning.trials if tune_trials is None else tune_trials
        tuning_summary: dict[str, Any] | None = None
        if trials > 0:
            from mloop.training.tuning import tune

            say(f"tuning ({trials} trials)")
            space = search_space(ms.estimator, settings.tuning.space)
            with timer.step("tune"):
                result = tune(
                    make_model=lambda p: build_pipeline(
                        numeric,
                        categorical,
                        build_estimator(ms.estimator, ms.task, {**ms.params, **p}, ms.seed),
                    ),
                    space=space,
                    x=x_train,
                    y=y_train,
                    task=ms.task,
                    metric=metric,
                    n_trials=trials,
                    storage=settings.optuna_storage,
                    study_name=settings.tuning.study or f"{ms.name}-tuning",
                    folds=settings.tuning.cv_folds,
                    seed=ms.seed,
                    timeout_s=settings.tuning.timeout_s,
                    on_trial=lambda n, v, s: say(
                        f"trial {n}: {s}" + (f" {metric}={v:.4f}" if v is not None else "")
                    ),
                )
            params.update(result.best_params)
            tuning_summary = {
                "study": result.study_name,
                "best_value": result.best_value,
                "best_params": result.best_params,
                "trials": result.n_trials,
                "pruned": result.n_pruned,
            }

        # ---- fit -------------------------------------------------------------------------------
        say(f"fitting {ms.estimator}")
        model = build_pipeline(numeric, categorical, build_estimator(ms.estimator, ms.task, params, ms.seed))
        with timer.step("fit"):
            try:
                model.fit(x_train, y_train)
            except MloopError:
                raise
            except Exception as exc:
                raise TrainingError(f"Fitting {ms.estimator!r} failed: {type(exc).__name__}: {exc}") from exc

        # ---- evaluate --------------------------------------------------------------------------
        say("evaluating on the holdout")
        with timer.step("evaluate"):
            y_pred = model.predict(x_test)
            proba = model.predict_proba(x_test) if ms.task == "classification" else None
            classes = (
                [c.item() if hasattr(c, "item") else c for c in model.classes_] if proba is not None else None
            )
            metrics = evaluate(ms.task, y_test, y_pred, proba, classes)
        champion = registry.by_alias("champion")
        champion_metrics = None
        if champion is not None:
            say(f"scoring champion v{champion.version} on the same holdout")
            with timer.step("champion"):
                try:
                    champ = registry.load(champion.version).model
                    c_proba = champ.predict_proba(x_test) if ms.task == "classification" else None
                    c_classes = list(champ.classes_) if c_proba is not None else None
                    champion_metrics = evaluate(ms.task, y_test, champ.predict(x_test), c_proba, c_classes)
                except MloopError:
                    raise
                except Exception as exc:
                    raise TrainingError(
                        f"The champion v{champion.version} could not score this holdout "
                        f"({type(exc).__name__}: {exc}), so the comparison gate cannot be decided."
                    ) from exc
        gate = evaluate_gates(
            settings.gates,
            metrics,
            metric=metric,
            champion_metrics=champion_metrics,
            champion_version=champion.version if champion else None,
        )

        # ---- log ---------------------------------------------------------------------------------
        say("logging to MLflow")
        with timer.step("log"), tempfile.TemporaryDirectory(prefix="mloop-train-") as tmp:
            out = Path(tmp)
            with timer.step("plots"):
                plots, importance = evaluation_plots(
                    out / "plots",
                    task=ms.task,
                    model=model,
                    x=x_test,
                    y=y_test,
                    y_pred=y_pred,
                    proba=proba,
                    classes=classes,
                    seed=ms.seed,
                )
            for p in plots:
                mlflow.log_artifact(str(p), artifact_path="plots")
            with timer.step("profile"):
                profile = build_profile(clean[features], categorical=categorical, seed=ms.seed)
            pred_frame = pd.DataFrame({"prediction": y_pred})
            if proba is not None and classes is not None and len(classes) == 2:
                pred_frame["score"] = proba[:, 1]
            prediction_profile = build_profile(
                pred_frame, categorical=["prediction"] if ms.task == "classification" else [], seed=ms.seed
            )
            dhash = data_hash(clean)
            evaluation = {
                "task": ms.task,
                "metric": metric,
                "metrics": metrics,
                "champion": {"version": champion.version, "metrics": champion_metrics} if champion else None,
                "gate": gate.to_dict(),
                "rows": {
                    "train": len(train_df),
                    "holdout": len(test_df),
                    "dropped": int(len(raw) - len(clean)),
                },
                "features": {"numeric": numeric, "categorical": categorical, "unused": unused},
                "classes": classes,
                "feature_importance": importance,
                "violations": checked.report.to_dict(),
                "tuning": tuning_summary,
                "prediction_profile": prediction_profile.to_dict(),
            }
            files = {
                CONTRACT_FILE: contract.to_json(),
                PROFILE_FILE: json.dumps(profile.to_dict()),
                EVALUATION_FILE: json.dumps(evaluation, default=str, indent=1),
            }
            for fname, text in files.items():
                (out / fname).write_text(text, encoding="utf-8")
                mlflow.log_artifact(str(out / fname), artifact_path="mloop")
            mlflow.log_params(
                {
                    **{f"model.{k}": v for k, v in params.items()},
                    "estimator": ms.estimator,
                    "task": ms.task,
                    "target": ms.target,
                    "split": settings.split.strategy,
                    "features": ",".join(features),
                }
            )
            mlflow.log_metrics(
                {**metrics, **{f"champion_{k}": v for k, v in (champion_metrics or {}).items()}}
            )
            tags = {
                "mloop.data_source": source_desc,
                "mloop.data_hash": dhash,
                "mloop.contract_hash": contract.hash(),
                "mloop.gate": "passed" if gate.passed else "failed",
                "mloop.actor": actor,
                "mloop.reason": reason[:500],
                **(extra_tags or {}),
            }
            commit = _git_commit(settings.root)
            if commit:
                tags["mloop.git_commit"] = commit
            if champion is not None:
                tags["mloop.parent_champion"] = str(champion.version)
            mlflow.set_tags(tags)
            example = x_test.head(5)
            from mlflow.models import infer_signature

            with warnings.catch_warnings():
                # MLflow hints that integer columns cannot hold missing values; the data contract,
                # not the signature, decides nullability at serving time.
                warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
                signature = infer_signature(example, proba[:5] if proba is not None else y_pred[:5])
            with timer.step("log_model"):
                info = mlflow.sklearn.log_model(
                    model,
                    name="model",
                    serialization_format="skops",
                    skops_trusted_types=trusted_types_for(model, ms.trusted_types),
                    signature=signature,
                    input_example=example,
                    extra_files=[str(out / f) for f in files],
                    pip_requirements=_pip_requirements(model),
                    pyfunc_predict_fn="predict_proba" if ms.task == "classification" else "predict",
                )

        # ---- register and decide -----------------------------------------------------------------
        say("registering the version")
        with timer.step("register"):
            mv = mlflow.register_model(info.model_uri, ms.name, tags=tags)
            version = int(mv.version)
        store.record_event(
            "gate.passed" if gate.passed else "gate.failed",
            f"{subject}/v{version}",
            gate.reason,
            actor=actor,
            data={
                "metric": metric,
                "metrics": metrics,
                "champion_metrics": champion_metrics,
                "run_id": run_id,
            },
        )
        aliases: list[str] = []
        if gate.passed:
            if champion is None and settings.gates.promote_first:
                registry.set_alias(
                    "champion",
                    version,
                    reason=f"first version to pass the gates ({gate.reason})",
                    actor=actor,
                )
                aliases.append("champion")
            else:
                registry.set_alias("challenger", version, reason=gate.reason, actor=actor)
                aliases.append("challenger")
        mlflow.end_run("FINISHED")
        return TrainResult(
            run_id=run_id,
            version=version,
            metrics=metrics,
            metric=metric,
            gate=gate,
            aliases=aliases,
            champion_before=champion.version if champion else None,
            timings=timer.timings,
            tuning=tuning_summary,
            rows={"train": len(train_df), "holdout": len(test_df), "dropped": int(len(raw) - len(clean))},
            violations=checked.report.to_dict(),
        )
    except BaseException as exc:
        mlflow.set_tag("mloop.error", f"{type(exc).__name__}: {exc}"[:5000])
        mlflow.end_run("FAILED" if not isinstance(exc, KeyboardInterrupt) else "KILLED")
        store.record_event(
            "training.failed",
            subject,
            f"{type(exc).__name__}: {exc}"[:2000],
            actor=actor,
            data={"run_id": run_id, "reason": reason},
        )
        raise
    finally:
        store.close()
