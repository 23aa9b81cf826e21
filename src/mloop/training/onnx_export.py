"""Export the fitted pipeline to ONNX and check the copy against the original on the holdout.

Called by the ``log`` step (:func:`onnx_files`). skl2onnx converts the scikit-learn pipeline
(preprocessing included: one graph input per feature column, see :mod:`mloop.tracking.onnx_io`);
onnxmltools' converters are registered for LightGBM and XGBoost estimators, and
:mod:`mloop.training.onnx_torch`'s for a PyTorch step (its network through ``torch.onnx.export``).
The copy is then run through ONNX Runtime on the holdout and compared with the pipeline's own
answers: the largest absolute difference of class probabilities (of predictions, relative to their
spread, for a regressor) and the share of rows with the same predicted class. Within ``model.onnx``
tolerance the version carries ``model.onnx`` and serving may use it (``serving.onnx``); beyond it the
copy is refused and not saved. Either way ``onnx.json`` records the numbers, the tolerance, the
versions of the converters and the reason, and the run and version get the tag ``mloop.onnx``.

Numeric inputs are float64 and the preprocessing is converted to compute as scikit-learn does
(imputing and scaling in float64, then float32 for the trees), so the copy routes every row down the
same branches; what remains is float32 summation (differences around 1e-7 to 1e-5). Hence a
tolerance of 1e-3 and 99% of labels (a tied vote may break either way); a pipeline whose steps only
convert with float32 inputs usually misses it and is refused. A pipeline the converters
cannot handle (a custom estimator, a date-time feature) is recorded as ``not available: <reason>``;
the export never fails training.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mloop.tracking.onnx_io import MISSING_STRING, ONNX_FILE, ONNX_REPORT_FILE, feeds_from_frame
from mloop.training.onnx_torch import is_torch_step, register_torch_converter

if TYPE_CHECKING:
    from mloop.training.run import TrainRun

__all__ = ["OnnxExport", "OnnxTolerance", "export_onnx", "onnx_files"]

log = logging.getLogger(__name__)

OPSET = {"": 17, "ai.onnx.ml": 3}
"""ONNX opsets the graph is written for (ONNX Runtime >= 1.14 runs them)."""
TAG = "mloop.onnx"
_CONVERTING = threading.Lock()


@dataclass(frozen=True, slots=True)
class OnnxTolerance:
    """How close the ONNX copy must be to the pipeline on the holdout to be used."""

    max_abs_diff: float = 1e-3
    """Largest absolute difference of a class probability."""
    min_label_agreement: float = 0.99
    """Smallest share of holdout rows with the same predicted class."""
    max_rel_diff: float = 1e-3
    """Regression: largest absolute difference of a prediction over the predictions' standard deviation."""


@dataclass(slots=True)
class OnnxExport:
    """The outcome of :func:`export_onnx`: the serialised graph only when it was verified."""

    status: str  # "verified" | "refused" | "not available"
    reason: str
    model: bytes | None = None
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        """The ``mloop.onnx`` tag value: the status, and the reason unless verified."""
        text = self.status if self.status == "verified" else f"{self.status}: {self.reason}"
        return text[:500]


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("onnx", "onnxruntime", "skl2onnx", "onnxmltools"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def input_kinds(model: Any, frame: pd.DataFrame) -> list[tuple[str, str]]:
    """``(column, "float"|"string")`` for each column the pipeline reads, in the frame's order.

    Columns a ``ColumnTransformer`` drops are not inputs. Raises ``ValueError`` for a column ONNX
    inputs cannot carry (date-times).
    """
    from sklearn.compose import ColumnTransformer

    names = [str(c) for c in getattr(model, "feature_names_in_", frame.columns)]
    first = model.steps[0][1] if hasattr(model, "steps") else None
    if isinstance(first, ColumnTransformer):
        used: set[str] = set()
        for _, transformer, cols in first.transformers_:
            if isinstance(transformer, str) and transformer == "drop":
                continue
            picked = [cols] if isinstance(cols, str) else list(np.atleast_1d(np.asarray(cols)))
            if picked and not isinstance(picked[0], str):  # positions or a boolean mask
                picked = list(np.asarray(names)[np.asarray(cols)])
            used.update(str(c) for c in picked)
        names = [n for n in names if n in used]
    kinds = []
    for name in names:
        dtype = frame[name].dtype
        if pd.api.types.is_datetime64_any_dtype(dtype) or isinstance(dtype, pd.PeriodDtype):
            raise ValueError(f"column {name!r} holds date-times, which ONNX inputs cannot carry")
        numeric = pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)
        kinds.append((name, "float" if numeric else "string"))
    return kinds


