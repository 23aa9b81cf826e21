"""Built-in estimators and the hook for the user's own.

A built-in is a factory registered with :func:`register_estimator`; it takes the task, the user's
params and the seed, and returns an unfitted scikit-learn-compatible estimator. ``model.estimator``
may also be ``"module:function"``: the function is called with ``task``, ``seed`` and the params and
must return an estimator with ``fit``/``predict`` (and ``predict_proba`` for classifiers).

Trust: ``module:function`` names the project's own code (``train.py`` by default), read from
``mloop.yaml`` or ``MLOOP_*`` only; mloop imports and runs it as the user's code, like any script
they run. What it returns is saved only if every type in it is allowed by
:mod:`mloop.tracking.model_io` (its own classes and functions must be listed in
``model.trusted_types``), so the serving side never imports the project's code unless told to.

Example, a custom built-in::

    @register_estimator("extra_trees", space={"n_estimators": ("int", 50, 400)})
    def _extra_trees(task, params, seed):
        from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor
        cls = ExtraTreesClassifier if task == "classification" else ExtraTreesRegressor
        return cls(random_state=seed, **params)
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mloop.errors import TrainingError, did_you_mean
from mloop.tracking.project_code import import_project_module

__all__ = ["ESTIMATORS", "EstimatorSpec", "build_estimator", "register_estimator", "search_space"]

Factory = Callable[[str, dict[str, Any], int], Any]
# A search-space entry: ("int"|"float", low, high[, "log"]) or ("choice", [values]).
SpaceEntry = tuple[Any, ...]


@dataclass(frozen=True)
class EstimatorSpec:
    name: str
    factory: Factory
    space: dict[str, SpaceEntry] = field(default_factory=dict)
    tasks: tuple[str, ...] = ("classification", "regression")


ESTIMATORS: dict[str, EstimatorSpec] = {}


def register_estimator(
    name: str,
    *,
    space: dict[str, SpaceEntry] | None = None,
    tasks: tuple[str, ...] = ("classification", "regression"),
) -> Callable[[Factory], Factory]:
    """Register a built-in estimator factory under ``name`` with its default tuning space."""

    def deco(factory: Factory) -> Factory:
        ESTIMATORS[name] = EstimatorSpec(name, factory, dict(space or {}), tasks)
        return factory

    return deco


@register_estimator("logistic", space={"C": ("float", 1e-3, 100.0, "log")}, tasks=("classification",))
def _logistic(task: str, params: dict[str, Any], seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(**{"max_iter": 2000, "random_state": seed, **params})


@register_estimator("linear", space={"alpha": ("float", 1e-4, 100.0, "log")}, tasks=("regression",))
def _linear(task: str, params: dict[str, Any], seed: int) -> Any:
    from sklearn.linear_model import Ridge

    return Ridge(**{"alpha": 1e-6, **params})


@register_estimator(
    "random_forest",
    space={
        "n_estimators": ("int", 50, 300),
        "max_depth": ("int", 3, 20),
        "min_samples_leaf": ("int", 1, 20),
    },
)
def _random_forest(task: str, params: dict[str, Any], seed: int) -> Any:
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    cls = RandomForestClassifier if task == "classification" else RandomForestRegressor
    return cls(**{"n_estimators": 100, "n_jobs": -1, "random_state": seed, **params})


@register_estimator(
    "hist_gradient_boosting",
    space={
        "learning_rate": ("float", 0.01, 0.3, "log"),
        "max_leaf_nodes": ("int", 8, 64),
        "min_samples_leaf": ("int", 5, 100),
        "l2_regularization": ("float", 1e-6, 1.0, "log"),
    },
)
def _hgb(task: str, params: dict[str, Any], seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    cls = HistGradientBoostingClassifier if task == "classification" else HistGradientBoostingRegressor
    return cls(**{"random_state": seed, **params})


@register_estimator(
    "xgboost",
    space={
        "n_estimators": ("int", 50, 400),
        "max_depth": ("int", 2, 10),
        "learning_rate": ("float", 0.01, 0.3, "log"),
        "subsample": ("float", 0.5, 1.0),
    },
)
def _xgboost(task: str, params: dict[str, Any], seed: int) -> Any:
    try:
        import xgboost
    except ImportError as exc:
        raise TrainingError(
            "Estimator 'xgboost' needs the xgboost package: pip install 'mloop[xgboost]'."
        ) from exc
    cls = xgboost.XGBClassifier if task == "classification" else xgboost.XGBRegressor
    return cls(**{"n_estimators": 200, "random_state": seed, "n_jobs": 2, "tree_method": "hist", **params})


@register_estimator(
    "lightgbm",
    space={
        "n_estimators": ("int", 50, 400),
        "num_leaves": ("int", 8, 128),
        "learning_rate": ("float", 0.01, 0.3, "log"),
        "min_child_samples": ("int", 5, 100),
    },
)
def _lightgbm(task: str, params: dict[str, Any], seed: int) -> Any:
    import lightgbm

    cls = lightgbm.LGBMClassifier if task == "classification" else lightgbm.LGBMRegressor
    return cls(**{"n_estimators": 200, "random_state": seed, "verbose": -1, "n_jobs": 2, **params})


@register_estimator(
    "torch_mlp",
    space={
        "lr": ("float", 1e-4, 1e-2, "log"),
        "hidden": ("int", 16, 256),
        "dropout": ("float", 0.0, 0.5),
    },
)
def _torch_mlp(task: str, params: dict[str, Any], seed: int) -> Any:
    """A feed-forward PyTorch network trained through skorch (docs/pytorch.md)."""
    from mloop.tracking.torch_io import INSTALL_HINT
    from mloop.training.torch_net import TorchClassifier, TorchRegressor

    try:  # fit imports them anyway: say what to install before anything is fitted
        import skorch  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise TrainingError(f"Estimator 'torch_mlp' needs PyTorch and skorch. {INSTALL_HINT}") from exc
    module_params: dict[str, Any] = {k: params.pop(k) for k in ("hidden", "layers", "dropout") if k in params}
    cls = TorchClassifier if task == "classification" else TorchRegressor
    return cls("mloop.training.torch_modules.MLP", module_params, **{"random_state": seed, **params})


_USER_REF = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*", re.ASCII)


def _user_factory(ref: str) -> Factory:
    if not _USER_REF.fullmatch(ref):
        raise TrainingError(
            f"model.estimator {ref!r} is neither a built-in nor 'module:function' with a dotted module "
            "path and a function name (e.g. 'train:build_model' for build_model in train.py)."
        )
    module_name, _, func_name = ref.partition(":")
    try:  # the project's own file (train.py), not another project's cached `train`
        module = import_project_module(module_name)
    except ImportError as exc:
        raise TrainingError(f"Cannot import module {module_name!r} for estimator {ref!r}: {exc}") from exc
    except Exception as exc:  # the project's module failed while it was imported: say where
        raise TrainingError(
            f"Importing {module_name!r} for estimator {ref!r} raised {type(exc).__name__}: {exc}. "
            "Fix that module (it is your project's code)."
        ) from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        names = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        raise TrainingError(
            f"Module {module_name!r} has no function {func_name!r}.{did_you_mean(func_name, names)}"
        )

    def factory(task: str, params: dict[str, Any], seed: int) -> Any:
        accepted = inspect.signature(func).parameters
        kwargs: dict[str, Any] = {}
        has_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
        for key, value in {"task": task, "seed": seed}.items():
            if key in accepted or has_var_kw:
                kwargs[key] = value
        return func(**kwargs, **params)

    return factory


def build_estimator(name: str, task: str, params: dict[str, Any] | None = None, seed: int = 42) -> Any:
    """An unfitted estimator from a built-in name or ``module:function``."""
    params = dict(params or {})
    if ":" in name:
        factory = _user_factory(name)
    else:
        spec = ESTIMATORS.get(name)
        if spec is None:
            raise TrainingError(
                f"Unknown estimator {name!r}.{did_you_mean(name, ESTIMATORS)} Built-ins: "
                f"{', '.join(sorted(ESTIMATORS))}; or give 'module:function' returning an estimator."
            )
        if task not in spec.tasks:
            raise TrainingError(
                f"Estimator {name!r} does not do {task}. For {task} use one of: "
                f"{', '.join(sorted(n for n, s in ESTIMATORS.items() if task in s.tasks))}."
            )
        factory = spec.factory
    try:
        estimator = factory(task, params, seed)
    except TypeError as exc:
        raise TrainingError(
            f"Estimator {name!r} rejected its params {params}: {exc}. Fix `model.params`."
        ) from exc
    missing = [m for m in ("fit", "predict") if not hasattr(estimator, m)]
    if task == "classification" and not hasattr(estimator, "predict_proba"):
        missing.append("predict_proba")
    if missing:
        raise TrainingError(
            f"Estimator {name!r} returned {type(estimator).__name__}, which lacks {', '.join(missing)}; "
            "return a scikit-learn-compatible estimator."
        )
    return estimator


def search_space(name: str, overrides: dict[str, Any] | None = None) -> dict[str, SpaceEntry]:
    """The tuning space of an estimator, with ``tuning.space`` overrides applied."""
    space = dict(ESTIMATORS[name].space) if name in ESTIMATORS else {}
    for param, value in (overrides or {}).items():
        if isinstance(value, dict):
            kind = "int" if isinstance(value["low"], int) and isinstance(value["high"], int) else "float"
            space[param] = (kind, value["low"], value["high"], *(["log"] if value.get("log") else []))
        elif (
            isinstance(value, list | tuple)
            and len(value) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        ):
            kind = "int" if all(isinstance(v, int) for v in value) else "float"
            space[param] = (kind, value[0], value[1])
        elif isinstance(value, list | tuple):
            space[param] = ("choice", list(value))
        else:
            raise TrainingError(
                f"tuning.space.{param} must be [low, high], {{low, high, log}} or a list of choices; "
                f"got {value!r}."
            )
    if not space:
        raise TrainingError(
            f"Estimator {name!r} has no default search space; give one under `tuning.space` in mloop.yaml."
        )
    return space
