"""Rollout unit fixtures: a SQLite store, an in-memory prediction log and a fake registry."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mloop.config import Settings
from mloop.errors import ModelNotFound
from mloop.predlog import MemoryPredictionLog
from mloop.store import Store, open_store


@dataclass
class FakeVersion:
    version: int


class FakeRegistry:
    """The registry calls the controller makes, over a dict of aliases."""

    def __init__(self, versions: list[int], aliases: dict[str, int]) -> None:
        self.versions = versions
        self.aliases = dict(aliases)
        self.moves: list[tuple[str, int, str]] = []

    def get(self, ref: Any) -> FakeVersion:
        text = str(ref)
        if text.startswith("@"):
            found = self.by_alias(text[1:])
            if found is None:
                raise ModelNotFound(f"no alias {text}")
            return found
        v = int(text.lstrip("v"))
        if v not in self.versions:
            raise ModelNotFound(f"no version {v}")
        return FakeVersion(v)

    def by_alias(self, alias: str) -> FakeVersion | None:
        v = self.aliases.get(alias)
        return None if v is None else FakeVersion(v)

    def set_alias(self, alias: str, ref: Any, *, reason: str, actor: str = "mloop") -> FakeVersion:
        v = self.get(ref).version
        self.aliases[alias] = v
        self.moves.append((alias, v, actor))
        return FakeVersion(v)

    def delete_alias(self, alias: str, *, reason: str, actor: str = "mloop") -> None:
        self.aliases.pop(alias, None)
        self.moves.append((f"-{alias}", 0, actor))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(f"sqlite:///{tmp_path / 'mloop.db'}") as s:
        yield s


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry([1, 2, 3], {"champion": 1, "challenger": 2})


@pytest.fixture
def predlog() -> MemoryPredictionLog:
    return MemoryPredictionLog()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.model_validate(
        {
            "model": {"name": "fraud"},
            "rollout": {
                "steps": [10, 50, 100],
                "min_requests_per_step": 20,
                "min_labelled": 20,
                "max_wait_s": 3600,
                "quality_metric": "accuracy",  # the fake traffic logs no class probabilities
            },
        }
    )
