"""Saving and loading the fitted pipeline as an MLflow model.

MLflow 3.17 saves scikit-learn models with skops, which refuses to load any type that is not
explicitly trusted. We keep skops (no arbitrary pickle on load, unlike ``cloudpickle``) and trust
deliberately: at save time we list the types skops does not trust by default, keep those from
libraries we ship or that the user names in ``model.trusted_types``, and record them with the model
so that loading needs no environment flag. A type from anywhere else is refused at save time with a
message that says how to trust it, so a model that cannot be loaded is never registered.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import skops.io as sio
import yaml

from mloop.errors import TrackingError

#: Module prefixes whose types are trusted in saved models: the libraries mloop builds models from.
TRUSTED_PREFIXES: tuple[str, ...] = (
    "sklearn.",
    "numpy.",
    "scipy.",
    "xgboost.",
    "lightgbm.",
    "collections.OrderedDict",
    "builtins.",
    "mloop.",
)


def trusted_types_for(model: Any, extra: Sequence[str] = ()) -> list[str]:
    """Types of ``model`` that skops does not trust by default and that we trust on purpose."""
    try:
        untrusted = sio.get_untrusted_types(data=sio.dumps(model))
    except Exception as exc:  # skops raises many kinds for objects it cannot walk
        raise TrackingError(
            f"The fitted model cannot be serialised with skops ({type(exc).__name__}: {exc}). "
            "Use an estimator built from scikit-learn-compatible parts."
        ) from exc
    refused = _check_types(untrusted, extra)
    if refused:
        raise TrackingError(
            f"The model contains types mloop does not trust by default: {', '.join(refused)}. "
            "If you wrote them, list them under `model.trusted_types` in mloop.yaml."
        )
    return sorted(untrusted)


def _check_types(types: Sequence[str], extra: Sequence[str]) -> list[str]:
    extra_set = set(extra)
    return [t for t in types if not t.startswith(TRUSTED_PREFIXES) and t not in extra_set]


def load_sklearn_model(model_dir: str | Path, *, extra_trusted: Sequence[str] = ()) -> Any:
    """Load the scikit-learn model saved in a local MLflow model directory.

    MLflow gates every sklearn load (skops included) behind ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION``
    because the trusted-types list it uses is read from the model itself. We instead check the
    file's types against *our* policy (:data:`TRUSTED_PREFIXES` plus ``extra_trusted``), so a model
    that smuggles another type in is refused, and a normal one loads without a process-wide flag.
    """
    model_dir = Path(model_dir)
    try:
        meta = yaml.safe_load((model_dir / "MLmodel").read_text(encoding="utf-8"))
        flavor = meta["flavors"]["sklearn"]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise TrackingError(
            f"{model_dir} is not an MLflow scikit-learn model (no readable MLmodel with a sklearn flavor)."
        ) from exc
    path = model_dir / flavor["pickled_model"]
    fmt = flavor.get("serialization_format", "skops")
    if fmt != "skops":
        raise TrackingError(
            f"The model at {model_dir} is saved as {fmt!r}; mloop only loads skops models, which cannot "
            "run arbitrary code on load. Retrain it with `mloop train`."
        )
    types = sio.get_untrusted_types(file=path)
    refused = _check_types(types, extra_trusted)
    if refused:
        raise TrackingError(
            f"The model at {model_dir} contains types outside mloop's trusted set: {', '.join(refused)}. "
            "If they are yours, list them under `model.trusted_types` in mloop.yaml."
        )
    return sio.load(path, trusted=types)
