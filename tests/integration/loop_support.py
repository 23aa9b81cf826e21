"""Shared by the closed-loop tests: a project factory and a store-backed scripted rollout driver.

The scripted driver is a test double for :class:`mloop.control.RolloutDriver`: it promotes (or rolls
back) after a fixed number of analyses, keeping its progress in the store so that it survives a
``kill -9`` of the process driving it, exactly like the real rollouts do.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from mloop.config import Settings, load_settings


def make_project(
    root: Path, *, control: dict[str, Any] | None = None, gates: dict[str, Any] | None = None
) -> Settings:
    """A fraud project (2,000 rows, a 10-tree forest) with v1 trained as champion."""
    from mloop.project import init_project
    from mloop.training import train

    init_project(root, template="fraud", rows=2000)
    cfg = yaml.safe_load((root / "mloop.yaml").read_text())
    cfg["model"]["estimator"] = "random_forest"
    cfg["model"]["params"] = {"n_estimators": 10}
    cfg["control"] = {"interval_s": 0.2, "retrain_data": "source", **(control or {})}
    if gates:
        cfg["gates"].update(gates)
    (root / "mloop.yaml").write_text(yaml.safe_dump(cfg))
    settings = load_settings(root / "mloop.yaml")
    train(settings)
    # The loop's retrains read the same source: with the same model they would be twins of v1, which
    # `mloop train` registers without an alias (nothing to roll out). Two more trees make them differ.
    cfg["model"]["params"] = {"n_estimators": 12}
    (root / "mloop.yaml").write_text(yaml.safe_dump(cfg))
    return load_settings(root / "mloop.yaml")


class ScriptedRollouts:
    """Promotes after ``steps`` analyses (or rolls back when ``outcome='rolled_back'``)."""

    def __init__(self, settings: Settings, store: Any, *, steps: int = 2, outcome: str = "promoted") -> None:
        from mloop.store.loop import LoopState
        from mloop.tracking import Registry

        self.repo = LoopState(store)
        self.registry = Registry(settings, events=store)
        self.steps, self.outcome = steps, outcome

    def start(self, version: str, reason: str) -> int:
        rid = int(time.time() * 1000) % 1_000_000_000
        self.repo.set_state(f"scripted:{rid}", {"version": version, "done": 0})
        return rid

    def advance(self, rollout_id: int) -> tuple[str, str]:
        st = self.repo.get_state(f"scripted:{rollout_id}")
        st["done"] += 1
        self.repo.set_state(f"scripted:{rollout_id}", st)
        if st["done"] < self.steps:
            return "running", f"step {st['done']}"
        if self.outcome == "promoted":
            self.registry.set_alias("champion", st["version"], reason="scripted promotion", actor="test")
        return self.outcome, "scripted"


def wait_terminal(controller: Any, cycle_id: int, timeout: float = 180.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        controller.tick()
        cycle = controller.repo.get(cycle_id)
        if cycle.terminal:
            return cycle
        time.sleep(0.2)
    raise AssertionError(f"cycle {cycle_id} not finished after {timeout} s: {controller.repo.get(cycle_id)}")
