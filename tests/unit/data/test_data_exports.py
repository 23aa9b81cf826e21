"""Every public name of mloop.data is exported, documented and importable from its module."""

from __future__ import annotations

import importlib

import mloop.data

MODULES = (
    "coerce",
    "contract",
    "formats",
    "http_source",
    "report",
    "schema",
    "sources",
    "sql_source",
    "synthetic",
)


def test_package_exports_resolve_and_are_documented() -> None:
    assert mloop.data.__doc__
    for name in mloop.data.__all__:
        obj = getattr(mloop.data, name)
        if callable(obj):
            assert obj.__doc__, f"{name} has no docstring"


def test_each_module_has_a_docstring_and_valid_all() -> None:
    for short in MODULES:
        module = importlib.import_module(f"mloop.data.{short}")
        assert module.__doc__, short
        for name in module.__all__:
            assert hasattr(module, name), f"mloop.data.{short}.__all__ lists missing {name!r}"


def test_contract_module_offers_the_whole_contract_api() -> None:
    from mloop.data import contract

    for name in (
        "ColumnSpec",
        "DataContract",
        "ValidationResult",
        "Violation",
        "ViolationReport",
        "coerce_frame",
        "infer_contract",
        "validate",
    ):
        assert name in contract.__all__
