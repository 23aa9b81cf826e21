"""The training pipeline: load → validate → split → tune → fit → evaluate → calibrate → register.

One call, :func:`train`, runs the named steps of :data:`STEPS` in order over one :class:`TrainRun`,
inside one MLflow run (like a kedro runner over its nodes). Everything a later step needs is logged:
params and metrics (in batches), tags (git commit, data hash, contract hash, data source), the model
(skops, with signature and input example), and three artifacts carried inside the model directory —
the data contract, the reference profile and the evaluation report (:mod:`mloop.training.artifacts`),
and the quality estimator that monitoring uses before labels arrive
(:mod:`mloop.training.probability_calibration`).
The gate decides whether the new version gets ``challenger`` (or ``champion``, for the first one);
every decision is an event in the platform store. The champion is loaded once, for its contract and
to score it on the same holdout. A failing step marks the MLflow run FAILED, moves no alias, and its
error says how to go on (:func:`resume_hint`).
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pandas as pd

from mloop.config import Settings
from mloop.errors import MloopError, TrainingError, did_you_mean
from mloop.tracking.project_code import project_imports
from mloop.training.estimators import build_estimator, search_space
from mloop.training.gates import evaluate_gates
from mloop.training.metrics import default_metric, score_model
from mloop.training.preprocess import build_pipeline, feature_kinds
from mloop.training.run import Holdout, Progress, TrainResult, TrainRun
from mloop.training.split import split_frame

if TYPE_CHECKING:
    from mloop.data import DataContract

__all__ = ["STEPS", "Holdout", "TrainResult", "TrainRun", "resume_hint", "train"]


def load_data(run: TrainRun) -> None:
    """Read the training data (the source, or the frame given) and leave out model.drop_columns."""
    from mloop.data import describe_source, load_source
    from mloop.training import data_version

    settings, ms = run.settings, run.settings.model
    run.say("loading data")
    if run.data is not None:
        raw, run.source = run.data, "dataframe"
    elif run.data_version_ref:  # --data-version: a recorded snapshot, or a DVC revision of the source
        raw, run.data_version = data_version.resolve(settings, run.data_version_ref)
        run.source = run.data_version.source
    else:
        raw = load_source(settings.source, root=settings.root)
        run.source = describe_source(settings.source, settings.root)
    if not run.data_version_ref:
        with run.timer.step("data_version"):  # the hash, file time and DVC record (part of "load")
            run.data_version = data_version.describe(settings, raw, run.source, from_source=run.data is None)
    run.loaded = raw
    data_version.tag_active_run(run.data_version)
    if settings.serving.features:  # the features serving joins, as of each row's time (Feast)
        from mloop.data.feast_source import join_served_features

        raw = join_served_features(settings, raw, keep_present=run.data is not None)
    if ms.target not in raw.columns:
        raise TrainingError(
            f"Target column {ms.target!r} (model.target) is not in the data from {run.source}."
            f"{did_you_mean(ms.target, [str(c) for c in raw.columns])} "
            f"Columns: {', '.join(map(str, raw.columns))}."
        )
    # Columns named in model.drop_columns are never features: leave them out of the contract
    # (the time column of a time split stays, it is needed to cut the holdout).
    unused = [c for c in ms.drop_columns if c in raw.columns and c != settings.split.time_column]
    run.raw = raw.drop(columns=unused)


def load_champion(run: TrainRun) -> None:
    """Load the champion once: its contract is enforced, and it is scored on the same holdout."""
    info = run.registry.by_alias("champion")
    if info is not None:
        run.say(f"loading champion v{info.version}")
    run.champion = run.registry.load(info.version) if info is not None else None


def validate_data(run: TrainRun) -> None:
    """Enforce the data contract (the configured one, else the champion's, else inferred from the data)."""
    from mloop.data import DataContract, infer_contract
    from mloop.data import validate as check_contract

    settings, ms = run.settings, run.settings.model
    run.say("validating against the data contract")
    enforce = None
    if settings.contract.path:
        enforce = DataContract.load(settings.resolve_path(settings.contract.path))
    elif run.champion is not None and run.champion.extra.get("contract_source") != "signature":
        # A champion mloop did not train has only its MLflow signature (no target, no ranges): it
        # is still compared on the holdout, but the data's contract is inferred, not its.
        enforce = DataContract.from_dict(run.champion.contract)

    def infer(frame: pd.DataFrame) -> DataContract:
        mc = settings.contract.max_categories
        return infer_contract(frame, target=ms.target, task=ms.task, drop_columns=(), max_categories=mc)

    run.checked = check_contract(run.raw, enforce or infer(run.raw), settings.contract, require_target=True)
    # The new version's contract: the enforced columns and types, with ranges and categories from
    # the data it was actually trained on.
    run.contract = infer(run.clean)
    if run.clean[ms.target].isna().any():
        raise TrainingError(f"Target column {ms.target!r} has missing values; drop or label those rows.")


def split_holdout(run: TrainRun) -> None:
    """Cut the holdout, choose the feature columns by kind, and pick the metric to gate on."""
    settings, ms, clean = run.settings, run.settings.model, run.clean
    run.say("splitting")
    train_df, test_df = split_frame(clean, ms.target, settings.split, task=ms.task, seed=ms.seed)
    candidates = ms.features or [c for c in run.contract.feature_columns if c not in ms.drop_columns]
    missing = [c for c in candidates if c not in clean.columns]
    if missing:
        raise TrainingError(f"model.features names columns not in the data: {', '.join(missing)}.")
    numeric, categorical, unused = feature_kinds([(c, run.contract.column(c).dtype) for c in candidates])
    numeric = [c for c in numeric if c != settings.split.time_column]
    if not numeric + categorical:
        raise TrainingError(
            "No usable feature columns (numeric or category) remain; "
            "check model.features and model.drop_columns."
        )
    n_classes = int(train_df[ms.target].nunique()) if ms.task == "classification" else 0
    if ms.task == "classification" and n_classes < 2:
        raise TrainingError(
            f"Target {ms.target!r} has a single class in the training split; a classifier needs two."
        )
    metric = settings.tuning.metric or default_metric(ms.task, n_classes)
    features = numeric + categorical
    run.holdout = Holdout(
        train_df[features],
        train_df[ms.target],
        test_df[features],
        test_df[ms.target],
        numeric,
        categorical,
        unused,
        metric,
    )


def tune_params(run: TrainRun) -> None:
    """Search hyper-parameters with Optuna (cross-validated on the training split) when trials are asked."""
    settings, ms, h = run.settings, run.settings.model, run.holdout
    run.params, run.tuning = dict(ms.params), None
    trials = settings.tuning.trials if run.tune_trials is None else run.tune_trials
    if trials <= 0:
        return
    from mloop.training.tuning import tune as optuna_tune

    run.say(f"tuning ({trials} trials)")
    finished = 0

    def on_trial(number: int, value: float | None, state: str) -> None:
        # `number` counts every trial of a shared study; the ETA needs this run's own count.
        nonlocal finished
        finished += 1
        score = f" {h.metric}={value:.4f}" if value is not None else ""
        run.say(f"trial {finished}/{trials} (#{number}): {state}{score}", finished, trials)

    result = optuna_tune(
        make_model=lambda p: build_pipeline(
            h.numeric, h.categorical, build_estimator(ms.estimator, ms.task, {**ms.params, **p}, ms.seed)
        ),
        space=search_space(ms.estimator, settings.tuning.space),
        x=h.x_train,
        y=h.y_train,
        task=ms.task,
        metric=h.metric,
        n_trials=trials,
        storage=settings.optuna_storage,
        study_name=settings.tuning.study or f"{ms.name}-tuning",
        folds=settings.tuning.cv_folds,
        seed=ms.seed,
        timeout_s=settings.tuning.timeout_s,
        on_trial=on_trial,
    )
    run.params.update(result.best_params)
    run.tuning = {
        "study": result.study_name,
        "best_value": result.best_value,
        "best_params": result.best_params,
        "trials": result.n_trials,
        "pruned": result.n_pruned,
    }


def fit_model(run: TrainRun) -> None:
    """Fit the pipeline (preprocessing + estimator) on the training split."""
    ms, h = run.settings.model, run.holdout
    run.say(f"fitting {ms.estimator}")
    model = build_pipeline(
        h.numeric, h.categorical, build_estimator(ms.estimator, ms.task, run.params, ms.seed)
    )
    try:
        model.fit(h.x_train, h.y_train)
    except MloopError:
        raise
    except Exception as exc:
        raise TrainingError(f"Fitting {ms.estimator!r} failed: {type(exc).__name__}: {exc}") from exc
    run.model = model


def evaluate_models(run: TrainRun) -> None:
    """Score the new model and the champion on the same holdout, then decide the gates."""
    ms, h = run.settings.model, run.holdout
    run.say("evaluating on the holdout")
    run.scored = score_model(run.model, ms.task, h.x_test, h.y_test)
    run.champion_metrics = None
    if run.champion is not None:
        version = run.champion.info.version
        run.say(f"scoring champion v{version} on the same holdout")
        try:
            run.champion_metrics = score_model(run.champion.model, ms.task, h.x_test, h.y_test).metrics
        except MloopError:
            raise
        except Exception as exc:
            raise TrainingError(
                f"The champion v{version} could not score this holdout "
                f"({type(exc).__name__}: {exc}), so the comparison gate cannot be decided."
            ) from exc
    run.gate = evaluate_gates(
        run.settings.gates,
        run.scored.metrics,
        metric=h.metric,
        champion_metrics=run.champion_metrics,
        champion_version=run.champion.info.version if run.champion else None,
    )


def calibrate_probabilities(run: TrainRun) -> None:
    """Fit the quality estimator on the holdout (calibrated probabilities, or a regressor's error bins)."""
    from mloop.training.probability_calibration import fit_quality_estimator

    run.say("calibrating probabilities on the holdout")
    scored = run.scored
    run.quality_estimator = fit_quality_estimator(
        run.settings.model.task,
        predictions=scored.predictions,
        proba=scored.proba,
        classes=scored.classes,
        y_true=run.holdout.y_test,
    )


def log_to_mlflow(run: TrainRun) -> None:
    """Log plots, contract, profiles, evaluation, params, metrics, tags and the model to MLflow."""
    from mloop.training.artifacts import log_run
    from mloop.training.data_version import keep_snapshot

    run.say("logging to MLflow")
    with run.timer.step("snapshot"):
        run.data_version = keep_snapshot(run.settings, run.loaded, run.data_version)
    run.tags, run.model_uri = log_run(run)


def register_version(run: TrainRun) -> None:
    """Register the logged model as a new version and record the gate's decision as an event."""
    import mlflow

    run.say("registering the version")
    if run.champion is not None and same_as_champion(run):
        # Tagged so that readers of the registry (the loop) do not roll a copy of the champion out.
        run.unchanged = True
        run.tags = {**run.tags, "mloop.gate": "unchanged", "mloop.same_as": str(run.champion.info.version)}
    run.version = int(mlflow.register_model(run.model_uri, run.settings.model.name, tags=run.tags).version)
    run.store.record_event(
        "gate.passed" if run.gate.passed else "gate.failed",
        f"model:{run.settings.model.name}/v{run.version}",
        run.gate.reason,
        actor=run.actor,
        data={
            "metric": run.holdout.metric,
            "metrics": run.scored.metrics,
            "champion_metrics": run.champion_metrics,
            "run_id": run.run_id,
        },
    )


def same_as_champion(run: TrainRun) -> bool:
    """True when this run trained on the champion's data (same data hash) and scores exactly as it
    does on the same holdout: a retrain that changed nothing, which must not become a challenger."""
    if run.champion is None or run.champion_metrics is None:
        return False
    theirs = run.champion.info.tags.get("mloop.data_hash")
    if theirs is None or theirs != run.tags.get("mloop.data_hash"):
        return False
    ours = run.scored.metrics
    return set(ours) == set(run.champion_metrics) and all(
        math.isclose(ours[k], run.champion_metrics[k], rel_tol=1e-12, abs_tol=1e-12) for k in ours
    )


def set_alias(run: TrainRun) -> None:
    """Give a passing version its alias (champion if first, else challenger); a twin of the champion none."""
    # A retrain identical to the champion (same_as_champion, decided in register_version) says so.
    if run.unchanged and run.champion is not None:
        champion = run.champion.info.version
        run.say(f"v{run.version} is the same as champion v{champion}; the challenger alias stays")
        run.store.record_event(
            "gate.unchanged",
            f"model:{run.settings.model.name}/v{run.version}",
            f"same data hash and holdout metrics as champion v{champion}; challenger alias not moved",
            actor=run.actor,
            data={"champion": champion, "run_id": run.run_id},
        )
        return
    if not run.gate.passed:
        return
    if run.champion is None and run.settings.gates.promote_first:
        reason = f"first version to pass the gates ({run.gate.reason})"
        run.registry.set_alias("champion", run.version, reason=reason, actor=run.actor)
        run.aliases.append("champion")
    else:
        run.registry.set_alias("challenger", run.version, reason=run.gate.reason, actor=run.actor)
        run.aliases.append("challenger")


Step = Callable[[TrainRun], None]
STEPS: tuple[tuple[str, Step], ...] = (
    ("load", load_data),
    ("champion", load_champion),
    ("validate", validate_data),
    ("split", split_holdout),
    ("tune", tune_params),
    ("fit", fit_model),
    ("evaluate", evaluate_models),
    ("calibrate", calibrate_probabilities),
    ("log", log_to_mlflow),
    ("register", register_version),
    ("decide", set_alias),
)
"""The steps of :func:`train`, by name, in the order they run; each times itself under its name."""


def resume_hint(run: TrainRun, failed: str) -> str:
    """How to go on after step ``failed`` broke: what was kept and what to run (like kedro's resume hint)."""
    head = f"Training stopped at step {failed!r} (done: {', '.join(run.done) or 'none'})."
    name = run.settings.model.name
    if failed == "decide":
        return (
            f"{head} Version {run.version} of {name} is registered and its gate passed, but it got no "
            f"alias: `mloop models promote {run.version}` makes it the champion, or run `mloop train` again."
        )
    if failed == "register":
        return (
            f"{head} The model is logged in MLflow run {run.run_id} but was not registered; "
            "fix the cause and run `mloop train` again."
        )
    hint = f"{head} Nothing was registered and no alias moved; fix the cause and run `mloop train` again."
    tuning = getattr(run, "tuning", None)
    if tuning:
        hint += (
            f" The tuning study {tuning['study']!r} keeps its {tuning['trials']} trials: a rerun that "
            "tunes joins it and keeps its best parameters."
        )
    return hint


def train(
    settings: Settings,
    *,
    tune_trials: int | None = None,
    data: pd.DataFrame | None = None,
    progress: Progress | Callable[[str], None] | None = None,
    actor: str = "cli",
    reason: str = "manual training",
    extra_tags: dict[str, str] | None = None,
    data_version: str | None = None,
) -> TrainResult:
    """Train, evaluate, log, register and gate one model version: :data:`STEPS`, in one MLflow run.

    ``data_version`` (a data hash or a DVC git revision) trains on that recorded data instead of the
    source (:func:`mloop.training.data_version.resolve`)."""
    import mlflow

    from mloop.store import open_store
    from mloop.tracking import Registry, configure_mlflow

    if data is not None and data_version:
        raise TrainingError("Train on a given frame or on a recorded data version, not on both.")
    experiment_id = configure_mlflow(settings)
    store = open_store(settings.store_url)
    registry = Registry(settings, events=store)
    started = mlflow.start_run(
        experiment_id=experiment_id, run_name=f"train-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    run = TrainRun(
        settings,
        store,
        registry,
        started.info.run_id,
        _as_progress(progress),
        data=data,
        tune_trials=tune_trials,
        actor=actor,
        reason=reason,
        extra_tags=dict(extra_tags or {}),
        data_version_ref=data_version,
    )
    try:
        # `model.estimator: train:build` and a network's `train.MLP` are this project's train.py.
        with project_imports(settings.root):
            _run_steps(run)
        mlflow.end_run("FINISHED")
        return run.result()
    finally:
        store.close()


def _as_progress(progress: Callable[..., None] | None) -> Progress:
    """The progress callback as a :class:`Progress`: a one-argument callable gets the messages only."""
    if progress is None:
        return lambda message, done=None, total=None: None
    try:
        inspect.signature(progress).bind("step", 1, 2)
    except (TypeError, ValueError):
        one_arg = progress
        return lambda message, done=None, total=None: one_arg(message)
    return progress


def _run_steps(run: TrainRun) -> None:
    """Run :data:`STEPS` in order; on a failure, record it and say how to resume, then re-raise."""
    import mlflow

    name = ""
    try:
        for name, step in STEPS:
            with run.timer.step(name):
                step(run)
            run.done.append(name)
    except BaseException as exc:
        hint = resume_hint(run, name)
        if isinstance(exc, MloopError):
            exc.message = f"{exc.message}\n{hint}"
        elif isinstance(exc, Exception):
            exc.add_note(hint)
        mlflow.set_tag("mloop.error", f"{type(exc).__name__}: {exc}"[:5000])
        mlflow.end_run("FAILED" if not isinstance(exc, KeyboardInterrupt) else "KILLED")
        run.store.record_event(
            "training.failed",
            f"model:{run.settings.model.name}",
            f"{type(exc).__name__}: {exc}"[:2000],
            actor=run.actor,
            data={"run_id": run.run_id, "reason": run.reason, "step": name, "resume": hint},
        )
        raise
