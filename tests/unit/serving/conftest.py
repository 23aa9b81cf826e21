"""Fixtures for serving tests: small in-memory models (see serving_helpers)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mloop.tracking import LoadedModel
from testkit.toy_model import make_loaded


@pytest.fixture
def loaded_factory(tmp_path: Path) -> Callable[..., LoadedModel]:
    def build(version: int = 1, **kw: Any) -> LoadedModel:
        return make_loaded(tmp_path, version, **kw)

    return build


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
