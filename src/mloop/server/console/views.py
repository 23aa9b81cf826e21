"""What the console's pages show, as plain data read from the store and MLflow (no HTTP here).

Each function answers one page from the store's public API (rollouts, loop state, timeline pages,
monitoring windows) and the registry; the routes only render it. Reads that go to MLflow are few
per page: the aliases of the registered model (one call), one version with its run, and a version's
artifacts, downloaded once per version (versions never change) into a temporary directory.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mloop.config import Settings
from mloop.control.states import CYCLE_MACHINE, CycleState
from mloop.errors import MloopError
from mloop.monitoring.history import WINDOW_EVENT, window_history
from mloop.rollout.controller import RolloutController
from mloop.server.console.charts import compare_to_reference, monitoring_series, profile_view, window_view
from mloop.store import Store
from mloop.store.loop import LoopRepository
from mloop.store.records import Rollout

__all__ = ["CYCLE_FLOW", "ConsoleData", "rollout_view"]

CYCLE_FLOW = [
    CycleState.TRIGGERED,
    CycleState.TRAINING,
    CycleState.TRAINED,
    CycleState.AWAITING_APPROVAL,
    CycleState.ROLLING_OUT,
]
"""The cycle's states in their usual order, drawn as the state machine's path on the overview."""
REPLICAS_SEEN_S = 900
"""How far back the overview looks for serving replicas that reported rollout counters (15 minutes)."""
_PLOT = re.compile(r"[A-Za-z0-9_-]{1,100}\.png")


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.astimezone(UTC).isoformat(timespec="seconds")


def rollout_view(r: Rollout) -> dict[str, Any]:
    """A rollout as the overview shows it: arms with weights, and each check against its threshold."""
    analysis = r.analysis or {}
    checks = [
        {
            "name": c.get("name"),
            "passed": c.get("passed"),
            "value": c.get("value"),
            "threshold": c.get("threshold"),
            "detail": c.get("detail", ""),
        }
        for c in analysis.get("checks") or []
        if isinstance(c, dict)
    ]
    return {
        "id": r.id,
        "strategy": r.strategy,
        "state": str(r.state),
        "step": r.step,
        "percent": analysis.get("percent"),
        "candidate": r.candidate_version,
        "baseline": r.baseline_version,
        "reason": r.reason,
        "actor": r.actor,
        "created_at": _iso(r.created_at),
        "updated_at": _iso(r.updated_at),
        "ended_at": _iso(r.ended_at),
        "verdict": analysis.get("verdict"),
        "analysis_reason": analysis.get("reason"),
        "arms": [
            {"arm": a.arm, "version": a.version, "weight": a.weight, "shadow": a.shadow} for a in r.arms
        ],
        "checks": checks,
        "terminal": r.terminal,
    }


@dataclass
class ConsoleData:
    """Reads for the console of one model: a store and a registry kept open for the app's life."""

    settings: Settings
    store: Store
    registry: Any = None
    started_at: float = field(default_factory=time.time)
    _artifacts: dict[int, Path] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _tmp: Path | None = None
    _predlog: Any = None
    _plots: dict[int, list[str]] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return self.settings.model.name

    def _registry(self) -> Any:
        if self.registry is None:
            from mloop.tracking import Registry

            self.registry = Registry(self.settings, events=self.store)
        return self.registry

    def rollouts(self) -> RolloutController:
        """A controller on the console's store (actions and rollout reads); close it after use."""
        return RolloutController(self.settings, store=self.store, registry=self._registry())

    def close(self) -> None:
        if self._predlog is not None and hasattr(self._predlog, "close"):
            self._predlog.close()
            self._predlog = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    # -- overview ----------------------------------------------------------------------------------
    def aliases(self) -> dict[str, str]:
        """Alias -> version of the registered model (one MLflow call; empty before the first train)."""
        reg = self._registry()
        try:
            found = reg.client.get_registered_model(reg.name).aliases or {}
        except Exception:  # not registered yet: an empty console, not an error page
            return {}
        return {str(k): str(v) for k, v in sorted(found.items())}

    def overview(self, service: Any = None) -> dict[str, Any]:
        """Everything the overview shows (also ``GET /ui/api/overview``)."""
        aliases = self.aliases()
        ctl = self.rollouts()
        try:
            active = ctl.current()
            latest = active or ctl.latest()
            dep = ctl.deployment()
            since = datetime.now(UTC) - timedelta(seconds=REPLICAS_SEEN_S)
            replicas = ctl.repo.replicas(self.model, since)
        finally:
            ctl.close()
        loop = LoopRepository(self.store, CYCLE_MACHINE)
        cycle = loop.active(self.model)
        last_cycles = loop.cycles(self.model, limit=1)
        windows = self.store.events(kind=WINDOW_EVENT, limit=1)
        window = windows[0].data if windows else None
        serving: dict[str, Any] = {
            "champion": aliases.get("champion"),
            "challenger": aliases.get("challenger"),
            "aliases": aliases,
            "previous": dep.previous_version if dep else None,
            "champion_since": _iso(dep.updated_at) if dep else None,
            "uptime_s": round(time.time() - self.started_at),
            "process": None,
            # Replicas report through the counters of a rollout (from their first request in it, every
            # rollout.refresh_s), so a replica started since the last rollout is not seen here.
            "replicas": [{"process": p, "last_report": _iso(ts), "requests": n} for p, ts, n in replicas],
            "replicas_window_s": REPLICAS_SEEN_S,
        }
        if service is not None:
            serving["uptime_s"] = round(time.time() - service.started_at)
            serving["process"] = {
                "state": service.state,
                "arms": [
                    {"arm": r.arm, "version": r.runtime.version, "weight": r.weight, "shadow": r.shadow}
                    for r in service.router.routes
                ],
            }
        return {
            "model": self.model,
            "generated_at": _iso(datetime.now(UTC)),
            "serving": serving,
            "rollout": rollout_view(active) if active is not None else None,
            "last_rollout": rollout_view(latest) if latest is not None and active is None else None,
            "cycle": None if cycle is None else self._cycle(cycle),
            "last_cycle": None if cycle is not None or not last_cycles else self._cycle(last_cycles[0]),
            "cycle_flow": [s.value for s in CYCLE_FLOW],
            "paused": loop.paused(self.model),
            "approval": self.settings.control.approval,
            "monitoring": window_view(window),
        }

    @staticmethod
    def _cycle(c: Any) -> dict[str, Any]:
        return {
            "id": c.id,
            "state": str(c.state),
            "trigger": c.trigger_kind,
            "reason": c.reason,
            "version": c.version,
            "rollout_id": c.rollout_id,
            "updated_at": _iso(c.updated_at),
            "terminal": c.terminal,
        }

    # -- model versions ----------------------------------------------------------------------------
    def versions(self, limit: int = 200) -> list[dict[str, Any]]:
        """Versions newest first with aliases and gate verdict (one MLflow search; no run reads)."""
        reg = self._registry()
        try:
            found = reg.client.search_model_versions(f"name = '{reg.name}'", max_results=limit)
        except Exception:
            return []
        aliases: dict[str, list[str]] = {}
        for alias, version in self.aliases().items():
            aliases.setdefault(version, []).append(alias)
        out = [
            {
                "version": int(mv.version),
                "aliases": aliases.get(str(mv.version), []),
                "gate": (mv.tags or {}).get("mloop.gate"),
                "created_at": _iso(datetime.fromtimestamp((mv.creation_timestamp or 0) / 1000, UTC)),
                "run_id": mv.run_id,
            }
            for mv in found
        ]
        return sorted(out, key=lambda v: v["version"], reverse=True)

    def model_card(self, version: int) -> dict[str, Any]:
        """The model card of ``version``: holdout metrics, gate decision, lineage, contract,
        reference profile summary, evaluation and the rollouts it took part in."""
        info = self._registry().get(version)
        files = self._files(info.version)
        about = self.store.events(kind="gate", subject=f"model:{self.model}/v{info.version}", limit=1)
        gate = about[0] if about else None
        ctl = self.rollouts()
        try:
            rollouts = [
                rollout_view(r)
                for r in ctl.repo.list(self.model, limit=200)
                if any(a.version == str(info.version) for a in r.arms)
            ]
        finally:
            ctl.close()
        contract = files.get("contract") or {}
        return {
            "model": self.model,
            "version": info.version,
            "aliases": list(info.aliases),
            "status": info.status,
            "created_at": _iso(datetime.fromtimestamp(info.created_at / 1000, UTC)),
            "metrics": dict(sorted(info.metrics.items())),
            "gate": {
                "verdict": info.tags.get("mloop.gate"),
                "kind": gate.kind if gate else None,
                "reason": gate.reason if gate else None,
                "actor": gate.actor if gate else None,
                "ts": _iso(gate.ts) if gate else None,
            },
            "lineage": info.lineage,
            "tags": {k: v for k, v in sorted(info.tags.items())},
            "contract": contract.get("columns") or [],
            "target": contract.get("target"),
            "profile": profile_view(files.get("profile")),
            "evaluation": files.get("evaluation"),
            "rollouts": rollouts,
            "plots": self.plots(info.version),
            "run_url": self.run_url(info.run_id),
        }

    def plots(self, version: int) -> list[str]:
        """Names of the evaluation plots the version's run logged in MLflow (``plots/*.png``)."""
        with self._lock:
            if version in self._plots:
                return self._plots[version]
        info = self._registry().get(version)
        names: list[str] = []
        if info.run_id:
            try:
                found = self._registry().client.list_artifacts(info.run_id, "plots")
            except Exception:  # no run, or an artifact store this process cannot reach
                found = []
            names = sorted(
                Path(a.path).name for a in found if _PLOT.fullmatch(Path(a.path).name) and not a.is_dir
            )
        with self._lock:
            self._plots[version] = names
        return names

    def plot(self, version: int, name: str) -> Path | None:
        """The local copy of one of :meth:`plots` (downloaded once); None if it is not one of them."""
        if name not in self.plots(version):
            return None
        target = self._scratch() / f"plots-v{version}" / name
        if not target.is_file():
            import mlflow

            info = self._registry().get(version)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                got = mlflow.artifacts.download_artifacts(
                    run_id=info.run_id,
                    artifact_path=f"plots/{name}",
                    dst_path=str(target.parent),
                    tracking_uri=str(self.settings.tracking_uri),
                )
            except Exception:
                return None
            if Path(got) != target and Path(got).is_file():
                Path(got).replace(target)
        return target if target.is_file() else None

    def _scratch(self) -> Path:
        with self._lock:
            if self._tmp is None:
                self._tmp = Path(tempfile.mkdtemp(prefix="mloop-console-"))
                atexit.register(self.close)
            return self._tmp

    def run_url(self, run_id: str | None) -> str | None:
        """A link to the run in the MLflow UI when the tracking server speaks HTTP, else None."""
        uri = str(self.settings.tracking_uri)
        if run_id is None or not uri.startswith(("http://", "https://")):
            return None
        return f"{uri.rstrip('/')}/#/runs/{run_id}"

    def _files(self, version: int) -> dict[str, Any]:
        """The version's contract, profile and evaluation (downloaded once per version)."""
        with self._lock:
            path = self._artifacts.get(version)
            if path is None:
                if self._tmp is None:
                    self._tmp = Path(tempfile.mkdtemp(prefix="mloop-console-"))
                    atexit.register(self.close)
                try:
                    _, path = self._registry().download(version, self._tmp / f"v{version}")
                except MloopError:
                    return {}
                self._artifacts[version] = path
        out: dict[str, Any] = {}
        for key, name in (
            ("contract", "contract.json"),
            ("profile", "profile.json"),
            ("evaluation", "evaluation.json"),
        ):
            for candidate in (path / "extra_files" / name, path / name):
                if candidate.is_file():
                    with contextlib.suppress(OSError, ValueError):
                        out[key] = json.loads(candidate.read_text(encoding="utf-8"))
                    break
        return out

    # -- monitoring --------------------------------------------------------------------------------
    def current_window(self, version: str | None = None) -> dict[str, Any]:
        """The newest ``monitoring.window_rows`` predictions of ``version`` (default: the champion)
        against the version's reference profile, column by column."""
        version = version or self.aliases().get("champion")
        if version is None or not str(version).isdigit():
            return {"version": version, "rows": 0, "columns": []}
        files = self._files(int(version))
        if self._predlog is None:
            from mloop.predlog import open_prediction_log

            self._predlog = open_prediction_log(self.settings.prediction_log_url)
        frame = self._predlog.read(
            model_name=self.model, model_version=str(version), last_n=self.settings.monitoring.window_rows
        )
        return {
            "version": str(version),
            "rows": len(frame),
            "columns": compare_to_reference(files.get("profile"), frame) if len(frame) else [],
        }

    def monitoring(self, version: str | None = None, limit: int = 200) -> dict[str, Any]:
        """Drift per column over time with thresholds, quality and labelled rows per window."""
        version = version or self.aliases().get("champion")
        if version is None:
            return {
                "model": self.model,
                "version": None,
                "windows": 0,
                "ts": [],
                "columns": {},
                "quality": {},
                "predictions": {"kind": None, "windows": 0, "series": {}},
            }
        history = window_history(self.store, self.model, version, limit=limit)
        return {"model": self.model, "version": str(version), **monitoring_series(history)}
