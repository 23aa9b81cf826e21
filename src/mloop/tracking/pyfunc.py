"""Serving any MLflow model version through its ``python_function`` flavor, under a trust policy.

A version mloop did not train (a custom ``mlflow.pyfunc.PythonModel``, an ONNX graph, a PyTorch or
TensorFlow model, a pickled scikit-learn model) has no ``contract.json``: its request contract is
derived from its MLflow signature (:func:`contract_from_signature`), one column per named ``ColSpec``.
Tensor-based signatures and versions without an input signature are refused: mloop validates every
request before it reaches a model and needs named, typed columns for that.

What may load, decided from the ``MLmodel`` file alone, before any of the model is read:

- skops scikit-learn models keep their own policy (:mod:`mloop.tracking.model_io`);
- ONNX models (``mlflow.onnx``) load by default: a protobuf graph run by ONNX Runtime, no Python code;
- every other loader runs code when it loads (cloudpickle for custom ``python_function`` models,
  ``torch.load`` pickles, pickled scikit-learn, Keras custom objects and ``Lambda`` layers, code
  directories added to ``sys.path``), so the version loads only when the project lists it in
  ``model.trust_code_of`` (``<model name>/<version>``); otherwise :class:`~mloop.errors.ModelRefused`
  names that opt-in. A version loaded under it is recorded by the registry (an event and a tag).

The model is wrapped in :class:`PyfuncModel` (``predict``) or, when its output signature has one
numeric column per class, :class:`PyfuncClassifier` (``predict_proba`` and ``classes_``), so the
serving runtime and the batch scorer call it as they call a scikit-learn pipeline.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mloop.data.schema import ColumnSpec, DataContract, Dtype
from mloop.errors import DataError, ModelRefused, TrackingError

__all__ = [
    "CODE_TRUST_EVENT",
    "CODE_TRUST_TAG",
    "SAFE_LOADERS",
    "OnnxClassifier",
    "PyfuncClassifier",
    "PyfuncModel",
    "check_code_trust",
    "contract_from_signature",
    "is_skops_sklearn",
    "load_pyfunc_model",
    "read_mlmodel",
]

#: ``python_function`` loader modules whose files load without running Python code.
SAFE_LOADERS: dict[str, str] = {
    "mlflow.onnx": "an ONNX graph (protobuf) run by ONNX Runtime",
}
#: What each code-running loader does on load, for the refusal message.
_RUNS_CODE: dict[str, str] = {
    "mlflow.pyfunc.model": "a custom python_function model: its PythonModel is unpickled with cloudpickle "
    "(or its model code is executed) when it loads",
    "mlflow.sklearn": "a pickled scikit-learn model: unpickling runs whatever the file says",
    "mlflow.pytorch": "a PyTorch model: a torch.save pickle runs arbitrary code when it is unpickled, and "
    "mloop does not audit what torch rebuilds from a torch.export (pt2) archive",
    "mlflow.tensorflow": "a TensorFlow/Keras model: custom objects and Lambda layers run Python code on load",
    "mlflow.keras": "a Keras model: custom objects and Lambda layers run Python code on load",
}
CODE_TRUST_EVENT = "model.code_trusted"
"""Event kind recorded when a version that runs code on load is loaded under ``model.trust_code_of``."""
CODE_TRUST_TAG = "mloop.code_trusted"
"""Version tag set on such a version (for people reading the registry; mloop never reads it to decide)."""

# MLflow ColSpec types -> contract dtypes, and the numpy dtype the model's signature expects.
_COLSPEC: dict[str, tuple[Dtype, str | None]] = {
    "boolean": ("bool", "bool"),
    "integer": ("int", "int32"),
    "long": ("int", "int64"),
    "float": ("float", "float32"),
    "double": ("float", "float64"),
    "string": ("string", None),
    "datetime": ("datetime", None),
}
_NUMERIC = {"integer", "long", "float", "double"}


def read_mlmodel(model_dir: Path, ref: str) -> dict[str, Any]:
    """The version's ``MLmodel`` file as a mapping (read as plain YAML: no tags, no objects)."""
    try:
        meta = yaml.safe_load((model_dir / "MLmodel").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise TrackingError(
            f"{ref} has no readable MLmodel file ({exc}); it is not an MLflow model."
        ) from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("flavors"), dict):
        raise TrackingError(f"{ref}: its MLmodel file lists no flavors; it is not an MLflow model.")
    return meta


