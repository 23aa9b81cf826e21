"""Where the serving layer gets model versions: the MLflow registry, or anything with the same shape.

:class:`ModelSource` is the two calls serving needs — which version an alias points at, and load a
version — so the service can be driven by the real registry (:class:`RegistrySource`) or by an
in-memory source in tests (:class:`StaticSource`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from mloop.config import Settings
from mloop.errors import ModelNotFound
from mloop.tracking import LoadedModel, Registry
from mloop.tracking.registry import EventSink

__all__ = ["ModelSource", "RegistrySource", "StaticSource"]


class ModelSource(Protocol):
    """What the serving layer needs from a registry."""

    name: str

    def resolve(self, alias: str) -> int | None:
        """The version ``alias`` points at now, or None when it points nowhere."""
        ...

    def load(self, ref: str | int) -> LoadedModel:
        """Load a version (``3``) or an alias (``@champion``) with its artifacts."""
        ...


class RegistrySource:
    """Versions of one registered model in MLflow (``models:/NAME@alias``)."""

    def __init__(
        self, settings: Settings, *, name: str | None = None, events: EventSink | None = None
    ) -> None:
        self.registry = Registry(settings, events=events, name=name)
        self.name = self.registry.name

    def resolve(self, alias: str) -> int | None:
        info = self.registry.by_alias(alias)
        return None if info is None else info.version

    def load(self, ref: str | int) -> LoadedModel:
        return self.registry.load(ref)


class StaticSource:
    """Versions held in memory; ``aliases`` can be moved by the test driving it."""

    def __init__(
        self,
        name: str,
        versions: dict[int, LoadedModel | Callable[[], LoadedModel]],
        aliases: dict[str, int] | None = None,
    ) -> None:
        self.name = name
        self.versions = versions
        self.aliases = dict(aliases or {})

    def resolve(self, alias: str) -> int | None:
        return self.aliases.get(alias)

    def load(self, ref: str | int) -> LoadedModel:
        text = str(ref)
        version = self.aliases.get(text[1:]) if text.startswith("@") else int(text.lstrip("v"))
        if version is None or version not in self.versions:
            raise ModelNotFound(f"Model {self.name!r} has no version or alias {text!r}.")
        item = self.versions[version]
        return item() if callable(item) else item
