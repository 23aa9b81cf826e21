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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mloop.config import Settings
from mloop.control.states import CYCLE_MACHINE, CycleState
from mloop.errors import MloopError
from mloop.monitoring.history import WINDOW_EVENT, window_history
from mloop.rollout.controller import RolloutController
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
            "monitoring": _window_view(window),
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
            "profile": _profile_view(files.get("profile")),
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
            }
        history = window_history(self.store, self.model, version, limit=limit)
        ts: list[float] = []
        columns: dict[str, dict[str, list[float | None]]] = {}
        quality: dict[str, list[float | None]] = {}
        rows: list[int] = []
        labelled: list[int] = []
        pred_drift: list[float | None] = []
        for n, w in enumerate(history):
            ts.append(_epoch(w.get("ts")))
            drift = w.get("drift") or {}
            for col, score in (drift.get("scores") or {}).items():
                entry = columns.setdefault(col, {"score": [None] * n, "threshold": [None] * n})
                entry["score"].append(score)
                entry["threshold"].append((drift.get("thresholds") or {}).get(col))
            for entry in columns.values():
                for series in entry.values():
                    series.extend([None] * (n + 1 - len(series)))
            q = w.get("quality") or {}
            for metric, value in (q.get("metrics") or {}).items():
                quality.setdefault(metric, [None] * n).append(value)
            for series in quality.values():
                series.extend([None] * (n + 1 - len(series)))
            rows.append(int(w.get("rows") or 0))
            labelled.append(int(q.get("labelled_rows") or 0))
            share = (w.get("prediction_drift") or {}).get("scores") or {}
            pred_drift.append(next(iter(share.values()), None) if share else None)
        return {
            "model": self.model,
            "version": str(version),
            "windows": len(history),
            "ts": ts,
            "columns": columns,
            "quality": quality,
            "rows": rows,
            "labelled": labelled,
            "prediction_drift": pred_drift,
            "last": _window_view(history[-1]) if history else None,
        }


def compare_to_reference(
    profile: dict[str, Any] | None, frame: Any, max_bars: int = 20
) -> list[dict[str, Any]]:
    """Per column, the share of rows in each reference bin (or category) for the reference and for
    ``frame`` (the current window), on the reference's own bins, so the two read side by side."""
    import numpy as np
    import pandas as pd

    out: list[dict[str, Any]] = []
    cols = (profile or {}).get("columns") or []
    for spec in cols.values() if isinstance(cols, dict) else cols:
        name = spec.get("name") if isinstance(spec, dict) else None
        if name is None or frame is None or name not in getattr(frame, "columns", ()):
            continue
        values = frame[name].dropna()
        if spec.get("levels"):
            raw = list(spec["levels"])[:max_bars]
            ref = [float(c) for c in (spec.get("level_counts") or [])][: len(raw)]
            if all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw):
                # discrete numbers (e.g. counts): match by value, so 2 finds the level 2.0
                seen = pd.to_numeric(values, errors="coerce").dropna().astype(float).value_counts()
                cur = [float(seen.get(float(v), 0)) for v in raw]
                labels = [f"{v:g}" for v in raw]
            else:
                seen = values.astype(str).value_counts()
                cur = [float(seen.get(str(v), 0)) for v in raw]
                labels = [str(v) for v in raw]
            # shares of all rows: values outside the shown levels count in the total, not in a bar
            ref_total = sum(float(c) for c in spec.get("level_counts") or []) + float(
                spec.get("other_count") or 0
            )
            cur_total = float(len(values))
        else:
            edges = [float(e) for e in spec.get("hist_edges") or []]
            if len(edges) < 2:
                continue
            ref = [float(c) for c in spec.get("hist_counts") or []][: len(edges) - 1]
            numbers = pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float)
            cur = np.histogram(np.clip(numbers, edges[0], edges[-1]), bins=edges)[0].astype(float).tolist()
            labels = [f"{edges[i]:.4g} to {edges[i + 1]:.4g}" for i in range(len(ref))]
            ref_total, cur_total = sum(ref), sum(cur)
        ref_share = [r / (ref_total or 1.0) for r in ref]
        cur_share = [c / (cur_total or 1.0) for c in cur[: len(ref)]]
        top = max(ref_share + cur_share, default=0.0) or 1.0
        out.append(
            {
                "name": name,
                "rows": len(values),
                "bars": [
                    {"label": lab, "reference": r, "current": c, "ref_h": r / top, "cur_h": c / top}
                    for lab, r, c in zip(labels, ref_share, cur_share, strict=False)
                ],
            }
        )
    return out


def _epoch(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            pass
    return 0.0


def _window_view(w: dict[str, Any] | None) -> dict[str, Any] | None:
    """The last monitoring window: drift verdict, live quality and the alerts it fired."""
    if not w:
        return None
    drift = w.get("drift") or {}
    q = w.get("quality") or {}
    return {
        "version": w.get("version"),
        "ts": w.get("ts"),
        "rows": w.get("rows"),
        "drifted": bool(drift.get("dataset_drifted")),
        "n_drifted": drift.get("n_drifted"),
        "n_tested": drift.get("n_tested"),
        "drifted_columns": drift.get("drifted_columns") or [],
        "quality": q.get("metrics") or {},
        "labelled_rows": q.get("labelled_rows"),
        "alerts": w.get("alerts") or [],
    }


def _profile_view(profile: dict[str, Any] | None, max_bars: int = 20) -> list[dict[str, Any]]:
    """Per column of the reference profile: its summary and histogram bars (numeric bins, or the
    most frequent categories) with heights relative to the tallest bar, for a small inline chart."""
    if not profile:
        return []
    cols = profile.get("columns") or []
    out = []
    for spec in cols.values() if isinstance(cols, dict) else cols:
        if not isinstance(spec, dict):
            continue
        if spec.get("levels"):
            pairs = sorted(
                zip(spec["levels"], spec.get("level_counts") or [], strict=False), key=lambda p: -p[1]
            )
            labels = [str(level) for level, _ in pairs[:max_bars]]
            counts = [int(c) for _, c in pairs[:max_bars]]
        else:
            edges = spec.get("hist_edges") or []
            counts = [int(c) for c in spec.get("hist_counts") or []]
            bins = range(min(len(counts), len(edges) - 1))
            labels = [f"{edges[i]:.4g} to {edges[i + 1]:.4g}" for i in bins]
            counts = counts[: len(labels)]
        top = max(counts, default=0) or 1
        count = int(spec.get("count") or 0)
        out.append(
            {
                "name": spec.get("name"),
                "kind": spec.get("kind"),
                "rows": count,
                "missing": (int(spec.get("n_missing") or 0) / count) if count else 0.0,
                "mean": spec.get("mean"),
                "std": spec.get("std"),
                "min": spec.get("min"),
                "max": spec.get("max"),
                "bars": [
                    {"label": label, "count": c, "height": c / top}
                    for label, c in zip(labels, counts, strict=True)
                ],
            }
        )
    return out
