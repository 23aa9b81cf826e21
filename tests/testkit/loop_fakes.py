"""The registry the loop's controller reads, as an in-memory double: the two reads it makes (the
versions, to find a cycle's; one version) and a way for a test to register one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mloop.control.retrain import CYCLE_TAG


@dataclass
class Version:
    version: int
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()


class Registry:
    """Versions in ``found``; ``register`` adds one made by a cycle with its gate verdict."""

    def __init__(self) -> None:
        self.found: list[Version] = []

    def versions(self) -> list[Version]:
        return list(self.found)

    def get(self, ref: Any) -> Version:
        return next(v for v in self.found if str(v.version) == str(ref))

    def register(self, cycle_id: int, version: int, gate: str, *aliases: str) -> None:
        self.found.append(Version(version, {CYCLE_TAG: str(cycle_id), "mloop.gate": gate}, aliases))
