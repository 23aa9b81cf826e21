"""The loop's trainer: what the controller asks of a training, behind a small protocol.

:class:`SubprocessTrainer` runs ``mloop train`` in a child process
(:func:`~mloop.control.retrain.spawn_training`); tests pass a scripted trainer, so the controller's
state machine is exercised without training a model. A trainer only starts, finds, polls and stops
trainings; the version a training registered is found in the registry by its ``mloop.cycle_id`` tag.
:func:`default_trainer` picks the loop's: :class:`~mloop.control.job_trainer.JobTrainer` (a Kubernetes
Job per cycle) when ``$MLOOP_TRAINING_JOB_TEMPLATE`` is set, else :class:`SubprocessTrainer`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from typing import Protocol

from mloop.config import Settings
from mloop.control import retrain
from mloop.store.leases import pid_alive

__all__ = ["SubprocessTrainer", "Trainer", "default_trainer"]


class Trainer(Protocol):
    """Start, find, poll and stop the training of a loop cycle."""

    def spawn(self, cycle_id: int, *, data: Path | None, reason: str, log_path: Path) -> int:
        """Start the training of ``cycle_id`` on ``data`` (None: the configured source); its pid."""
        ...

    def find(self, cycle_id: int) -> int | None:
        """The pid of a training of ``cycle_id`` still running (started by a loop that died), if any."""
        ...

    def poll(self, pid: int | None) -> bool:
        """True while training ``pid`` runs; once it has ended, its resources are released."""
        ...

    def stop(self, pid: int | None) -> None:
        """Kill training ``pid`` (and what it started) if it still runs."""
        ...


class SubprocessTrainer:
    """Trainings as ``mloop train`` child processes, each in its own session."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def spawn(self, cycle_id: int, *, data: Path | None, reason: str, log_path: Path) -> int:
        proc = retrain.spawn_training(
            self.settings, cycle_id=cycle_id, data=data, reason=reason, log_path=log_path
        )
        self._children[proc.pid] = proc
        return proc.pid

    def find(self, cycle_id: int) -> int | None:
        return retrain.find_training(self.settings, cycle_id)

    def poll(self, pid: int | None) -> bool:
        # Only the pid is checked while the child runs: cheap enough for every tick.
        child = self._children.get(pid or -1)
        running = child.poll() is None if child is not None else pid_alive(pid)
        if not running:
            self._reap(pid)
        return running

    def stop(self, pid: int | None) -> None:
        if pid and pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        self._reap(pid)

    def _reap(self, pid: int | None) -> None:
        child = self._children.pop(pid or -1, None)
        if child is not None:
            child.wait(timeout=30)


def default_trainer(settings: Settings) -> Trainer:
    """Kubernetes Jobs when ``$MLOOP_TRAINING_JOB_TEMPLATE`` is set (the loop pods of
    ``mloop deploy k8s|helm --training-jobs``), else child processes."""
    from mloop.deploy.job import JOB_TEMPLATE_ENV

    if os.environ.get(JOB_TEMPLATE_ENV):
        from mloop.control.job_trainer import JobTrainer

        return JobTrainer(settings)
    return SubprocessTrainer(settings)
