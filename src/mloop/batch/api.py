"""``batch_predict``: resolve the model, open input and output, and run the chosen engine.

The model reference takes the forms ``@champion`` / ``3`` (the project's model) or ``NAME@alias`` /
``NAME/3`` (another registered model). A job is pinned to the version it resolved: resuming an
interrupted job scores with the same version even if the alias has moved since.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mloop.batch.inputs import open_input
from mloop.batch.local import BatchReport, Progress, run_local
from mloop.batch.outputs import JOB_FILE, FileOutput, open_output
from mloop.batch.sampling import PredictionSampler
from mloop.batch.scorer import Scorer
from mloop.config.settings import Settings
from mloop.errors import ConfigError

__all__ = ["batch_predict", "load_scorer", "parse_model_ref"]


def parse_model_ref(text: str, default_name: str) -> tuple[str, str]:
    """``"@champion"`` → (default, "@champion"); ``"fraud@challenger"`` → ("fraud", "@challenger");
    ``"fraud/3"`` → ("fraud", "3"); ``"3"`` → (default, "3")."""
    text = text.strip()
    if not text:
        raise ConfigError(
            "The model reference is empty; use @champion, a version number, NAME@alias or NAME/3."
        )
    if text.startswith("@") or text.isdigit() or (text[:1] in "vV" and text[1:].isdigit()):
        return default_name, text
    if "@" in text:
        name, alias = text.rsplit("@", 1)
        return name, f"@{alias}"
    if "/" in text:
        name, version = text.rsplit("/", 1)
        if not version.isdigit():
            raise ConfigError(f"Model reference {text!r}: the part after '/' must be a version number.")
        return name, version
    return default_name, f"@{text}"


def load_scorer(settings: Settings, ref: str) -> Scorer:
    """Load a registered version as a :class:`Scorer` with the project's serving policies."""
    from mloop.tracking import Registry

    name, version_ref = parse_model_ref(ref, settings.model.name)
    loaded = Registry(settings, name=name).load(version_ref)
    return Scorer.from_loaded(
        loaded,
        unseen_category=settings.serving.unseen_category,
        out_of_range=settings.serving.out_of_range,
    )


def _previous_version(output: Any) -> str | None:
    """The version an unfinished job in ``output`` was pinned to, if any."""
    if isinstance(output, FileOutput):
        marker = output.staging / JOB_FILE
        if marker.is_file():
            return str(json.loads(marker.read_text(encoding="utf-8")).get("model_version"))
    return None


def batch_predict(
    settings: Settings,
    input_uri: str,
    output_uri: str,
    *,
    model: str | None = None,
    engine: str | None = None,
    query: str | None = None,
    keep: Sequence[str] | None = None,
    workers: int | None = None,
    chunk_rows: int | None = None,
    restart: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
    spark_master: str | None = None,
) -> BatchReport:
    """Score ``input_uri`` into ``output_uri``; see :mod:`mloop.batch`."""
    cfg = settings.batch
    engine = engine or cfg.engine
    if engine not in ("local", "spark"):
        raise ConfigError(f"Unknown batch engine {engine!r}; expected 'local' or 'spark'.")
    ref = model or cfg.model
    chunk_rows = chunk_rows or cfg.chunk_rows
    source = open_input(input_uri, query=query)
    if engine == "spark":
        from mloop.batch.spark import run_spark

        scorer = load_scorer(settings, ref)
        return run_spark(
            scorer,
            source,
            output_uri,
            master=spark_master or cfg.spark_master,
            conf=cfg.spark_conf,
            keep=keep,
            overwrite=overwrite or restart,
        )
    output = open_output(output_uri, overwrite=overwrite)
    pinned = None if restart else _previous_version(output)
    if pinned is not None:
        name, _ = parse_model_ref(ref, settings.model.name)
        ref = f"{name}/{pinned}"
    scorer = load_scorer(settings, ref)
    job: dict[str, object] = {
        "input": source.describe(),
        "model_name": scorer.name,
        "model_version": scorer.version,
        "chunk_rows": chunk_rows,
        "keep": list(keep) if keep is not None else None,
    }
    n_workers = workers or cfg.workers or os.cpu_count() or 1
    sampler = PredictionSampler(
        settings.prediction_log_url,
        rate=cfg.log_sample,
        model_name=scorer.name,
        model_version=scorer.version,
        arm="batch",
        features=[s.name for s in scorer.specs],
        job=f"batch:{Path(str(output.location)).name}",
        max_rows=cfg.log_max_rows,
    )
    try:
        return run_local(
            scorer,
            source,
            output,
            job=job,
            chunk_rows=chunk_rows,
            workers=max(1, n_workers),
            keep=keep,
            restart=restart,
            sampler=sampler,
            progress=progress,
        )
    finally:
        sampler.close()