@contextlib.contextmanager
def _string_imputers_take(model: Any, missing: str) -> Iterator[None]:
    """Let the pipeline's string imputers take ``missing`` as their missing value while converting.

    scikit-learn's imputers of category columns look for NaN, which an ONNX string tensor cannot hold;
    skl2onnx converts them only with a string marker. Restored afterwards.
    """
    from sklearn.impute import SimpleImputer

    changed = []
    stack = [model]
    while stack:
        obj = stack.pop()
        if isinstance(obj, SimpleImputer):
            stats = getattr(obj, "statistics_", None)
            if stats is not None and stats.dtype == object and not isinstance(obj.missing_values, str):
                changed.append((obj, obj.missing_values))
                obj.missing_values = missing
        for attr in ("steps", "transformers_"):
            for item in getattr(obj, attr, None) or []:
                stack.append(item[1])
    try:
        yield
    finally:
        for obj, value in changed:
            obj.missing_values = value


@contextlib.contextmanager
def _tree_flags_as_ints() -> Iterator[None]:
    """skl2onnx 1.20 passes ``False`` for leaves of HistGradientBoosting trees where protobuf now wants
    an int (``nodes_missing_value_tracks_true``); give it ints while converting."""
    try:
        from skl2onnx.common import tree_ensemble
    except ImportError:  # a different layout: nothing to fix
        yield
        return
    original = tree_ensemble.add_node

    def add_node(*args: Any, nodes_missing_value_tracks_true: Any = 0, **kwargs: Any) -> Any:
        return original(*args, nodes_missing_value_tracks_true=int(nodes_missing_value_tracks_true), **kwargs)

    tree_ensemble.add_node = add_node
    try:
        yield
    finally:
        tree_ensemble.add_node = original


def _register_boosters(estimator: Any) -> None:
    """Register onnxmltools' converters for a LightGBM or XGBoost estimator with skl2onnx."""
    module = type(estimator).__module__.split(".")[0]
    if module not in ("lightgbm", "xgboost"):
        return
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    is_classifier = hasattr(estimator, "predict_proba")
    shapes = (
        calculate_linear_classifier_output_shapes
        if is_classifier
        else calculate_linear_regressor_output_shapes
    )
    options = {"nocl": [True, False], "zipmap": [True, False, "columns"]} if is_classifier else None
    if module == "lightgbm":
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm as convert
    else:
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost as convert
    alias = f"{module.capitalize()}{type(estimator).__name__}"
    update_registered_converter(type(estimator), alias, shapes, convert, options=options)


def _convert_scaler_in_float64(scope: Any, operator: Any, container: Any) -> None:
    """``StandardScaler`` as scikit-learn computes it: ``(x - mean) / scale`` in float64, then float32.

    skl2onnx's own ``div_cast`` rounds the mean to float32 first; an integer feature's value then
    lands an ulp beside the split threshold that scikit-learn put exactly on it (a tree's threshold
    is often a training value), and every row with that value takes the other branch.
    """
    from onnx import TensorProto
    from skl2onnx.common._apply_operation import apply_cast, apply_div, apply_sub
    from skl2onnx.operator_converters.common import concatenate_variables

    op = operator.raw_operator
    n = int(op.n_features_in_)
    mean = np.asarray(op.mean_ if op.with_mean else np.zeros(n), dtype=np.float64)
    scale = np.asarray(op.scale_ if op.with_std else np.ones(n), dtype=np.float64)
    name = concatenate_variables(scope, operator.inputs, container)
    x64, centred, scaled = (scope.get_unique_variable_name(v) for v in ("x64", "centred", "scaled"))
    mean_name, scale_name = scope.get_unique_variable_name("mean"), scope.get_unique_variable_name("scale")
    container.add_initializer(mean_name, TensorProto.DOUBLE, [n], mean.tolist())
    container.add_initializer(scale_name, TensorProto.DOUBLE, [n], scale.tolist())
    apply_cast(scope, name, x64, container, to=TensorProto.DOUBLE)
    apply_sub(scope, [x64, mean_name], centred, container, broadcast=1)
    apply_div(scope, [centred, scale_name], scaled, container, broadcast=1)
    apply_cast(scope, scaled, operator.outputs[0].full_name, container, to=TensorProto.FLOAT)


