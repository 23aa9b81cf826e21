"""``kill -9`` the closed loop at each state of a cycle, restart it, and check that it resumes.

Each case runs the real controller in a real process (``loop_kill_driver.py``: real training child,
real canary rollout, real store and MLflow registry), lets it pause at one point of the cycle, sends it
SIGKILL, and starts a fresh process. The restarted loop must finish the cycle having trained exactly
once for the trigger, started one rollout, created no second cycle, and left exactly one champion
(the new version) with ``previous`` at the one it replaced and no stale ``challenger``.

The cases share one project (training v1 costs seconds): each case is a new trigger on top of the
previous one's champion. One case kills a single cycle at every point in turn (each restart must pick
up where the last process died); the others kill once in the windows between two writes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from loop_support import make_project

from mloop.control.retrain import CYCLE_TAG
from mloop.control.states import CYCLE_MACHINE
from mloop.rollout.states import ROLLOUT_MACHINE
from mloop.store import open_store, pid_alive
from mloop.store.loop import LoopRepository
from mloop.store.rollouts import RolloutStore
from mloop.tracking import Registry

DRIVER = Path(__file__).with_name("loop_kill_driver.py")

# (where the process is paused and killed, the cycle state the store shows at that moment)
KILL_POINTS = [
    ("triggered", "triggered"),
    ("spawned", "triggered"),  # training child running, its pid not recorded yet
    ("training", "training"),
    ("trained", "trained"),
    ("rollout_started", "trained"),  # rollout created, cycle not moved yet
    ("rolling_out", "rolling_out"),
    ("promoting", "rolling_out"),  # rollout claimed the promotion, no alias moved
    ("champion_moved", "rolling_out"),  # champion moved, previous/challenger not yet
    ("rollout_promoted", "rolling_out"),  # rollout promoted, cycle not yet
]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("loop-kill") / "p"
    # The gates let every retrain through: this test is about crashes, and forests of 12, 13, ... trees
    # on 2,000 rows land on either side of a 0.75 ROC AUC threshold and of the champion's score.
    gates = {"thresholds": {"roc_auc": 0.5}, "min_improvement": -1.0}
    settings = make_project(root, control={"max_retrains": 100, "backoff_s": 0}, gates=gates)
    import yaml

    cfg = yaml.safe_load((root / "mloop.yaml").read_text())
    # A canary of two steps: the driver reports traffic, so each analysis passes and, the second one promotes.
    cfg["rollout"] = {
        "strategy": "canary",
        "steps": [50.0, 100.0],
        "min_requests_per_step": 100,
        "step_hold_s": 0.0,
        "auto_advance": False,
        # The driver reports requests, never labels: the canary is promoted as unverified at once.
        "label_wait_s": 0.0,
        "unlabelled_policy": "promote_unverified",
    }
    (root / "mloop.yaml").write_text(yaml.safe_dump(cfg))
    return settings


def _driver(config: Path, key: str, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOOP_")}
    return subprocess.Popen(
        [sys.executable, str(DRIVER), str(config), key, *extra],
        env=env,
        cwd=config.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _versions_of(registry: Registry, cycle_id: int) -> list[int]:
    return [v.version for v in registry.versions() if v.tags.get(CYCLE_TAG) == str(cycle_id)]


def _kill_at(config: Path, key: str, point: str, marker: Path, request: pytest.FixtureRequest) -> None:
    """Start a loop process that pauses at ``point``, wait until it is there, and SIGKILL it."""
    marker.unlink(missing_ok=True)
    proc = _driver(config, key, point, str(marker))
    request.addfinalizer(lambda: proc.poll() is None and proc.kill())
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if not marker.exists():
        proc.kill()
        raise AssertionError(f"the loop never paused at {point}: {proc.communicate(timeout=10)}")
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL


def _run_to_the_end(config: Path, key: str, request: pytest.FixtureRequest) -> None:
    proc = _driver(config, key)
    request.addfinalizer(lambda: proc.poll() is None and proc.kill())
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    assert out.strip() == "promoted", err[-3000:]


def _check_resumed(project: Any, key: str, champion_before: int) -> None:
    """The cycle of ``key`` promoted its version exactly once and left one consistent champion."""
    name = project.model.name
    store = open_store(project.store_url)
    try:
        repo, registry, rollouts = (
            LoopRepository(store, CYCLE_MACHINE),
            Registry(project),
            RolloutStore(store, ROLLOUT_MACHINE),
        )
        # one trigger, one cycle (and one loop.triggered event)
        cycles = [c for c in repo.cycles(name, limit=1000) if c.trigger_key == key]
        assert len(cycles) == 1
        done = cycles[0]
        assert done.state == "promoted", f"{done.state}: {done.reason}"
        triggered = store.events(kind="loop.triggered", limit=1000)
        assert len([e for e in triggered if e.subject.endswith(f"/cycle-{done.id}")]) == 1
        assert repo.active(name) is None
        # trained once: one version carries the cycle's tag, and no training is left running
        assert _versions_of(registry, done.id) == [int(done.version)]
        assert not pid_alive(done.pid)
        # rolled out once, promoted; exactly one champion (the new version), previous = the replaced one
        mine = [r for r in rollouts.list(name, limit=100) if r.candidate_version == done.version]
        assert [(r.id, r.state) for r in mine] == [(done.rollout_id, "promoted_unverified")]
        aliases = {a: v.version for v in registry.versions() for a in v.aliases}
        assert aliases == {"champion": int(done.version), "previous": champion_before}
        deployment = rollouts.deployment(name)
        assert deployment is not None and deployment.champion_version == done.version
        assert deployment.active_rollout_id in (None, done.rollout_id)
    finally:
        store.close()


def _another_model(config: Path) -> None:
    """One more tree for this case's retraining: the same model on the same source would be a twin of
    the champion the previous case promoted, which training registers as unchanged (nothing to roll out)."""
    import yaml

    cfg = yaml.safe_load(config.read_text())
    cfg["model"]["params"]["n_estimators"] = int(cfg["model"]["params"]["n_estimators"]) + 1
    config.write_text(yaml.safe_dump(cfg))


def _cycle_of(project: Any, key: str) -> Any:
    with open_store(project.store_url) as store:
        found = [
            c for c in LoopRepository(store, CYCLE_MACHINE).cycles(project.model.name) if c.trigger_key == key
        ]
    assert len(found) == 1, f"{len(found)} cycles for {key}"
    return found[0]


def test_killed_at_every_state_in_turn_the_cycle_still_completes_once(
    project: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """One cycle, SIGKILLed at each point in turn: every restart resumes it from where it was."""
    config, key = project.root / "mloop.yaml", "manual:kill-each-state"
    _another_model(config)
    registry = Registry(project)
    champion_before = registry.by_alias("champion").version
    for point, state in KILL_POINTS:
        _kill_at(config, key, point, tmp_path / "paused", request)
        cycle = _cycle_of(project, key)
        assert cycle.state == state, f"killed at {point}"  # the crash happened where we meant it to
        assert len(_versions_of(registry, cycle.id)) <= 1, f"trained twice after a kill at {point}"
    _run_to_the_end(config, key, request)
    _check_resumed(project, key, champion_before)


@pytest.mark.parametrize("point", ["spawned", "rollout_started", "champion_moved"])
def test_killed_once_between_two_writes_then_restarted(
    project: Any, tmp_path: Path, request: pytest.FixtureRequest, point: str
) -> None:
    """A single crash in the windows where a step has happened but is not recorded yet."""
    config, key = project.root / "mloop.yaml", f"manual:kill-{point}"
    _another_model(config)
    champion_before = Registry(project).by_alias("champion").version
    _kill_at(config, key, point, tmp_path / "paused", request)
    _run_to_the_end(config, key, request)
    _check_resumed(project, key, champion_before)
