"""PyTorch networks inside a saved model: weights as tensors only, code by a trusted reference.

A PyTorch step of a pipeline (:class:`mloop.training.torch_net.TorchClassifier` and its regressor
twin) is saved inside the pipeline's skops file as two plain values: its **weights**, the module's
``state_dict`` written by ``torch.save`` (tensors only), and a **spec**, JSON values naming the
module class by import path (``train.MLP``) with its init arguments. No pickle of the network, its
optimizer or its code is ever written or read:

* weights load with ``torch.load(weights_only=True)``, PyTorch's restricted unpickler, which builds
  tensors and plain containers and refuses any other global (a file carrying a pickle payload is
  refused with :class:`~mloop.errors.ModelRefused`, nothing of it runs);
* the module class is imported only when the policy of :mod:`mloop.tracking.model_io` trusts its
  import path: mloop's own :data:`ALLOWED_MODULES`, or a name the project lists in
  ``model.trusted_types`` (exact names, the ones :data:`~mloop.tracking.model_io.NEVER_TRUSTED`
  refuses always), the same rule as a skops file's types and a user estimator's functions.

:func:`restore_networks` is called by :func:`~mloop.tracking.model_io.load_sklearn_model` once
skops built the pipeline, before the model is handed to anyone. A pickled step (``deepcopy``, the
batch workers' scorer: the process's own objects) comes back with its network, its class trusted as
it was where it was pickled. A step loaded by another tool (``mlflow.pyfunc``) rebuilds itself lazily
with ``trusted=None``: only from a class the process already imported, never importing code on its
own. torch is imported here only when a model holds such a step.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from mloop.errors import ModelRefused, TrackingError
from mloop.tracking.project_code import import_project_module, loaded_project_module

__all__ = [
    "ALLOWED_MODULES",
    "SPEC_FORMAT",
    "build_module",
    "code_references",
    "refused_references",
    "restore_networks",
    "state_from_bytes",
    "state_to_bytes",
]

#: Module classes trusted without being listed: mloop's own, which hold nothing but layers.
ALLOWED_MODULES: frozenset[str] = frozenset({"mloop.training.torch_modules.MLP"})
#: Version of the spec a PyTorch step saves (``{"format", "module", "init"}``).
SPEC_FORMAT = 1
INSTALL_HINT = (
    "Install PyTorch's CPU build, then the extra: pip install torch --index-url "
    "https://download.pytorch.org/whl/cpu && pip install 'mloop[torch]'."
)
# A class by import path: dotted module, then the class name (``train.MLP``, ``pkg.nets.Tabular``).
_REF = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", re.ASCII)


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise TrackingError(
            f"This model holds a PyTorch network, and PyTorch is not installed. {INSTALL_HINT}"
        ) from exc
    return torch


def _steps(model: Any) -> Iterator[Any]:
    """``model`` and every estimator nested in its params (pipeline steps, column transformers)."""
    yield model
    get_params = getattr(model, "get_params", None)
    if get_params is None:
        return
    try:
        params = get_params(deep=True)
    except Exception:  # an estimator whose params cannot be read holds no PyTorch step we know
        return
    for value in params.values():
        if hasattr(value, "get_params"):
            yield value


def _networks(model: Any) -> list[Any]:
    return [s for s in _steps(model) if getattr(type(s), "_mloop_torch_step", False)]


def code_references(model: Any) -> list[str]:
    """Import paths of the module classes the PyTorch steps of ``model`` are rebuilt from."""
    return sorted({str(s.module_reference()) for s in _networks(model)})


def refused_references(model: Any, trusted: Sequence[str] = ()) -> list[str]:
    """The code references of ``model`` the policy refuses (checked at save time too)."""
    from mloop.tracking.model_io import refused_types

    return refused_types(code_references(model), [*trusted, *ALLOWED_MODULES])


def state_to_bytes(state: Mapping[str, Any]) -> bytes:
    """A module's ``state_dict`` as bytes: ``torch.save`` of tensors (copied to contiguous CPU)."""
    torch = _torch()
    buffer = io.BytesIO()
    torch.save({str(k): v.detach().cpu().contiguous() for k, v in state.items()}, buffer)
    return buffer.getvalue()