def _scaler_shape_float(operator: Any) -> None:
    """:func:`_convert_scaler_in_float64` answers float32 whatever its input (the trees read float32)."""
    from skl2onnx.common.data_types import FloatTensorType

    n = operator.inputs[0].get_first_dimension()
    c = sum(int(v.get_second_dimension()) for v in operator.inputs)
    operator.outputs[0].type = FloatTensorType([n, c])


def _imputer_in_float64(original: Any) -> Any:
    """A numeric ``SimpleImputer`` on float64 inputs as ``Where(IsNaN(x), statistics, x)`` (ONNX
    Runtime's ``Imputer`` operator takes float32 only); other inputs go to skl2onnx's converter."""

    def convert(scope: Any, operator: Any, container: Any) -> None:
        from onnx import TensorProto
        from skl2onnx.common.data_types import DoubleTensorType
        from skl2onnx.operator_converters.common import concatenate_variables

        op = operator.raw_operator
        missing = op.missing_values
        if not isinstance(operator.inputs[0].type, DoubleTensorType) or not (
            isinstance(missing, float) and np.isnan(missing)
        ):
            original(scope, operator, container)
            return
        name = concatenate_variables(scope, operator.inputs, container)
        fill = scope.get_unique_variable_name("fill")
        container.add_initializer(
            fill,
            TensorProto.DOUBLE,
            [len(op.statistics_)],
            np.asarray(op.statistics_, dtype=np.float64).tolist(),
        )
        isnan = scope.get_unique_variable_name("isnan")
        container.add_node("IsNaN", [name], [isnan], name=scope.get_unique_operator_name("IsNaN"))
        container.add_node(
            "Where",
            [isnan, fill, name],
            [operator.outputs[0].full_name],
            name=scope.get_unique_operator_name("Where"),
        )

    return convert


@contextlib.contextmanager
def _scalers_in_float64() -> Iterator[None]:
    """Convert ``StandardScaler`` with :func:`_convert_scaler_in_float64` and numeric imputers on
    float64 inputs with :func:`_imputer_in_float64` while converting."""
    from skl2onnx.common import _registration

    converters, shapes = _registration._converter_pool, _registration._shape_calculator_pool
    saved = {k: converters.get(k) for k in ("SklearnScaler", "SklearnSimpleImputer")}
    saved_shape = shapes.get("SklearnScaler")
    converters["SklearnScaler"] = _registration.RegisteredConverter(_convert_scaler_in_float64, None)
    imputer = saved["SklearnSimpleImputer"]
    if imputer is not None:
        converters["SklearnSimpleImputer"] = _registration.RegisteredConverter(
            _imputer_in_float64(imputer), getattr(imputer, "_options", None)
        )
    shapes["SklearnScaler"] = _scaler_shape_float
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                converters.pop(key, None)
            else:
                converters[key] = value
        if saved_shape is not None:
            shapes["SklearnScaler"] = saved_shape


def _classifier_outputs(estimator: Any) -> list[tuple[str, Any]] | None:
    """A classifier's outputs declared as (label, float32 probabilities): with float64 inputs skl2onnx
    would declare float64 probabilities that the tree and MLP operators do not produce."""
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType

    classes = getattr(estimator, "classes_", None)
    if classes is None or not hasattr(estimator, "predict_proba"):
        return None
    classes = np.asarray(classes)
    if np.issubdtype(classes.dtype, np.integer):
        label: Any = Int64TensorType([None])
    elif classes.dtype.kind in "OUS":
        label = StringTensorType([None])
    else:
        return None
    return [("label", label), ("probabilities", FloatTensorType([None, len(classes)]))]