def is_skops_sklearn(meta: dict[str, Any]) -> bool:
    """Whether the version is a scikit-learn model saved with skops (mloop's own format)."""
    flavor = meta["flavors"].get("sklearn")
    return isinstance(flavor, dict) and flavor.get("serialization_format", "skops") == "skops"


def _inside(model_dir: Path, relative: Any, ref: str, what: str) -> None:
    path = (model_dir / str(relative)).resolve()
    if not path.is_relative_to(model_dir.resolve()):
        raise ModelRefused(f"{ref} names {what} outside its own directory ({relative}); it is not loaded.")


def check_code_trust(
    meta: dict[str, Any], model_dir: Path, *, ref: str, key: str, trusted: Sequence[str]
) -> str | None:
    """Whether the version may load through its ``python_function`` flavor.

    Returns None when its format loads without running code, ``key`` (``name/version``) when it runs
    code and the project trusts it; raises :class:`ModelRefused` otherwise. Reads nothing but
    ``meta``: no model file is opened before this says yes.
    """
    flavors = meta["flavors"]
    conf = flavors.get("python_function")
    if not isinstance(conf, dict) or not isinstance(conf.get("loader_module"), str):
        raise ModelRefused(
            f"{ref} has no python_function flavor (flavors: {', '.join(map(str, flavors)) or 'none'}), "
            "so mloop cannot call it. Log it with an MLflow flavor that has one (mlflow.pyfunc, "
            "mlflow.onnx, mlflow.pytorch, mlflow.tensorflow, ...)."
        )
    if conf.get("data") is not None:
        _inside(model_dir, conf["data"], ref, "its model data")
    loader = str(conf["loader_module"])
    code_dirs = conf.get("code")
    if loader in SAFE_LOADERS and not code_dirs:
        return None
    if key in trusted:
        return key
    if loader in SAFE_LOADERS:
        why = f"it ships code directories ({code_dirs}) that MLflow puts on sys.path before loading it"
    else:
        why = f"it is {_RUNS_CODE.get(loader, f'loaded by the module {loader!r}, which runs its own code')}"
    raise ModelRefused(
        f"{ref} is not loaded: {why}, and anyone who can register a version can write that code. mloop "
        "loads skops scikit-learn and ONNX models by default; a model that runs code on load only when "
        f"the project trusts that version. If it is yours, add to mloop.yaml: "
        f"`model.trust_code_of: [{key}]` (see docs/security.md).",
        (loader,),
    )


def _schema(meta: dict[str, Any], part: str) -> list[dict[str, Any]] | None:
    signature = meta.get("signature")
    if not isinstance(signature, dict) or not signature.get(part):
        return None
    raw = signature[part]
    data = json.loads(raw) if isinstance(raw, str) else raw
    return data if isinstance(data, list) and all(isinstance(c, dict) for c in data) else None


def contract_from_signature(meta: dict[str, Any], ref: str) -> DataContract:
    """The request contract of a version without ``contract.json``: its MLflow input signature.

    Named ``ColSpec`` columns of a scalar type become contract columns (``required: false`` ones
    accept missing values); anything else — no signature, tensors, unnamed columns, arrays, objects,
    binary — is refused with :class:`ModelRefused` saying how to log the model instead.
    """
    fix = (
        "Log the model with a column signature, e.g. "
        "`signature=mlflow.models.infer_signature(X_frame, model.predict(X_frame))` where X_frame is a "
        "pandas DataFrame with named columns, or log an mloop contract.json beside it."
    )
    inputs = _schema(meta, "inputs")
    if inputs is None:
        raise ModelRefused(
            f"{ref} has neither an mloop contract nor an MLflow input signature, so its requests cannot be "
            f"validated; it is not served. {fix}"
        )
    columns: list[ColumnSpec] = []
    for col in inputs:
        kind = col.get("type")
        name = col.get("name")
        if kind == "tensor":
            raise ModelRefused(
                f"{ref} has a tensor signature ({col.get('tensor-spec')}); mloop serves named columns "
                f"only. {fix}"
            )
        if not isinstance(name, str) or not name:
            raise ModelRefused(f"{ref} has an input column without a name ({col}). {fix}")
        if kind not in _COLSPEC:
            raise ModelRefused(
                f"{ref}: input column {name!r} has type {kind!r}; mloop serves columns of type "
                f"{', '.join(_COLSPEC)}. {fix}"
            )
        try:
            columns.append(ColumnSpec(name, _COLSPEC[str(kind)][0], nullable=col.get("required") is False))
        except DataError as exc:
            raise ModelRefused(f"{ref}: its signature breaks the contract rules: {exc.message}") from exc
    try:
        return DataContract(tuple(columns), target=None)
    except DataError as exc:
        raise ModelRefused(f"{ref}: its signature breaks the contract rules: {exc.message}") from exc


