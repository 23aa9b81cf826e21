"""``mloop init``: write a working project — ``mloop.yaml``, an editable ``train.py`` and sample data."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import pandas as pd

from mloop.config.names import NAME_RULE, is_valid_name, suggest_name
from mloop.errors import ConfigError, did_you_mean

__all__ = ["TEMPLATES", "init_project", "project_name"]

# tabular-torch: the fraud data with a PyTorch network (the torch extra; docs/pytorch.md).
TEMPLATES = ("fraud", "classification", "regression", "tabular-torch")


def _template(name: str) -> str:
    return importlib.resources.files("mloop.project").joinpath("templates", name).read_text(encoding="utf-8")


def _sample_data(template: str, rows: int, seed: int) -> dict[str, pd.DataFrame]:
    if template in ("fraud", "tabular-torch"):
        from mloop.data.synthetic import generate_fraud

        return {
            "transactions.csv": generate_fraud(rows, seed=seed),
            "transactions_shifted.csv": generate_fraud(rows, seed=seed + 1, scenario="covariate_shift"),
            "transactions_concept_drift.csv": generate_fraud(rows, seed=seed + 2, scenario="concept_drift"),
        }
    from sklearn.datasets import load_breast_cancer, load_diabetes

    loader = load_breast_cancer if template == "classification" else load_diabetes
    frame = loader(as_frame=True).frame  # bundled with scikit-learn: no download
    frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
    return {"train.csv": frame}


def project_name(directory: Path, name: str | None = None) -> str:
    """The project name: ``name``, else the directory's name; refused unless it is a valid name
    (:data:`mloop.config.names.NAME_PATTERN`), so nothing is written for a name the config would refuse."""
    chosen = name if name is not None else directory.resolve().name
    if is_valid_name(chosen):
        return chosen
    fix = suggest_name(chosen)
    source = "" if name is not None else " (the directory's name)"
    raise ConfigError(
        f"Project name {chosen!r}{source} is not valid: it must be {NAME_RULE}, because it names "
        f"Kubernetes objects, the Helm chart and the CI workflow. Run `mloop init {fix}`, or keep "
        f"the directory and pass `--name {fix}`."
    )


def init_project(
    directory: Path,
    *,
    template: str = "fraud",
    rows: int = 20_000,
    seed: int = 0,
    force: bool = False,
    name: str | None = None,
) -> list[Path]:
    """Create the project files in ``directory``; return the paths written.

    ``name`` is the project name (default: the directory's name). Every check runs before the first
    file is written."""
    if template not in TEMPLATES:
        raise ConfigError(
            f"Unknown template {template!r}.{did_you_mean(template, TEMPLATES)} "
            f"Templates: {', '.join(TEMPLATES)}."
        )
    project = project_name(directory, name)
    if (directory / "mloop.yaml").exists() and not force:
        raise ConfigError(
            f"{directory / 'mloop.yaml'} already exists; pass --force to overwrite it, or choose another "
            "directory."
        )
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "mloop.yaml"
    written = []
    # Quoted: a valid name such as "1.0" or "true" would otherwise read back as a number or a boolean.
    config.write_text(_template(f"{template}.yaml").format(project=json.dumps(project)), encoding="utf-8")
    written.append(config)
    train_py = directory / "train.py"
    train_py.write_text(_template(f"{template}_train.py.tmpl"), encoding="utf-8")
    written.append(train_py)
    data_dir = directory / "data"
    data_dir.mkdir(exist_ok=True)
    for name, frame in _sample_data(template, rows, seed).items():
        frame.to_csv(data_dir / name, index=False)
        written.append(data_dir / name)
    gitignore = directory / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text(".mloop/\n__pycache__/\n", encoding="utf-8")
        written.append(gitignore)
    try:
        from mloop.deploy.ci import render_workflow
    except ImportError:  # the deploy capability is optional at init time
        return written
    from mloop.config import load_settings

    workflow = directory / ".github" / "workflows" / "mloop.yml"
    workflow.parent.mkdir(parents=True, exist_ok=True)
    workflow.write_text(render_workflow(load_settings(config)), encoding="utf-8")
    written.append(workflow)
    # The workflow and the Dockerfile install with `pip install -c constraints.txt`: pin every
    # dependency to what this project was created with (kept if the directory already has one).
    from mloop.deploy.lock import LOCK_FILE, lock_text

    lock = directory / LOCK_FILE
    if not lock.exists():
        lock.write_text(lock_text(directory), encoding="utf-8")
        written.append(lock)
    return written