def convert(model: Any, inputs: list[tuple[str, str]]) -> bytes:
    """The pipeline as a serialised ONNX graph (raises what the converters raise)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType

    estimator = model.steps[-1][1] if hasattr(model, "steps") else model
    _register_boosters(estimator)
    register_torch_converter(estimator)
    tensor = {"string": StringTensorType, "double": DoubleTensorType, "float": FloatTensorType}
    types = [(name, tensor[kind]([None, 1])) for name, kind in inputs]
    final = _classifier_outputs(estimator) if any(kind == "double" for _, kind in inputs) else None
    options = {id(estimator): {"zipmap": False}} if hasattr(estimator, "predict_proba") else None
    # The fixes above patch skl2onnx's module state while converting: one conversion at a time.
    with (
        _CONVERTING,
        _string_imputers_take(model, MISSING_STRING),
        _tree_flags_as_ints(),
        _scalers_in_float64(),
    ):
        onx = convert_sklearn(
            model, initial_types=types, target_opset=OPSET, options=options, final_types=final
        )
    return bytes(onx.SerializeToString())


def _convert_and_open(model: Any, inputs: list[tuple[str, str]]) -> tuple[bytes, Any, list[tuple[str, str]]]:
    """Convert with float64 numeric inputs (what scikit-learn computes with: the copy then matches it
    up to the trees' float32 sums); a pipeline whose steps cannot take float64 is converted with
    float32 inputs instead. Returns the graph, an open session and the inputs used."""
    wide = [(name, "double" if kind == "float" else kind) for name, kind in inputs]
    if wide != inputs:
        try:
            data = convert(model, wide)
            return data, session(data), wide
        except Exception:
            log.debug("float64 inputs did not convert; trying float32", exc_info=True)
    data = convert(model, inputs)
    return data, session(data), inputs


def session(data: bytes, threads: int = 1) -> Any:
    """An ONNX Runtime session for a serialised graph on the CPU."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])


def compare(
    ours: np.ndarray, theirs: np.ndarray, *, is_classifier: bool, tolerance: OnnxTolerance
) -> tuple[bool, str, dict[str, float]]:
    """Whether the ONNX outputs ``ours`` match the pipeline's ``theirs`` within ``tolerance``."""
    ours = np.asarray(ours, dtype=np.float64).reshape(len(theirs), -1)
    theirs = np.asarray(theirs, dtype=np.float64).reshape(len(theirs), -1)
    if ours.shape != theirs.shape:
        return False, f"outputs of shape {ours.shape} where the pipeline gives {theirs.shape}", {}
    diff = float(np.abs(ours - theirs).max()) if ours.size else 0.0
    if is_classifier:
        agree = float(np.mean(ours.argmax(axis=1) == theirs.argmax(axis=1))) if len(ours) else 1.0
        numbers = {"max_abs_diff": diff, "label_agreement": agree}
        if diff > tolerance.max_abs_diff:
            return False, f"probabilities differ by up to {diff:.4g} > {tolerance.max_abs_diff}", numbers
        if agree < tolerance.min_label_agreement:
            return (
                False,
                f"labels agree on {agree:.2%} of rows < {tolerance.min_label_agreement:.2%}",
                numbers,
            )
        return True, f"max |Δp| {diff:.3g}, labels agree on {agree:.2%}", numbers
    scale = float(np.std(theirs)) or 1.0
    rel = diff / scale
    numbers = {"max_abs_diff": diff, "max_rel_diff": rel}
    if rel > tolerance.max_rel_diff:
        return False, f"predictions differ by up to {rel:.4g} std > {tolerance.max_rel_diff}", numbers
    return True, f"max |Δ| {diff:.3g} ({rel:.3g} std)", numbers


def export_onnx(
    model: Any,
    holdout: pd.DataFrame,
    *,
    reference: np.ndarray | None = None,
    tolerance: OnnxTolerance | None = None,
) -> OnnxExport:
    """Convert ``model`` and verify it on the ``holdout`` rows; never raises.

    ``reference`` is the pipeline's ``predict_proba`` (classifiers) or ``predict`` on the holdout when
    already computed (training has it from the evaluation); otherwise it is computed here.
    """
    tol = tolerance or OnnxTolerance()
    is_classifier = hasattr(model, "predict_proba")
    report: dict[str, Any] = {
        "tolerance": {
            "max_abs_diff": tol.max_abs_diff,
            "min_label_agreement": tol.min_label_agreement,
            "max_rel_diff": tol.max_rel_diff,
        },
        "versions": _versions(),
        "missing_string": MISSING_STRING,
        "rows": len(holdout),
    }
    if is_torch_step(model.steps[-1][1] if hasattr(model, "steps") else model):
        with contextlib.suppress(PackageNotFoundError):  # the network goes through torch.onnx.export
            report["versions"]["torch"] = version("torch")

    def done(status: str, reason: str, data: bytes | None = None) -> OnnxExport:
        report.update(status=status, reason=reason)
        return OnnxExport(status, reason, data if status == "verified" else None, report)

    try:
        import onnxruntime  # noqa: F401
        import skl2onnx  # noqa: F401
    except ImportError as exc:
        return done("not available", f"{exc.name} is not installed (pip install 'mloop[onnx]')")
    started = time.perf_counter()
    try:
        inputs = input_kinds(model, holdout)
        data, sess, inputs = _convert_and_open(model, inputs)
    except Exception as exc:  # any converter failure means "no ONNX copy", never a failed training
        name = type(model.steps[-1][1] if hasattr(model, "steps") else model).__name__
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        return done("not available", f"{name} could not be converted: {type(exc).__name__}: {first}")
    report["inputs"] = [list(pair) for pair in inputs]
    report["opset"] = OPSET
    report["bytes"] = len(data)
    report["seconds"] = {"export": time.perf_counter() - started}
    started = time.perf_counter()
    try:
        outputs = sess.run(None, feeds_from_frame(inputs, holdout))
        ours = outputs[1] if is_classifier else outputs[0]
        if reference is None:
            reference = model.predict_proba(holdout) if is_classifier else model.predict(holdout)
    except Exception as exc:
        return done("refused", f"ONNX Runtime could not run the copy: {type(exc).__name__}: {exc}"[:400])
    try:
        ok, reason, numbers = compare(ours, np.asarray(reference), is_classifier=is_classifier, tolerance=tol)
    except (TypeError, ValueError) as exc:  # e.g. string labels from a classifier without probabilities
        return done("refused", f"the copy's outputs cannot be compared with the model's: {exc}"[:400])
    report.update(numbers)
    report["seconds"]["verify"] = time.perf_counter() - started
    if is_classifier:
        report["classes"] = [str(c) for c in getattr(model, "classes_", [])]
    return done("verified" if ok else "refused", reason, data)


def onnx_files(run: TrainRun, out: Path) -> list[Path]:
    """Export the run's model, write ``onnx.json`` (and ``model.onnx`` when verified), tag the run.

    Returns the files to carry with the version; ``model.onnx.export: false`` skips all of it.
    """
    import mlflow

    settings = run.settings.model.onnx
    if not settings.export:
        return []
    tolerance = OnnxTolerance(settings.max_abs_diff, settings.min_label_agreement, settings.max_rel_diff)
    reference = run.scored.proba if run.scored.proba is not None else run.scored.predictions
    result = export_onnx(run.model, run.holdout.x_test, reference=reference, tolerance=tolerance)
    fit = run.timer.timings.get("fit")
    if fit:
        result.report["fit_seconds"] = fit
    run.extra_tags[TAG] = result.tag
    log.info("ONNX copy of %s: %s", run.settings.model.name, result.tag)
    files = [out / ONNX_REPORT_FILE]
    files[0].write_text(json.dumps(result.report, indent=1, default=str), encoding="utf-8")
    mlflow.log_artifact(str(files[0]), artifact_path="mloop")
    if result.model is not None:
        (out / ONNX_FILE).write_bytes(result.model)
        files.append(out / ONNX_FILE)
    return files