def _output_classes(meta: dict[str, Any]) -> list[Any] | None:
    """Class labels when the output signature is one numeric column per class, else None."""
    outputs = _schema(meta, "outputs")
    if not outputs or len(outputs) < 2:
        return None
    if not all(c.get("type") in _NUMERIC and isinstance(c.get("name"), str) for c in outputs):
        return None
    names = [str(c["name"]) for c in outputs]
    return [int(n) for n in names] if all(n.lstrip("-").isdigit() for n in names) else names


def _casts(meta: dict[str, Any]) -> dict[str, str]:
    """Numpy dtypes the signature asks for, where they differ from the contract's frame dtypes."""
    casts: dict[str, str] = {}
    for col in _schema(meta, "inputs") or []:
        target = _COLSPEC.get(str(col.get("type")), ("string", None))[1]
        if target in ("int32", "float32") and isinstance(col.get("name"), str):
            casts[str(col["name"])] = target
    return casts


class PyfuncModel:
    """A loaded MLflow ``python_function`` model called like a scikit-learn regressor.

    Picklable for batch workers: the pickle holds the local model directory, and a worker loads the
    model again from it (the trust decision was taken in the process that downloaded it).
    """

    def __init__(self, model_dir: Path, meta: dict[str, Any], pyfunc: Any) -> None:
        self._setup(model_dir, meta, pyfunc)

    def _setup(self, model_dir: Path, meta: dict[str, Any], pyfunc: Any) -> None:
        self.model_dir = model_dir
        self.meta = meta
        self.pyfunc = pyfunc
        self.casts = _casts(meta)
        classes = _output_classes(meta)
        if classes is not None:
            self.classes_ = np.asarray(classes, dtype=object)

    def __getstate__(self) -> dict[str, Any]:
        return {"model_dir": self.model_dir, "meta": self.meta}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._setup(state["model_dir"], state["meta"], _load(state["model_dir"]))

    def __repr__(self) -> str:
        loader = self.meta["flavors"]["python_function"].get("loader_module")
        return f"{type(self).__name__}({loader})"

    def _call(self, frame: Any) -> Any:
        if self.casts:
            frame = frame.astype({k: v for k, v in self.casts.items() if k in frame.columns})
        return self.pyfunc.predict(frame)

    def predict(self, frame: Any) -> np.ndarray:
        """The model's output as one number per row."""
        out = _values(self._call(frame))
        if out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]
        if out.ndim != 1:
            raise TypeError(
                f"the model returned an array of shape {out.shape}; mloop serves one number per row, or "
                "one probability column per class named in the output signature"
            )
        try:
            return out.astype("float64")
        except (TypeError, ValueError):
            raise TypeError(
                f"the model returned non-numeric predictions ({out[:3].tolist()}); mloop serves a "
                "python_function model's output as numbers, or as one probability column per class "
                "named in its output signature"
            ) from None


class PyfuncClassifier(PyfuncModel):
    """A ``python_function`` model whose output is one probability column per class."""

    classes_: np.ndarray

    def predict_proba(self, frame: Any) -> np.ndarray:
        out = self._call(frame)
        columns = getattr(out, "columns", None)
        if columns is not None:
            by_name = {str(c): c for c in columns}
            if all(str(c) in by_name for c in self.classes_):
                out = out[[by_name[str(c)] for c in self.classes_]]
            # else: unnamed columns (PyTorch's 0..k-1) are read in the output signature's order
        proba = _values(out).astype("float64")
        if proba.ndim != 2 or proba.shape[1] != len(self.classes_):
            raise TypeError(
                f"the model returned shape {proba.shape}; its output signature names "
                f"{len(self.classes_)} class columns"
            )
        return proba

    def predict(self, frame: Any) -> np.ndarray:
        return np.asarray(self.classes_[self.predict_proba(frame).argmax(axis=1)])


