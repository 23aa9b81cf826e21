"""Saving and loading the fitted pipeline as an MLflow model, under an explicit trust policy.

MLflow saves scikit-learn models with skops, which builds objects only from types it is told to
trust. A model file comes from the registry, and anyone who can register a version can write one,
so mloop decides what is trusted, never the file: skops' own defaults (scikit-learn estimators,
numpy/scipy arrays and ufuncs, builtin containers), the exact names in :data:`ALLOWED_TYPES`
(fitted-tree internals, the XGBoost/LightGBM scikit-learn wrappers and their boosters, data
types), and the exact names the project lists in ``model.trusted_types``. There are no prefixes:
trusting ``builtins.`` once let a file call ``eval`` on a column name. Functions are trusted only
when listed, and a few callables that run code, import modules, reach attributes or open files
(:data:`NEVER_TRUSTED`) are refused even then.

The same check runs when a model is saved (so an unloadable model is never registered) and when it
is loaded (so a file written any other way, or a version registered under an older policy, is
refused with :class:`~mloop.errors.ModelRefused` naming each type and how to trust it on purpose).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import yaml

from mloop.errors import ModelRefused, TrackingError
from mloop.tracking.project_code import project_imports

__all__ = ["ALLOWED_TYPES", "NEVER_TRUSTED", "load_sklearn_model", "refused_types", "trusted_types_for"]

#: Types a saved model may hold beyond skops' defaults, by exact name. Each is a class whose
#: instances hold data (arrays, tree tables, a booster's serialised model); none is a function.
ALLOWED_TYPES: frozenset[str] = frozenset(
    {
        # Fitted trees inside scikit-learn's forests, gradient boosting and HistGradientBoosting.
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        # Other fitted internals of scikit-learn estimators: neighbour search trees and their
        # metrics (PyFuncDistance64, which wraps a Python callable, is left out on purpose), MLP
        # optimisers, calibration, and the Bunch that stacking and voting keep their estimators in.
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neighbors._ball_tree.BallTree",
        *(
            f"sklearn.metrics._dist_metrics.{metric}Distance64"
            for metric in (
                "BrayCurtis",
                "Canberra",
                "Chebyshev",
                "Dice",
                "Euclidean",
                "Hamming",
                "Haversine",
                "Jaccard",
                "Mahalanobis",
                "Manhattan",
                "Matching",
                "Minkowski",
                "RogersTanimoto",
                "RussellRao",
                "SEuclidean",
                "SokalMichener",
                "SokalSneath",
            )
        ),
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
        "sklearn.calibration._CalibratedClassifier",
        "sklearn.calibration._SigmoidCalibration",
        "sklearn.calibration._TemperatureScaling",
        "sklearn.utils._bunch.Bunch",
        # XGBoost's and LightGBM's scikit-learn wrappers and the boosters they hold.
        "xgboost.sklearn.XGBClassifier",
        "xgboost.sklearn.XGBRegressor",
        "xgboost.sklearn.XGBRFClassifier",
        "xgboost.sklearn.XGBRFRegressor",
        "xgboost.core.Booster",
        "lightgbm.sklearn.LGBMClassifier",
        "lightgbm.sklearn.LGBMRegressor",
        "lightgbm.basic.Booster",
        # mloop's PyTorch steps: plain values on load (params, a JSON spec, weights as bytes); their
        # network is rebuilt afterwards by mloop.tracking.torch_io under this same policy.
        "mloop.training.torch_net.TorchClassifier",
        "mloop.training.torch_net.TorchRegressor",
        # Data types skops does not trust by default but fitted estimators carry.
        "numpy.dtype",
        "collections.OrderedDict",
        "builtins.frozenset",
        "builtins.range",
    }
)

#: Callables that evaluate code, import modules, reach arbitrary attributes or open files: never
#: trusted, not even when listed in ``model.trusted_types``.
NEVER_TRUSTED: frozenset[str] = frozenset(
    {
        *(
            f"builtins.{name}"
            for name in (
                "eval",
                "exec",
                "compile",
                "__import__",
                "getattr",
                "setattr",
                "delattr",
                "open",
                "input",
                "breakpoint",
                "globals",
                "locals",
                "vars",
                "help",
                "exit",
                "quit",
            )
        ),
        "operator.attrgetter",
        "operator.methodcaller",
        "_operator.attrgetter",
        "_operator.methodcaller",
    }
)
# Whole modules whose every name runs commands, loads code or touches files and processes.
_NEVER_TRUSTED_MODULES: tuple[str, ...] = (
    "os",
    "posix",
    "nt",
    "subprocess",
    "importlib",
    "runpy",
    "code",
    "codeop",
    "pickle",
    "_pickle",
    "cloudpickle",
    "dill",
    "joblib",
    "marshal",
    "shutil",
    "ctypes",
    "socket",
    "sys",
    "io",
    "_io",
    "pty",
)


def _never(name: str) -> bool:
    module = name.rpartition(".")[0]
    return name in NEVER_TRUSTED or any(
        module == m or module.startswith(f"{m}.") for m in _NEVER_TRUSTED_MODULES
    )


def refused_types(types: Iterable[str], extra: Sequence[str] = ()) -> list[str]:
    """The names in ``types`` (as skops reports them) that the policy refuses, sorted."""
    listed = set(extra)
    return sorted({t for t in types if _never(t) or (t not in ALLOWED_TYPES and t not in listed)})


def _trusted(extra: Sequence[str]) -> list[str]:
    """What skops is told to trust on load, beside its defaults: ours and the project's names."""
    return sorted(ALLOWED_TYPES | {t for t in extra if not _never(t)})


