"""PyTorch networks as scikit-learn estimators, trained through skorch, saved without pickle.

:class:`TorchClassifier` and :class:`TorchRegressor` take a ``torch.nn.Module`` class (or its
import path) and its keyword arguments, and fit it inside mloop's pipeline, after the same
preprocessing every model gets (imputation, scaling, one-hot), so serving still receives raw records.

Why skorch: it is the maintained scikit-learn wrapper for PyTorch (fit loop, batching, optimizer and
criterion wiring, history), so mloop writes no training loop of its own. The thin wrapper around it
adds what a served model needs and skorch leaves to the caller: inputs cast to ``float32``, labels
encoded (string classes work) and ``classes_`` kept, a regression target standardised, seeded
training, and above all a safe save: skorch's own persistence is pickle, and a model file from the
registry must never run code. So the fitted network is kept as its weights (``torch.save`` of the
``state_dict``: tensors only) plus a JSON spec naming the module class by import path; loading goes
through :mod:`mloop.tracking.torch_io` (weights-only unpickler, class imported only when trusted).
Predictions call the module directly (no skorch at serving), in eval mode, under ``inference_mode``.

The module is called as ``module(n_features=..., n_outputs=..., **module_params)``: ``n_features``
is the number of columns after preprocessing, ``n_outputs`` the number of classes (logits; the
loss is cross-entropy) or 1 for a regression (mean squared error). Example, in the project's
``train.py`` (and ``model.trusted_types: [train.Net]`` in ``mloop.yaml``)::

    class Net(torch.nn.Module):
        def __init__(self, n_features, n_outputs, hidden=32):
            super().__init__()
            self.layers = torch.nn.Sequential(
                torch.nn.Linear(n_features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, n_outputs)
            )

        def forward(self, x):
            return self.layers(x)

    def build_model(task="classification", seed=42, **params):
        return TorchClassifier(Net, {"hidden": 32}, random_state=seed, **params)
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import NotFittedError

from mloop.errors import TrainingError
from mloop.tracking.project_code import import_project_module
from mloop.tracking.torch_io import INSTALL_HINT, SPEC_FORMAT, build_module, state_to_bytes

__all__ = ["OPTIMIZERS", "TorchClassifier", "TorchRegressor"]

#: ``optimizer`` names and the ``torch.optim`` class each stands for.
OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "rmsprop": "RMSprop"}
# Rows per forward pass at prediction time: bounds memory on a batch-scoring run of millions.
_CHUNK = 65_536
_FITTED = ("classes_", "n_features_in_", "torch_spec_", "torch_state_", "train_loss_", "y_mean_", "y_scale_")


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise TrainingError(f"A PyTorch estimator needs PyTorch and skorch. {INSTALL_HINT}") from exc
    return torch


def _skorch() -> Any:
    try:
        import skorch
    except ImportError as exc:
        raise TrainingError(f"A PyTorch estimator is trained through skorch. {INSTALL_HINT}") from exc
    return skorch


class _TorchEstimator(BaseEstimator):  # type: ignore[misc]  # scikit-learn ships no type hints
    """What the classifier and the regressor share: params, fit through skorch, save, predict.

    ``module``: the ``torch.nn.Module`` class or its import path; ``module_params``: its keyword
    arguments beside ``n_features``/``n_outputs`` (JSON values). ``max_epochs``, ``lr``,
    ``batch_size``, ``weight_decay`` and ``optimizer`` (a name from :data:`OPTIMIZERS`) go to skorch;
    ``random_state`` seeds the weights, dropout and shuffling. ``threads``: PyTorch intra-op threads
    while fitting and predicting (``None`` keeps PyTorch's setting). ``verbose``: skorch's epoch log.
    """

    _mloop_torch_step: ClassVar[bool] = True  # found by mloop.tracking.torch_io.restore_networks

    def __init__(
        self,
        module: type | str = "mloop.training.torch_modules.MLP",
        module_params: dict[str, Any] | None = None,
        *,
        max_epochs: int = 20,
        lr: float = 1e-3,
        batch_size: int = 128,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        random_state: int | None = None,
        threads: int | None = 1,
        verbose: int = 0,
    ) -> None:
        self.module = module
        self.module_params = module_params
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.random_state = random_state
        self.threads = threads
        self.verbose = verbose

    # -- the hooks of each task ---------------------------------------------------------------
    def _target(self, y: Any) -> tuple[np.ndarray, int]:
        """The target as skorch wants it, and the module's ``n_outputs``."""
        raise NotImplementedError

    def _net(self, skorch: Any, torch: Any) -> tuple[Any, Any]:
        """The skorch net class and the loss."""
        raise NotImplementedError

    # -- code reference ---------------------------------------------------------------------
    def module_reference(self) -> str:
        """The module class's import path (``train.MLP``), what the saved spec names."""
        spec = self.__dict__.get("torch_spec_")
        if isinstance(spec, dict) and isinstance(spec.get("module"), str):
            return str(spec["module"])
        module = self.module
        if isinstance(module, str):
            return module.replace(":", ".")
        if not isinstance(module, type) or module.__qualname__ != module.__name__:
            raise TrainingError(
                f"{type(self).__name__}(module={module!r}): give a torch.nn.Module class defined at the "
                "top level of a module (e.g. class MLP in train.py), or its import path 'train.MLP'; "
                "serving rebuilds the network from that path."
            )
        return f"{module.__module__}.{module.__name__}"

    def _module_class(self) -> type:
        torch = _torch()
        module = self.module
        if isinstance(module, str):
            path, _, name = module.replace(":", ".").rpartition(".")
            try:  # from the project being trained (pipeline.train opens project_imports)
                module = getattr(import_project_module(path), name)
            except (ImportError, AttributeError, ValueError) as exc:
                raise TrainingError(
                    f"Cannot import the PyTorch module class {self.module!r}: {exc}."
                ) from exc
        if not (isinstance(module, type) and issubclass(module, torch.nn.Module)):
            raise TrainingError(
                f"{type(self).__name__}(module={self.module!r}) is not a torch.nn.Module subclass."
            )
        return module

    # -- fit ----------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> _TorchEstimator:
        """Train the module through skorch on all rows (mloop keeps its own holdout)."""
        torch, skorch = _torch(), _skorch()
        x = _float32(X)
        ref, cls = self.module_reference(), self._module_class()
        params = dict(self.module_params or {})
        try:
            json.dumps(params)
        except TypeError as exc:
            raise TrainingError(
                f"module_params of {ref} must be JSON values (numbers, strings, lists, objects): the saved "
                f"model rebuilds the network from them without pickle. {exc}."
            ) from exc
        if self.optimizer not in OPTIMIZERS:
            raise TrainingError(f"optimizer {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}.")
        target, n_outputs = self._target(y)
        init = {"n_features": int(x.shape[1]), "n_outputs": n_outputs, **params}
        net_class, criterion = self._net(skorch, torch)
        net = net_class(
            cls,
            criterion=criterion,
            optimizer=getattr(torch.optim, OPTIMIZERS[self.optimizer]),
            optimizer__weight_decay=self.weight_decay,
            lr=self.lr,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            train_split=None,
            iterator_train__shuffle=True,
            verbose=self.verbose,
            device="cpu",
            **{f"module__{k}": v for k, v in init.items()},
        )
        # Seeded without touching the process's own generator (the served model must not change it).
        # One intra-op thread by default: a small network's matrices are too small to split, and
        # threads that spin-wait on a busy machine made an epoch ten times slower (docs/pytorch.md).
        threads = torch.get_num_threads()
        with torch.random.fork_rng(devices=[]):
            if self.random_state is not None:
                torch.manual_seed(self.random_state)
            if self.threads:
                torch.set_num_threads(self.threads)
            try:
                net.fit(x, target)
            finally:
                torch.set_num_threads(threads)
        self.module_ = net.module_.eval()
        self.n_features_in_ = int(x.shape[1])
        self.torch_spec_ = {"format": SPEC_FORMAT, "module": ref, "init": init}
        self.torch_state_ = state_to_bytes(self.module_.state_dict())
        self.train_loss_ = [float(v) for v in net.history[:, "train_loss"]]
        return self

    # -- predict ------------------------------------------------------------------------------
    def restore_network(self, trusted: Sequence[str] | None, where: str = "the model") -> None:
        """Rebuild the module from the saved spec and weights (``torch_io.build_module``)."""
        self.module_ = build_module(
            self.__dict__.get("torch_spec_"), self.__dict__.get("torch_state_"), trusted, where
        )

    def _outputs(self, X: Any) -> np.ndarray:
        if "torch_spec_" not in self.__dict__:
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit first.")
        if self.__dict__.get("module_") is None:
            self.restore_network(None, f"this {type(self).__name__}")
        torch = _torch()
        x = _float32(X)
        # At most one per core: the value may come from a model file.
        threads = min(int(self.threads), os.cpu_count() or 1) if self.threads else 0
        if threads > 0 and torch.get_num_threads() != threads:
            # Set for the calling thread and left so (serving calls from its worker threads; a
            # restore would race between them). Two spin-waiting threads on a busy 2-core machine
            # took 24 ms for 100 rows, one thread 0.1 ms (docs/pytorch.md); threads=None opts out.
            torch.set_num_threads(threads)
        with torch.inference_mode():
            parts = [
                self.module_(torch.from_numpy(x[i : i + _CHUNK])) for i in range(0, max(len(x), 1), _CHUNK)
            ]
        return np.asarray(torch.cat(parts).numpy(), dtype="float64")

    # -- saving -------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        """Params and fitted values only: the live module is dropped (its weights are ``torch_state_``)."""
        state = {k: v for k, v in self.__dict__.items() if k != "module_"}
        if not isinstance(state.get("module"), str):
            state["module"] = self.module_reference()
        return state

    def __reduce__(self) -> tuple[Any, tuple[type, dict[str, Any]]]:
        """Pickle (copies, batch workers) rebuilds through :func:`_unpickle`; skops never calls this."""
        return _unpickle, (type(self), self.__getstate__())

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Known params and fitted values only; the module is rebuilt by ``restore_network``."""
        known = set(inspect.signature(_TorchEstimator.__init__).parameters) - {"self"} | set(_FITTED)
        self.__dict__.update({k: v for k, v in state.items() if k in known})
        self.module_ = None


class TorchClassifier(ClassifierMixin, _TorchEstimator):  # type: ignore[misc]
    """A PyTorch classifier: the module returns one logit per class, trained with cross-entropy."""

    def _target(self, y: Any) -> tuple[np.ndarray, int]:
        classes, encoded = np.unique(np.asarray(y), return_inverse=True)
        if len(classes) < 2:
            raise TrainingError(
                f"A classifier needs at least two classes; the target has {classes.tolist()}."
            )
        self.classes_ = classes
        return encoded.astype("int64"), len(classes)

    def _net(self, skorch: Any, torch: Any) -> tuple[Any, Any]:
        return skorch.NeuralNetClassifier, torch.nn.CrossEntropyLoss

    def predict_proba(self, X: Any) -> np.ndarray:
        logits = self._outputs(X)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        proba: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
        return proba

    def predict(self, X: Any) -> np.ndarray:
        classes: np.ndarray = self.classes_[self.predict_proba(X).argmax(axis=1)]
        return classes


class TorchRegressor(RegressorMixin, _TorchEstimator):  # type: ignore[misc]
    """A PyTorch regressor: one output, trained with mean squared error on the standardised target."""

    def _target(self, y: Any) -> tuple[np.ndarray, int]:
        values = np.asarray(y, dtype="float64")
        self.y_mean_ = float(values.mean())
        self.y_scale_ = float(values.std()) or 1.0
        return ((values - self.y_mean_) / self.y_scale_).astype("float32").reshape(-1, 1), 1

    def _net(self, skorch: Any, torch: Any) -> tuple[Any, Any]:
        return skorch.NeuralNetRegressor, torch.nn.MSELoss

    def predict(self, X: Any) -> np.ndarray:
        out: np.ndarray = self._outputs(X)[:, 0] * self.y_scale_ + self.y_mean_
        return out


def _unpickle(cls: type[_TorchEstimator], state: dict[str, Any]) -> _TorchEstimator:
    """A pickled step back, with its network: the pickle is this process's own object (``deepcopy``,
    the batch workers' scorer), whose class it had already trusted. A model *file* never gets here:
    skops builds the step through ``__setstate__``, and this function is on no allowlist."""
    step = cls.__new__(cls)
    step.__setstate__(state)
    if "torch_spec_" in state:
        step.restore_network([step.module_reference()], f"a copy of a {cls.__name__}")
    return step


def _float32(X: Any) -> np.ndarray:
    """The preprocessed features as one contiguous float32 array (what the module's weights are)."""
    if hasattr(X, "toarray"):  # a sparse matrix from a one-hot encoder
        X = X.toarray()
    return np.ascontiguousarray(np.asarray(X, dtype="float32"))