class OnnxClassifier(PyfuncModel):
    """An ONNX classifier (as skl2onnx and onnxmltools convert them): a label output and a
    probability output, a ``(rows, classes)`` tensor or a ZipMap sequence of maps, read from ONNX
    Runtime directly because MLflow's ONNX wrapper flattens it. The classes are the graph's own
    (the ``classlabels_*`` attribute of its classifier node), in probability-column order."""

    classes_: np.ndarray

    def _setup(self, model_dir: Path, meta: dict[str, Any], pyfunc: Any) -> None:
        super()._setup(model_dir, meta, pyfunc)
        self.session = pyfunc.get_raw_model()
        found = _onnx_classifier(model_dir, meta, self.session)
        if found is None:
            raise TrackingError(f"{model_dir} is no ONNX classifier")  # checked by the caller first
        self.classes_ = np.asarray(found[0], dtype=object)
        self.proba_output = found[1]
        self.inputs = [(i.name, i.type) for i in self.session.get_inputs()]

    def _feeds(self, frame: Any) -> dict[str, np.ndarray]:
        # What MLflow's wrapper feeds: one input takes the whole frame, several take a column each.
        if len(self.inputs) == 1:
            name, kind = self.inputs[0]
            return {name: frame.to_numpy(dtype=_ONNX_DTYPES.get(kind, "float32"))}
        return {
            name: frame[name].to_numpy(dtype=_ONNX_DTYPES.get(kind, "float32")).reshape(-1, 1)
            for name, kind in self.inputs
        }

    def predict_proba(self, frame: Any) -> np.ndarray:
        (out,) = self.session.run([self.proba_output], self._feeds(frame))
        if isinstance(out, list):  # ZipMap: one {class: probability} per row
            return np.array([[row[c] for c in self.classes_] for row in out], dtype="float64")
        return np.asarray(out, dtype="float64")

    def predict(self, frame: Any) -> np.ndarray:
        return np.asarray(self.classes_[self.predict_proba(frame).argmax(axis=1)])


_ONNX_DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(int64)": "int64"}
_ONNX_PROBA = ("tensor(float)", "tensor(double)")


def _onnx_classifier(model_dir: Path, meta: dict[str, Any], session: Any) -> tuple[list[Any], str] | None:
    """(classes, probability output name) of an ONNX classifier, else None."""
    proba = [
        o.name
        for o in session.get_outputs()
        if o.type.startswith("seq(map(")
        or (o.type in ("tensor(float)", "tensor(double)") and len(o.shape) == 2)
    ]
    if len(session.get_outputs()) != 2 or len(proba) != 1:
        return None
    import onnx
    from onnx import helper

    flavor = meta["flavors"].get("onnx") or {}
    path = model_dir / str(flavor.get("data", "model.onnx"))
    _inside(model_dir, flavor.get("data", "model.onnx"), str(model_dir), "its ONNX graph")
    graph = onnx.load(str(path), load_external_data=False).graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.name.startswith("classlabels_"):
                values = helper.get_attribute_value(attr)
                labels = [v.decode() if isinstance(v, bytes) else int(v) for v in values]
                if labels:
                    return labels, proba[0]
    return None


def _values(out: Any) -> np.ndarray:
    if isinstance(out, dict):
        if len(out) != 1:
            raise TypeError(f"the model returned {len(out)} named outputs ({', '.join(map(str, out))})")
        out = next(iter(out.values()))
    to_numpy = getattr(out, "to_numpy", None)
    return np.asarray(to_numpy() if to_numpy is not None else out)


def _load(model_dir: Path) -> Any:
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(str(model_dir), suppress_warnings=True)


def load_pyfunc_model(model_dir: Path, meta: dict[str, Any], *, ref: str) -> Any:
    """Load a version :func:`check_code_trust` let through.

    A pickled scikit-learn model comes back as the estimator itself (``predict_proba`` and all);
    anything else as a :class:`PyfuncModel` / :class:`PyfuncClassifier`. Load failures (a library
    missing, a broken file) become :class:`~mloop.errors.TrackingError` naming the version.
    """
    try:
        if "sklearn" in meta["flavors"]:
            import mlflow.sklearn

            return mlflow.sklearn.load_model(str(model_dir))
        pyfunc = _load(model_dir)
    except Exception as exc:  # an import error, a missing runtime, a corrupt file: the loader's own
        raise TrackingError(
            f"{ref} could not be loaded through MLflow ({type(exc).__name__}: {exc}). Check that the "
            "libraries it was logged with are installed in the serving image."
        ) from exc
    if meta["flavors"]["python_function"].get("loader_module") == "mlflow.onnx":
        try:
            if _onnx_classifier(model_dir, meta, pyfunc.get_raw_model()) is not None:
                return OnnxClassifier(model_dir, meta, pyfunc)
        except (OSError, ValueError, AttributeError) as exc:  # a graph onnx cannot parse: MLflow's path
            raise TrackingError(f"{ref}: its ONNX graph cannot be read ({exc}).") from exc
    cls = PyfuncClassifier if _output_classes(meta) else PyfuncModel
    return cls(model_dir, meta, pyfunc)
