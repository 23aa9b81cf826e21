"""PyTorch weights and code references under the trust policy: tensors only, trusted classes only."""

from __future__ import annotations

import builtins
import io
import pickle
from pathlib import Path
from typing import Any

import pytest

from mloop.errors import ModelRefused, TrackingError
from testkit.torch_nets import write_nets

torch = pytest.importorskip("torch", reason="needs the torch extra: pip install 'mloop[torch]'")

from mloop.tracking.torch_io import (  # noqa: E402  (after the skip: it is about torch)
    ALLOWED_MODULES,
    SPEC_FORMAT,
    build_module,
    state_from_bytes,
    state_to_bytes,
)

NETS = """
from torch import nn


class Net(nn.Module):
    def __init__(self, n_features, n_outputs, hidden=4):
        super().__init__()
        self.a = nn.Linear(n_features, hidden)
        self.b = nn.Linear(hidden, n_outputs)

    def forward(self, x):
        return self.b(self.a(x).relu())


class NotAModule:
    def __init__(self, **kwargs):
        pass
"""


@pytest.fixture
def nets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module of networks importable under a fresh name (never imported before the test)."""
    return write_nets(tmp_path, monkeypatch, NETS)


def _spec(ref: str, **init: Any) -> dict[str, Any]:
    return {"format": SPEC_FORMAT, "module": ref, "init": {"n_features": 3, "n_outputs": 2, **init}}


class _Payload:
    """Unpickling this calls ``exec``: what a tampered weights file would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


def _weights(nets: str, **init: Any) -> bytes:
    import importlib

    cls = importlib.import_module(nets).Net
    return state_to_bytes(cls(3, 2, **init).state_dict())


def test_weights_round_trip_as_tensors(nets: str) -> None:
    data = _weights(nets)
    state = state_from_bytes(data)
    assert set(state) == {"a.weight", "a.bias", "b.weight", "b.bias"}
    assert all(isinstance(v, torch.Tensor) for v in state.values())


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_a_pickle_payload_in_the_weights_is_refused_and_never_runs(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "pwned"
    if how == "torch.save":
        buffer = io.BytesIO()
        torch.save({"a.weight": _Payload(marker)}, buffer)
        data = buffer.getvalue()
    else:
        data = pickle.dumps(_Payload(marker))
    with pytest.raises(ModelRefused, match="not plain tensors") as caught:
        state_from_bytes(data, "models:/m/1")
    assert how == "pickle" or "GLOBAL exec" in caught.value.message  # the refused global is named
    assert not marker.exists()


def test_weights_that_are_not_a_tensor_mapping_are_refused() -> None:
    buffer = io.BytesIO()
    torch.save([torch.zeros(2)], buffer)
    with pytest.raises(ModelRefused, match="mapping of names to tensors"):
        state_from_bytes(buffer.getvalue())
    with pytest.raises(ModelRefused, match="not bytes"):
        state_from_bytes("weights")  # a str where a crafted file put one
    with pytest.raises(TrackingError):  # not a torch file at all: refused or unreadable, never loaded
        state_from_bytes(b"not a torch file")
    with pytest.raises(TrackingError, match="cannot be read"):
        state_from_bytes(buffer.getvalue()[:40])  # a truncated archive


def test_an_untrusted_class_is_refused_before_it_is_imported(nets: str) -> None:
    import sys

    with pytest.raises(ModelRefused) as caught:
        build_module(_spec(f"{nets}.Net"), _weights(nets), trusted=[], where="models:/m/3")
    message = caught.value.message
    assert "models:/m/3" in message and f"`model.trusted_types: [{nets}.Net]`" in message
    assert caught.value.types == (f"{nets}.Net",)
    sys.modules.pop(nets, None)  # _weights imported it; the refusal must not need to
    with pytest.raises(ModelRefused):
        build_module(_spec(f"{nets}.Net"), b"", trusted=["other.Net"])
    assert nets not in sys.modules


def test_a_trusted_class_is_rebuilt_with_its_weights_in_eval_mode(nets: str) -> None:
    data = _weights(nets, hidden=5)
    module = build_module(_spec(f"{nets}.Net", hidden=5), data, trusted=[f"{nets}.Net"])
    assert not module.training
    expected = state_from_bytes(data)
    assert all(torch.equal(v, expected[k]) for k, v in module.state_dict().items())


def test_weights_of_another_shape_fail_with_a_retrain_hint(nets: str) -> None:
    with pytest.raises(TrackingError, match="does not take the saved weights"):
        build_module(_spec(f"{nets}.Net", hidden=7), _weights(nets), trusted=[f"{nets}.Net"])


@pytest.mark.parametrize("ref", ["os.system", "subprocess.Popen", "builtins.eval", "importlib.import_module"])
def test_never_trusted_names_stay_refused_even_when_listed(ref: str) -> None:
    with pytest.raises(ModelRefused):
        build_module(_spec(ref), b"", trusted=[ref])


def test_a_trusted_name_that_is_not_a_module_class_is_refused(nets: str) -> None:
    with pytest.raises(ModelRefused, match=r"not a torch\.nn\.Module"):
        build_module(_spec(f"{nets}.NotAModule"), b"", trusted=[f"{nets}.NotAModule"])


@pytest.mark.parametrize(
    "spec",
    [
        None,
        {"format": 99, "module": "a.B", "init": {}},
        {"format": SPEC_FORMAT, "module": "no_dots", "init": {}},
        {"format": SPEC_FORMAT, "module": "a.B; import os", "init": {}},
        {"format": SPEC_FORMAT, "module": "a.B", "init": ["x"]},
    ],
)
def test_a_malformed_spec_is_refused(spec: Any) -> None:
    with pytest.raises(ModelRefused):
        build_module(spec, b"", trusted=["a.B"])


def test_in_process_copies_rebuild_only_from_classes_already_imported(nets: str) -> None:
    import sys

    data = _weights(nets)  # imports the module
    assert build_module(_spec(f"{nets}.Net"), data, trusted=None) is not None
    sys.modules.pop(nets)
    with pytest.raises(ModelRefused, match="has not imported"):
        build_module(_spec(f"{nets}.Net"), data, trusted=None)
    assert nets not in sys.modules


def test_mloop_s_own_mlp_is_trusted_by_default() -> None:
    from mloop.training.torch_modules import MLP

    assert "mloop.training.torch_modules.MLP" in ALLOWED_MODULES
    data = state_to_bytes(MLP(3, 2, hidden=4).state_dict())
    spec = _spec("mloop.training.torch_modules.MLP", hidden=4)
    assert isinstance(build_module(spec, data, trusted=[]), MLP)
