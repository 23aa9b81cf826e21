"""The training pipeline as separate steps: load → validate → train → evaluate → register.

``mloop train`` runs them in one process. Orchestrators that want each step as its own task (the
Kubeflow pipeline of :mod:`mloop.deploy.kubeflow`, the CI workflow's data-validation job) call them
one by one through ``mloop pipeline step NAME``, passing files between steps:
a Parquet file of rows after ``load``/``validate``, a JSON result after ``train``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mloop.config import Settings
from mloop.errors import DeployError, TrainingError

__all__ = ["STEPS", "evaluate_step", "load_step", "register_step", "train_step", "validate_step"]

STEPS = ("load", "validate", "train", "evaluate", "register")
"""The steps, in order."""


def _read_rows(path: Path | None, settings: Settings) -> Any:
    import pandas as pd

    from mloop.data import load_source

    if path is None:
        return load_source(settings.source, root=settings.root)
    if not path.is_file():
        raise DeployError(
            f"Input rows {str(path)!r} do not exist; run the previous step (`mloop pipeline step load`)."
        )
    return pd.read_parquet(path)


def _write_json(path: Path | None, data: dict[str, Any]) -> dict[str, Any]:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    return data


def load_step(settings: Settings, out: Path) -> int:
    """Read the configured source into a Parquet file; return the number of rows."""
    frame = _read_rows(None, settings)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out, index=False)
    return len(frame)


def validate_step(settings: Settings, data: Path | None = None, out: Path | None = None) -> dict[str, Any]:
    """Validate rows against the data contract (``contract.path``, else the champion's, else one
    inferred from these rows); write the rows that pass to ``out``. Raises ``ContractViolation``."""
    from mloop.data import DataContract, infer_contract, validate
    from mloop.tracking.registry import CONTRACT_FILE, Registry

    frame = _read_rows(data, settings)
    contract = None
    source = "inferred from these rows"
    if settings.contract.path:
        contract = DataContract.load(settings.resolve_path(settings.contract.path))
        source = settings.contract.path
    else:
        registry = Registry(settings)
        if registry.by_alias("champion") is not None:
            contract = DataContract.from_dict(registry.load("@champion").contract)
            source = f"champion's {CONTRACT_FILE}"
    if contract is None:
        contract = infer_contract(
            frame,
            target=settings.model.target,
            task=settings.model.task,
            drop_columns=settings.model.drop_columns,
            max_categories=settings.contract.max_categories,
        )
    checked = validate(frame, contract, settings.contract, require_target=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        checked.data.to_parquet(out, index=False)
    return {"rows_in": len(frame), "rows_out": len(checked.data), "contract": source}


def train_step(settings: Settings, data: Path | None, out: Path | None = None) -> dict[str, Any]:
    """Train on the validated rows (logs, registers and gates one version); write the result as JSON."""
    from mloop.training import train

    result = train(settings, data=_read_rows(data, settings), actor="pipeline", reason="pipeline training")
    return _write_json(
        out,
        {
            "run_id": result.run_id,
            "version": result.version,
            "metric": result.metric,
            "metrics": result.metrics,
            "gate": result.gate.to_dict(),
            "aliases": result.aliases,
        },
    )


def _read_result(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DeployError(
            f"Cannot read the train step's result {str(path)!r}: {exc}. "
            "Run `mloop pipeline step train` first."
        ) from exc
    return data


def evaluate_step(settings: Settings, result: Path, out: Path | None = None) -> dict[str, Any]:
    """Holdout metrics of the trained version; raises ``TrainingError`` if its gate did not pass."""
    trained = _read_result(result)
    gate = trained.get("gate") or {}
    if not gate.get("passed"):
        raise TrainingError(
            f"Version {trained.get('version')} failed its gate: {gate.get('reason', 'no reason recorded')}."
        )
    return _write_json(
        out, {"version": trained["version"], "metric": trained["metric"], "metrics": trained["metrics"]}
    )


def register_step(settings: Settings, result: Path, out: Path | None = None) -> dict[str, Any]:
    """Confirm the version is in the registry with its aliases; write its ``models:/`` URI."""
    from mloop.tracking.registry import Registry

    trained = _read_result(result)
    if trained.get("version") is None:
        raise TrainingError("The train step registered no version; see its log.")
    info = Registry(settings).get(int(trained["version"]))
    return _write_json(out, {"model_uri": info.ref, "version": info.version, "aliases": list(info.aliases)})
