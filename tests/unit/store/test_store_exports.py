"""Every public name of the store and the prediction log is exported and documented."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("package", ["mloop.store", "mloop.predlog"])
def test_all_names_exist_and_are_documented(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__doc__ and len(module.__doc__) > 100
    for name in module.__all__:
        obj = getattr(module, name)
        if callable(obj):
            assert obj.__doc__, f"{package}.{name} has no docstring"
    assert len(set(module.__all__)) == len(module.__all__), "duplicate names in __all__"