def _refusal(where: str, refused: list[str]) -> ModelRefused:
    never = [t for t in refused if _never(t)]
    listable = [t for t in refused if not _never(t)]
    parts = [f"{where} holds types mloop does not trust: {', '.join(refused)}."]
    if never:
        parts.append(
            f"{', '.join(never)} can run code, import modules or open files; mloop never loads a model "
            "that holds them, whatever `model.trusted_types` says."
        )
    if listable:
        parts.append(
            "mloop trusts scikit-learn, XGBoost and LightGBM estimators and numpy/scipy data types; "
            "functions and other classes only when the project lists them. If this model is yours and "
            f"you trust that code, add to mloop.yaml: `model.trusted_types: [{', '.join(listable)}]`."
        )
    if any(t.startswith(("torch.", "skorch.")) for t in refused):
        parts.append(
            "For a PyTorch network, return mloop.training.torch_net.TorchClassifier or TorchRegressor "
            "(docs/pytorch.md): it saves the weights as tensors and the class by name, not the objects."
        )
    return ModelRefused(" ".join(parts), tuple(refused))


def trusted_types_for(model: Any, extra: Sequence[str] = ()) -> list[str]:
    """Types of ``model`` that skops does not trust by default and that the policy trusts.

    Raises :class:`ModelRefused` (at save time, so an unloadable model is never registered) when
    the model holds any other type.
    """
    import skops.io as sio  # here, not at the top: it imports scikit-learn (seconds at CLI start)

    try:
        untrusted = sio.get_untrusted_types(data=sio.dumps(model))
    except Exception as exc:  # skops raises many kinds for objects it cannot walk
        raise TrackingError(
            f"The fitted model cannot be serialised with skops ({type(exc).__name__}: {exc}). "
            "Use an estimator built from scikit-learn-compatible parts."
        ) from exc
    from mloop.tracking.torch_io import refused_references

    refused = refused_types(untrusted, extra) + refused_references(model, extra)
    if refused:
        raise _refusal("The fitted model", refused)
    return sorted(untrusted)


def load_sklearn_model(
    model_dir: str | Path,
    *,
    extra_trusted: Sequence[str] = (),
    ref: str | None = None,
    project_root: str | Path | None = None,
) -> Any:
    """Load the scikit-learn model saved in a local MLflow model directory under mloop's policy.

    The trusted types recorded in the model's own ``MLmodel`` are ignored: they were written by
    whoever registered the version. The file's types are checked against :data:`ALLOWED_TYPES`
    plus ``extra_trusted`` first, for a message that names each one; skops then loads with that
    same list, so it refuses anything else on its own too. No object is built before both checks.
    ``ref`` (``models:/name/3``) names the version in messages. ``project_root`` is the project
    whose code the model's own classes come from (``train.Scaler``, a network's ``train.MLP``): they
    are imported from that directory's files (:mod:`mloop.tracking.project_code`), not from another
    project's module of the same name; without it, Python's usual import.
    """
    import skops.io as sio  # here, not at the top: it imports scikit-learn (seconds at CLI start)

    model_dir = Path(model_dir)
    where = ref or str(model_dir)
    try:
        meta = yaml.safe_load((model_dir / "MLmodel").read_text(encoding="utf-8"))
        flavor = meta["flavors"]["sklearn"]
        path = model_dir / str(flavor["pickled_model"])
    except (OSError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise TrackingError(
            f"{where} is not an MLflow scikit-learn model (no readable MLmodel with a sklearn flavor)."
        ) from exc
    fmt = flavor.get("serialization_format", "skops")
    if fmt != "skops":
        raise ModelRefused(
            f"{where} is saved as {fmt!r}; mloop only loads skops models, which cannot run arbitrary "
            "code on load. Retrain it with `mloop train`."
        )
    if not path.resolve().is_relative_to(model_dir.resolve()):
        raise ModelRefused(
            f"{where} names a model file outside its own directory ({path}); it is not loaded."
        )
    try:
        refused = refused_types(sio.get_untrusted_types(file=path), extra_trusted)
    except Exception as exc:  # a truncated or hand-made file: zip, JSON or schema errors
        raise TrackingError(
            f"{where}: the model file {path.name} cannot be read as a skops file "
            f"({type(exc).__name__}: {exc}). Retrain it with `mloop train`."
        ) from exc
    if refused:
        raise _refusal(where, refused)
    from mloop.tracking.torch_io import restore_networks

    with project_imports(project_root) if project_root is not None else nullcontext():
        try:
            model = sio.load(path, trusted=_trusted(extra_trusted))
        except Exception as exc:  # skops' own audit, or a class that cannot be rebuilt here
            raise TrackingError(
                f"{where}: the model file could not be loaded ({type(exc).__name__}: {exc}). Check that "
                "the libraries it was trained with are installed, or retrain it with `mloop train`."
            ) from exc
        restore_networks(model, extra_trusted, where)  # PyTorch steps: weights-only, trusted class
    return model
