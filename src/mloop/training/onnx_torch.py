"""The PyTorch step of a pipeline inside the pipeline's ONNX graph.

:mod:`mloop.training.onnx_export` converts the whole pipeline with skl2onnx; for a
:class:`~mloop.training.torch_net.TorchClassifier` or ``TorchRegressor`` step it calls
:func:`register_torch_converter`, whose converter exports the step's network with
``torch.onnx.export`` and copies its nodes and weights into the graph skl2onnx is building, after the
preprocessing, then adds what the step's ``predict_proba``/``predict`` add on top of the network:

* classifier: ``Softmax`` of the logits as ``probabilities`` (float32, ``classes_`` order) and the
  ``label`` picked from ``classes_`` by ``ArgMax`` (int64 or string), the outputs every other exported
  classifier has and serving reads (:mod:`mloop.serving.fastpath.onnx`);
* regressor: the network's output back on the target's scale (``* y_scale_ + y_mean_``), computed in
  float64 so a target far from zero keeps its digits.

Why a registered converter rather than ``onnx.compose.merge_models`` of two graphs (the preprocessing
converted alone, then the network): the pipeline stays one conversion, so the fixes the export makes
to skl2onnx's preprocessing (float64 inputs, scaling and imputing as scikit-learn does, the missing
category marker), the declared output types and the verification apply unchanged, and names stay
unique because skl2onnx's scope hands them out. A merge would need a second entry point for the
preprocessing alone, prefixes to keep the two graphs' names apart, opsets reconciled, and the same
hand-written softmax/label head anyway.

Why the TorchScript-based exporter (``dynamo=False``): the newer ``torch.export`` one needs onnxscript,
which neither PyTorch nor ``mloop[onnx]`` installs. For the feed-forward networks tabular data gets,
both write the same ``Gemm``/``Relu`` graph. PyTorch deprecates the older exporter (its warning is
silenced here) but still ships it in the versions ``mloop[torch]`` allows.

What cannot be exported — an operator ONNX cannot express, a custom ``torch.autograd.Function``, a
network with several outputs or control flow (``If``/``Loop`` sub-graphs) — raises
:class:`TorchExportError` with the reason; the export records it as ``not available`` and serving keeps
the PyTorch path. A ``forward`` whose Python branches depend on the data is traced along one branch:
the holdout check refuses such a copy when it answers differently.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TorchExportError", "is_torch_step", "network_graph", "register_torch_converter"]

log = logging.getLogger(__name__)

_REGISTERED: set[type] = set()


class TorchExportError(RuntimeError):
    """The PyTorch network could not be put into the ONNX graph (the message says why)."""


def is_torch_step(estimator: Any) -> bool:
    """Whether ``estimator`` is one of mloop's PyTorch steps (``TorchClassifier``/``TorchRegressor``)."""
    return bool(getattr(type(estimator), "_mloop_torch_step", False))


def network_graph(step: Any, opset: int) -> Any:
    """The step's fitted network as an ``onnx.ModelProto``: one float32 input ``[N, n_features]``, one
    output (logits or the standardised value), exported in eval mode for ``opset``."""
    import onnx
    import torch

    module = step.__dict__.get("module_")
    if module is None:
        raise TorchExportError(f"the {type(step).__name__} has no network loaded (fit it first)")
    ref = step.module_reference()
    was_training = module.training
    module.eval()
    with tempfile.TemporaryDirectory(prefix="mloop-torch-onnx-") as tmp:
        path = Path(tmp) / "network.onnx"  # a path: what torch.onnx.export's signature promises
        try:
            # record=True keeps the exporter's warnings (its own deprecation, tracer notes) from
            # leaving here: under pytest's filterwarnings=error they would abort the export.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.onnx.export(
                    module,
                    (torch.zeros(2, int(step.n_features_in_), dtype=torch.float32),),
                    path,
                    input_names=["x"],
                    output_names=["y"],
                    dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
                    opset_version=opset,
                    do_constant_folding=True,
                    dynamo=False,
                )
            graph = onnx.load(str(path))
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise TorchExportError(
                f"torch.onnx.export could not export the network {ref}: {type(exc).__name__}: {first}"
            ) from exc
        finally:
            module.train(was_training)
    for w in caught:
        if not issubclass(w.category, DeprecationWarning):
            log.debug("exporting %s: %s: %s", ref, w.category.__name__, w.message)
    if len(graph.graph.input) != 1 or len(graph.graph.output) != 1:
        raise TorchExportError(
            f"the network {ref} exports with {len(graph.graph.input)} inputs and "
            f"{len(graph.graph.output)} outputs; mloop embeds a network of one input and one output"
        )
    return graph


