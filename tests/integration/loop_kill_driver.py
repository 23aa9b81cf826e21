"""A loop process for the kill tests: ``python loop_kill_driver.py CONFIG TRIGGER_KEY [PAUSE_AT MARKER]``.

It builds the real :class:`~mloop.control.Controller` (real training subprocess, real rollouts through
:mod:`mloop.rollout`, real store and MLflow registry; it writes the serving processes' request
counters itself, as if each analysis had seen traffic), creates a manual cycle for ``TRIGGER_KEY`` (a
restart finds the one already there: one trigger, one cycle) and runs ``Controller.run`` until the
cycle ends, then prints its final state.

With ``PAUSE_AT``, the process stops dead at that point of the cycle, writes ``MARKER`` and waits to be
killed; the points are the states a cycle is moved to (paused right after the transition committed)
and the instants between two writes where a crash hurts most:

* ``spawned``: the training child started, its pid not yet recorded (the cycle is still ``triggered``);
* ``rollout_started``: the rollout exists, the cycle is not ``rolling_out`` yet;
* ``promoting``: the rollout claimed the promotion, no alias moved yet;
* ``champion_moved``: ``champion`` moved, ``challenger``/``previous`` not yet;
* ``rollout_promoted``: the rollout is promoted, the cycle is not yet.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any


def main() -> None:
    config, trigger_key = sys.argv[1], sys.argv[2]
    pause_at, marker = (sys.argv[3], Path(sys.argv[4])) if len(sys.argv) > 4 else (None, None)

    from mloop.config import load_settings
    from mloop.control import Controller, RolloutDriver, Trigger
    from mloop.control.trainer import SubprocessTrainer
    from mloop.rollout.promotion import Promotions
    from mloop.rollout.states import ROLLOUT_MACHINE
    from mloop.store.rollouts import RolloutStore
    from mloop.tracking import Registry

    def pause(point: str) -> None:
        if point == pause_at and marker is not None:
            marker.write_text(point)
            while True:  # wait for SIGKILL
                time.sleep(60)

    move, spawn = Controller._move, SubprocessTrainer.spawn
    start, advance = RolloutDriver.start, RolloutDriver.advance
    finish, set_alias = Promotions.finish, Registry.set_alias

    def paused_move(self: Any, cycle: Any, state: str, reason: str, **kw: Any) -> Any:
        moved = move(self, cycle, state, reason, **kw)
        pause(state)
        return moved

    def paused_spawn(self: Any, *args: Any, **kw: Any) -> int:
        pid = spawn(self, *args, **kw)
        pause("spawned")
        return pid

    def paused_start(self: Any, version: str, reason: str) -> int:
        rollout_id = start(self, version, reason)
        pause("rollout_started")
        return rollout_id

    served = [0]

    def paused_advance(self: Any, rollout_id: int) -> tuple[str, str]:
        # Stand-in for the serving processes: each analysis sees 1,000 more error-free requests per arm.
        served[0] += 1000
        counts = {"champion": (served[0], 0), "canary": (served[0], 0)}
        RolloutStore(self.store, ROLLOUT_MACHINE).write_counters(rollout_id, "loop-kill-test", counts)
        state, reason = advance(self, rollout_id)
        if state in ("promoted", "promoted_unverified"):
            pause("rollout_promoted")
        return state, reason

    def paused_finish(self: Any, r: Any, **kw: Any) -> Any:
        pause("promoting")
        return finish(self, r, **kw)

    def paused_set_alias(self: Any, alias: str, ref: Any, **kw: Any) -> Any:
        info = set_alias(self, alias, ref, **kw)
        if alias == "champion":
            pause("champion_moved")
        return info

    Controller._move = paused_move
    SubprocessTrainer.spawn = paused_spawn
    RolloutDriver.start = paused_start
    RolloutDriver.advance = paused_advance
    Promotions.finish = paused_finish
    Registry.set_alias = paused_set_alias

    settings = load_settings(config)
    ctrl = Controller(settings)
    cycle = ctrl.start_cycle(Trigger("manual", trigger_key, f"kill test {trigger_key}"))
    if cycle is None:  # restarted: the trigger already has its cycle
        cycle = next(c for c in ctrl.repo.cycles(settings.model.name) if c.trigger_key == trigger_key)
    else:
        pause("triggered")
    stop = threading.Event()
    loop = threading.Thread(target=ctrl.run, args=(stop,), daemon=True)
    loop.start()
    deadline = time.monotonic() + 240
    while not ctrl.repo.get(cycle.id).terminal and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    loop.join(30)
    print(ctrl.repo.get(cycle.id).state)


if __name__ == "__main__":
    main()
