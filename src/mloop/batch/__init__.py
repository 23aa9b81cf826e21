"""Batch scoring: score files, tables and queries with a registered model, resumably, locally or on Spark.

:func:`batch_predict` reads the input (CSV, Parquet or a SQL query) in chunks, validates every row
against the model's data contract and scores the valid ones with a :class:`Scorer` (the same rules as
the online server); rejected rows go to a side output with the reason per row, never dropped silently.
The ``local`` engine scores chunks in worker processes with bounded memory and resumes an interrupted
job from its last finished chunk without duplicating output; the ``spark`` engine runs the same
:class:`Scorer` through ``mapInPandas`` on any Spark master. A sample of predictions goes to the
prediction log (``arm: batch``). Stream scoring (:mod:`mloop.streaming`) reuses :class:`Scorer`.

    >>> report = batch_predict(settings, "data/new.parquet", "scores.parquet")   # doctest: +SKIP
    >>> report.rows_scored, report.rows_rejected                                  # doctest: +SKIP
"""

from mloop.batch.api import batch_predict, load_scorer, parse_model_ref
from mloop.batch.inputs import BatchInput, open_input
from mloop.batch.local import BatchReport, run_local
from mloop.batch.outputs import BatchOutput, FileOutput, SqlOutput, open_output
from mloop.batch.sampling import PredictionSampler, sample_mask
from mloop.batch.scorer import REASON, ROW, ScoredChunk, Scorer

__all__ = [
    "REASON",
    "ROW",
    "BatchInput",
    "BatchOutput",
    "BatchReport",
    "FileOutput",
    "PredictionSampler",
    "ScoredChunk",
    "Scorer",
    "SqlOutput",
    "batch_predict",
    "load_scorer",
    "open_input",
    "open_output",
    "parse_model_ref",
    "run_local",
    "sample_mask",
]