def _embed(network: Any, x: str, scope: Any, container: Any) -> str:
    """Copy the network's weights and nodes into skl2onnx's graph, reading ``x``; returns the name of
    its output. Every name is renamed through the scope, so nothing clashes with the preprocessing."""
    from onnx import AttributeProto, helper, numpy_helper

    graph = network.graph
    opsets = {o.domain or "": o.version for o in network.opset_import}
    names = {graph.input[0].name: x, "": ""}
    for init in graph.initializer:
        names[init.name] = scope.get_unique_variable_name(f"torch_{init.name}")
        tensor = numpy_helper.from_array(numpy_helper.to_array(init))  # raw_data, whatever the source
        container.add_initializer(names[init.name], init.data_type, list(init.dims), tensor)
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise TorchExportError(f"the network uses the operator {node.domain}::{node.op_type}")
        attrs = {}
        for attr in node.attribute:
            if attr.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
                raise TorchExportError(
                    f"the network exports control flow ({node.op_type} with a sub-graph), "
                    "which mloop does not embed"
                )
            attrs[attr.name] = helper.get_attribute_value(attr)
        inputs = []
        for name in node.input:
            if name not in names:
                raise TorchExportError(f"the exported network reads {name!r} before writing it")
            inputs.append(names[name])
        for name in node.output:
            names[name] = scope.get_unique_variable_name(f"torch_{name.strip('/').replace('/', '_')}")
        container.add_node(
            node.op_type,
            inputs,
            [names[name] for name in node.output],
            op_version=opsets.get(""),
            name=scope.get_unique_operator_name(f"Torch{node.op_type}"),
            **attrs,
        )
    return names[graph.output[0].name]


def _convert(scope: Any, operator: Any, container: Any) -> None:
    """skl2onnx converter of a PyTorch step: network, then softmax + label, or the target's scale."""
    from onnx import TensorProto
    from skl2onnx.common._apply_operation import apply_cast
    from skl2onnx.common.data_types import FloatTensorType

    step = operator.raw_operator
    opset = int(container.target_opset)
    x = operator.inputs[0].full_name
    if not isinstance(operator.inputs[0].type, FloatTensorType):  # the network's weights are float32
        x32 = scope.get_unique_variable_name("torch_input")
        apply_cast(scope, x, x32, container, to=TensorProto.FLOAT)
        x = x32
    out = _embed(network_graph(step, opset), x, scope, container)
    if hasattr(step, "predict_proba"):
        label, proba = operator.outputs[0].full_name, operator.outputs[1].full_name
        container.add_node("Softmax", [out], [proba], name=scope.get_unique_operator_name("Softmax"), axis=1)
        index = scope.get_unique_variable_name("torch_argmax")
        container.add_node(
            "ArgMax", [out], [index], name=scope.get_unique_operator_name("ArgMax"), axis=1, keepdims=0
        )
        classes = np.asarray(step.classes_)
        labels = scope.get_unique_variable_name("torch_classes")
        if classes.dtype.kind in "biu":
            container.add_initializer(
                labels, TensorProto.INT64, [len(classes)], classes.astype(np.int64).tolist()
            )
        else:
            container.add_initializer(
                labels, TensorProto.STRING, [len(classes)], [str(c).encode("utf-8") for c in classes]
            )
        container.add_node(
            "Gather", [labels, index], [label], name=scope.get_unique_operator_name("Gather"), axis=0
        )
        return
    # The regressor's target was standardised for training: back to its scale in float64.
    names = [
        scope.get_unique_variable_name(n) for n in ("torch_y64", "torch_scale", "torch_mean", "torch_scaled")
    ]
    y64, scale, mean, scaled = names
    apply_cast(scope, out, y64, container, to=TensorProto.DOUBLE)
    container.add_initializer(scale, TensorProto.DOUBLE, [1], [float(step.y_scale_)])
    container.add_initializer(mean, TensorProto.DOUBLE, [1], [float(step.y_mean_)])
    container.add_node("Mul", [y64, scale], [scaled], name=scope.get_unique_operator_name("Mul"))
    container.add_node(
        "Add", [scaled, mean], [operator.outputs[0].full_name], name=scope.get_unique_operator_name("Add")
    )


def _shapes(operator: Any) -> None:
    """Outputs of :func:`_convert`: (label, float32 probabilities) or one float64 column."""
    from skl2onnx.common.data_types import (
        DoubleTensorType,
        FloatTensorType,
        Int64TensorType,
        StringTensorType,
    )

    n = operator.inputs[0].get_first_dimension()
    step = operator.raw_operator
    if hasattr(step, "predict_proba"):
        classes = np.asarray(step.classes_)
        if classes.dtype.kind not in "biuOUS":
            raise TorchExportError(
                f"class labels of dtype {classes.dtype} cannot be an ONNX label (integers or strings can)"
            )
        label = Int64TensorType([n]) if classes.dtype.kind in "biu" else StringTensorType([n])
        operator.outputs[0].type = label
        operator.outputs[1].type = FloatTensorType([n, len(classes)])
    else:
        operator.outputs[0].type = DoubleTensorType([n, 1])


def register_torch_converter(estimator: Any) -> None:
    """Register :func:`_convert` with skl2onnx for the class of a PyTorch step (once per class)."""
    cls = type(estimator)
    if cls in _REGISTERED or not is_torch_step(estimator):
        return
    from skl2onnx import update_registered_converter

    # A classifier takes skl2onnx's classifier options (export_onnx asks for zipmap=False), which also
    # makes skl2onnx's parser declare its two outputs, label and probabilities.
    options = (
        {"zipmap": [False, True], "nocl": [False, True]} if hasattr(estimator, "predict_proba") else None
    )
    update_registered_converter(cls, f"Mloop{cls.__name__}", _shapes, _convert, options=options)
    _REGISTERED.add(cls)