def state_from_bytes(data: bytes, where: str = "the model") -> dict[str, Any]:
    """Weights back from :func:`state_to_bytes`, through PyTorch's weights-only unpickler.

    Anything but a mapping of names to tensors is refused with :class:`ModelRefused`.
    """
    torch = _torch()
    if not isinstance(data, bytes | bytearray):
        raise ModelRefused(f"{where}: the PyTorch weights are {type(data).__name__}, not bytes; not loaded.")
    try:
        with warnings.catch_warnings():
            # torch warns about a pickle protocol it did not write, then its unpickler decides.
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [s.strip() for s in str(exc).splitlines()]
        why = next((s for s in lines if "Unsupported" in s), lines[0] if lines else "")
        raise ModelRefused(
            f"{where} carries PyTorch weights that are not plain tensors: the weights-only loader refused "
            f"them ({why.split(' Please use')[0]}). A weights file may hold tensors only; this one was "
            "not written by mloop, so nothing of it is loaded. Retrain the model with `mloop train`."
        ) from exc
    except Exception as exc:  # truncated or not a torch file at all
        raise TrackingError(
            f"{where}: the PyTorch weights cannot be read ({type(exc).__name__}: {exc}). "
            "Retrain the model with `mloop train`."
        ) from exc
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelRefused(f"{where}: the PyTorch weights are not a mapping of names to tensors; not loaded.")
    return state


def _check_spec(spec: Any, where: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(spec, dict) or spec.get("format") != SPEC_FORMAT:
        raise ModelRefused(
            f"{where}: the PyTorch step's spec is not format {SPEC_FORMAT} ({spec!r:.200}); "
            "retrain the model with this mloop."
        )
    ref, init = spec.get("module"), spec.get("init")
    if not isinstance(ref, str) or not _REF.fullmatch(ref):
        raise ModelRefused(f"{where}: the PyTorch module reference {ref!r:.200} is not a dotted import path.")
    if not isinstance(init, dict) or not all(isinstance(k, str) for k in init):
        raise ModelRefused(f"{where}: the init arguments of {ref} are not a JSON object.")
    json.dumps(init)  # JSON values only (they came from skops' JSON): fails loudly otherwise
    return ref, init


def _module_class(ref: str, trusted: Sequence[str] | None, where: str) -> type:
    from mloop.tracking.model_io import refused_types

    module_name, _, class_name = ref.rpartition(".")
    if trusted is None:
        # In-process copies and foreign loaders: only a class the process already imported.
        module = loaded_project_module(module_name)
        if module is None or refused_types([ref], [ref]):
            raise ModelRefused(
                f"{where}: its PyTorch network is built from {ref}, which this process has not imported. "
                "Load the model through mloop (Registry.load or load_sklearn_model), which imports it "
                "only when `model.trusted_types` lists it.",
                (ref,),
            )
    else:
        if refused_types([ref], [*trusted, *ALLOWED_MODULES]):
            raise ModelRefused(
                f"{where} rebuilds its PyTorch network from the class {ref}, code mloop does not trust. "
                "mloop imports a network's class only when the project lists it. If this model is yours "
                f"and you trust that code, add to mloop.yaml: `model.trusted_types: [{ref}]`.",
                (ref,),
            )
        try:  # the loading project's own file (Registry.load opens project_imports)
            module = import_project_module(module_name)
        except Exception as exc:
            raise TrackingError(
                f"{where}: cannot import {module_name!r} for its PyTorch network {ref} "
                f"({type(exc).__name__}: {exc})"
            ) from exc
    cls = getattr(module, class_name, None)
    torch = _torch()
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ModelRefused(
            f"{where}: {ref} is not a torch.nn.Module class; the network is not built.", (ref,)
        )
    return cls


def build_module(spec: Any, state: Any, trusted: Sequence[str] | None, where: str = "the model") -> Any:
    """The module of a saved PyTorch step, in eval mode: class checked by the policy, weights loaded.

    ``trusted`` is ``model.trusted_types``; ``None`` accepts only classes already imported.
    """
    ref, init = _check_spec(spec, where)
    cls = _module_class(ref, trusted, where)
    weights = state_from_bytes(state, where)
    try:
        module = cls(**init)
        module.load_state_dict(weights, strict=True)
    except Exception as exc:
        raise TrackingError(
            f"{where}: {ref}({', '.join(f'{k}={v!r}' for k, v in init.items())}) does not take the saved "
            f"weights ({type(exc).__name__}: {exc}). The class changed since training; retrain the model."
        ) from exc
    return module.eval()


def restore_networks(model: Any, trusted: Sequence[str] | None, where: str = "the model") -> None:
    """Rebuild every PyTorch step of a freshly loaded ``model`` under the policy (a no-op for others)."""
    for step in _networks(model):
        step.restore_network(trusted, where)
